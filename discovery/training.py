"""Training one archive row on every seed: in this process, or as a worker process.

:func:`train_seeds` calls the configured trainer (``inner_loop.runner.run_candidate`` by default)
once per seed, with ``DIR/candidates/<id>-<name>/seed-<k>/`` as its output folder (its prints
and progress bars go to ``train.log`` there), and stops at the first failed seed. It takes and returns JSON only, so the same spec runs in a worker:
``python -m discovery.training SPEC.json`` writes ``result.json`` next to it. A worker is started
with the campaign's environment minus the API-key variable, and dies with its parent (Linux
``PR_SET_PDEATHSIG``), so a ``kill -9`` of the campaign leaves no orphan training on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import traceback
from pathlib import Path

RESULT = "result.json"
SPEC = "job.json"


def spec_for(row: dict, folder: Path, config, beta: float) -> dict:
    return {"objective": row["code"] if row["kind"] == "candidate" else row["name"],
            "task": config.task, "beta": beta, "seeds": list(config.seeds),
            "timeout": config.train_timeout, "isolation": config.isolation,
            "overrides": dict(config.overrides), "trainer": config.trainer,
            "folder": str(folder)}


def train_seeds(spec: dict) -> list[dict]:
    """One trainer call per seed; each result as a dict with its ``seed``. Never raises."""
    from discovery.seams import resolve
    results = []
    try:
        trainer = resolve(spec["trainer"])
    except Exception as err:  # noqa: BLE001
        return [{"seed": spec["seeds"][0], "status": "failed",
                 "reason": f"trainer {spec['trainer']!r} not available: {err}"}]
    for seed in spec["seeds"]:
        out = Path(spec["folder"]) / f"seed-{seed}"
        out.mkdir(parents=True, exist_ok=True)
        # the trainer's own prints and bars go to the candidate's log, not over the campaign's bar
        with open(out / "train.log", "a") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            try:
                r = trainer(spec["objective"], task=spec["task"], beta=spec["beta"], seed=seed,
                            out_dir=str(out), isolation=spec["isolation"], timeout=spec["timeout"],
                            progress=False, **spec["overrides"])
                d = r.to_dict() if hasattr(r, "to_dict") else dict(r)
            except Exception as err:  # noqa: BLE001 - the trainer should not raise; record it if so
                traceback.print_exc()
                d = {"status": "failed", "reason": f"the trainer raised {type(err).__name__}: {err}"}
        results.append({"seed": seed, **d})
        if d.get("status") != "done":
            break
    return results


def summarise(results: list[dict]) -> dict:
    """What goes into the archive's ``metrics`` column: per-seed metrics and their means."""
    per_seed = []
    for r in results:
        losses = r.get("losses") or []
        per_seed.append({"seed": r.get("seed"), "status": r.get("status"), "reason": r.get("reason"),
                         "metrics": r.get("metrics") or {}, "steps": r.get("steps"),
                         "seconds": r.get("seconds"), "first_loss": losses[0] if losses else None,
                         "last_loss": losses[-1] if losses else None})
    done = [p["metrics"] for p in per_seed if p["status"] == "done"]
    keys = sorted({k for m in done for k, v in m.items() if isinstance(v, (int, float))})
    mean = {k: statistics.fmean(m[k] for m in done if isinstance(m.get(k), (int, float)))
            for k in keys}
    return {"per_seed": per_seed, "mean": mean}


def _die_with_parent() -> None:
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Job:
    """A worker process training one row; :meth:`poll` gives its results once it has ended."""

    def __init__(self, proc: subprocess.Popen, folder: Path):
        self.proc, self.folder = proc, folder

    @classmethod
    def start(cls, spec: dict, folder: Path, drop_env: str | None = None) -> "Job":
        (folder / SPEC).write_text(json.dumps(spec))
        env = {k: v for k, v in os.environ.items() if k not in (drop_env, "OPENAI_API_KEY")}
        log = open(folder / "worker.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "discovery.training", str(folder / SPEC)],
                                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        log.close()
        return cls(proc, folder)

    def poll(self) -> list[dict] | None:
        rc = self.proc.poll()
        if rc is None:
            return None
        result = self.folder / RESULT
        if rc == 0 and result.is_file():
            return json.loads(result.read_text())
        tail = (self.folder / "worker.log").read_text(errors="replace").strip().splitlines()[-1:]
        return [{"status": "failed", "reason": f"worker exited with code {rc}: {' '.join(tail)[:300]}"}]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path = Path(argv[0])
    results = train_seeds(json.loads(spec_path.read_text()))
    tmp = spec_path.with_name(RESULT + ".tmp")
    tmp.write_text(json.dumps(results, default=str))
    tmp.replace(spec_path.with_name(RESULT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
