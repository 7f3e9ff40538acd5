"""Training one archive row on every seed: in this process, or as a worker process.

:func:`train_seeds` calls the campaign's train seam (``inner_loop.runner.run_candidate`` unless a
test passes another; see :class:`discovery.seams.Seams`) once per seed, with the candidate's
measured kind and ``DIR/candidates/<id>-<name>/seed-<k>/`` as its output folder (its prints and
progress bars go to ``train.log`` there), and stops at the first failed seed. It takes and returns
JSON only, so the same spec runs in a worker: :class:`LocalExecutor` writes it to ``worker.json``
in the candidate's folder and starts ``python -m discovery.training worker.json``, which imports
the train function by its ``module:function`` name and writes ``worker-result.json`` next to it
(the runner's own ``job.json`` in each seed folder is a result of a different thing). The worker
is started through :func:`objectives.launcher.launch`: the campaign's environment minus the API-key
variables, its own process group, and death with its parent, so a ``kill -9`` of the campaign
leaves no orphan training on.

:class:`LocalExecutor` is the local backend of :class:`objectives.launcher.Executor`
(``submit / poll / cancel``); a cluster backend plugs into the campaign beside it.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import traceback
from pathlib import Path

from discovery import pilot

RESULT = "worker-result.json"
SPEC = "worker.json"
LOG = "worker.log"


def spec_for(candidate, folder: Path, config, beta: float, train: str, seeds=None,
             train_kwargs: dict | None = None) -> dict:
    """The JSON a worker needs: ``candidate`` (a :class:`~objectives.candidate.Candidate`) as its
    reference and measured kind, the training settings, ``seeds`` (default: ``training.seeds``),
    ``train``, the train function's ``module:function`` name, and ``train_kwargs``, keywords every
    call of it gets (the matched-KL budget and betas; see :class:`discovery.seams.Seams`)."""
    t = config.training
    return {"objective": candidate.ref, "kind": candidate.kind, "task": t.task, "beta": beta,
            "seeds": list(t.seeds if seeds is None else seeds), "timeout": t.timeout,
            "isolation": t.isolation, "overrides": dict(t.overrides), "train": train,
            "train_kwargs": dict(train_kwargs or {}), "folder": str(folder)}


def train_seeds(spec: dict, train=None) -> list[dict]:
    """One ``train`` call per seed (``train``: the function, else imported by ``spec["train"]``);
    each result as a dict with its ``seed``. Never raises."""
    results = []
    if train is None:
        from discovery.seams import import_name
        try:
            train = import_name(spec["train"])
        except Exception as err:  # noqa: BLE001
            return [{"seed": spec["seeds"][0], "status": "failed",
                     "reason": f"train function {spec['train']!r} not available: {err}"}]
    for seed in spec["seeds"]:
        out = Path(spec["folder"]) / f"seed-{seed}"
        out.mkdir(parents=True, exist_ok=True)
        # the trainer's own prints and bars go to the candidate's log, not over the campaign's bar
        with open(out / "train.log", "a") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            try:
                r = train(spec["objective"], task=spec["task"], beta=spec["beta"], seed=seed,
                          out_dir=str(out), isolation=spec["isolation"], timeout=spec["timeout"],
                          progress=False, kind=spec.get("kind"), **spec.get("train_kwargs", {}),
                          **spec["overrides"])
                d = r.to_dict() if hasattr(r, "to_dict") else dict(r)
            except Exception as err:  # noqa: BLE001 - the trainer should not raise; record it if so
                traceback.print_exc()
                d = {"status": "failed", "reason": f"the trainer raised {type(err).__name__}: {err}"}
        results.append({"seed": seed, **d})
        if d.get("status") != "done":
            break
    return results


def summarise(results: list[dict], prior: list[dict] = ()) -> dict:
    """What goes into the archive's ``metrics`` column: per-seed metrics and their means;
    ``prior``: per-seed entries of seeds that finished in an earlier stage (successive halving),
    kept first."""
    per_seed = [dict(p) for p in prior]
    for r in results:
        losses = r.get("losses") or []
        per_seed.append({"seed": r.get("seed"), "status": r.get("status"), "reason": r.get("reason"),
                         "metrics": r.get("metrics") or {}, "steps": r.get("steps"),
                         "seconds": r.get("seconds"), "first_loss": losses[0] if losses else None,
                         "last_loss": losses[-1] if losses else None,
                         "margins": pilot.compact_margins(r.get("margins"))})
    done = [p["metrics"] for p in per_seed if p["status"] == "done"]
    keys = sorted({k for m in done for k, v in m.items() if isinstance(v, (int, float))})
    mean = {k: statistics.fmean(m[k] for m in done if isinstance(m.get(k), (int, float)))
            for k in keys}
    return {"per_seed": per_seed, "mean": mean}


class LocalExecutor:
    """Runs each training spec as a local worker process (:mod:`objectives.launcher`); the
    handle is the started process and its folder. ``drop_env``: variables the workers must not
    see (the proposer's and the judge's API-key variables; ``OPENAI_API_KEY`` always)."""

    def __init__(self, drop_env=()):
        self.drop_env = tuple(dict.fromkeys([*drop_env, "OPENAI_API_KEY"]))

    @classmethod
    def for_config(cls, config) -> "LocalExecutor":
        return cls(drop_env=(config.proposer.api_key_env, config.fitness.judge.api_key_env))

    def submit(self, spec: dict):
        from objectives.launcher import environment, launch, python
        folder = Path(spec["folder"])
        (folder / SPEC).write_text(json.dumps(spec))
        with open(folder / LOG, "wb") as log:
            launched = launch(python("discovery.training", folder / SPEC),
                              env=environment(inherit=True, drop=self.drop_env),
                              stdout=log, stderr=log, die_with_parent=True)
        return launched, folder

    def poll(self, handle) -> list[dict] | None:
        launched, folder = handle
        rc = launched.poll()
        if rc is None:
            return None
        result = folder / RESULT
        if rc == 0 and result.is_file():
            return json.loads(result.read_text())
        tail = (folder / LOG).read_text(errors="replace").strip().splitlines()[-1:]
        return [{"status": "failed", "reason": f"worker exited with code {rc}: {' '.join(tail)[:300]}"}]

    def cancel(self, handle) -> None:
        launched, _ = handle
        launched.cancel()


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
