"""Fast, deterministic stand-ins for the sandbox validator, the fingerprinter and the trainer.

:func:`seams` gives them as a :class:`discovery.seams.Seams`; tests/discovery/conftest.py makes that
the default of every test here (``Seams.default``) unless a test is marked ``real_seams``, and
``python -m fake_disco`` is ``disco`` with them, for the subprocess tests (tests/discovery is on
the path, so a worker process imports ``campaign_fakes:train`` too). They run the test's own
candidate code in-process: fine for fixtures written by the tests, never for real candidates.

Environment knobs (read when called, so subprocesses see them too):
``DISCO_FAKE_MARKERS``: a file that gets a "start <dir>" line when a training run starts and an
"end <dir>" line when it ends; ``DISCO_FAKE_TRAIN_SLEEP``: seconds each training run takes;
``DISCO_FAKE_WINS``: JSON ``{objective name: {seed: win rate}}`` that replaces the computed win rate
(so a test controls the per-seed metrics and checks intervals by hand); ``DISCO_FAKE_PER_PROMPT``:
JSON ``{objective name: {seed: [per-prompt win rates]}}`` (name ``"*"``: every other objective, in both) for ``metrics["per_prompt"]["win_rate"]``
(default: 8 per-prompt values around the win rate, their spread depending on the objective).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path

import torch

import objectives

GRID = torch.linspace(-20.0, 20.0, 41, dtype=torch.float64)


def _load(x):
    if isinstance(x, objectives.Candidate):
        return x.load()
    return objectives.load(x) if not isinstance(x, objectives.Objective) else x


@dataclasses.dataclass
class Report:
    valid: bool
    reason: str | None = None
    checks: dict = dataclasses.field(default_factory=dict)
    warnings: list = dataclasses.field(default_factory=list)

    def to_dict(self):
        return dataclasses.asdict(self)


def _raised(err: Exception) -> str:
    """As objectives.checks words a check that raised: type, message, line in the candidate."""
    line, tb = None, err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<candidate>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"raised {type(err).__name__}: {err}" + (f" (at line {line} of the loss)" if line else "")


def validate(source: str, beta: float = 0.1, timeout: float = 20.0) -> Report:
    """Reasons worded as objectives.validate words them (``<check>: <message>``)."""
    try:
        obj = _load(source)
    except objectives.ObjectiveError as err:
        return Report(False, f"screen: {err}", {"loads": False})
    except Exception as err:  # noqa: BLE001
        return Report(False, f"load: {_raised(err)}", {"loads": False})
    try:
        values = obj.of_rho(GRID.clone(), beta)
    except Exception as err:  # noqa: BLE001
        return Report(False, f"output: {_raised(err)}", {"loads": True})
    if values.shape != GRID.shape:
        return Report(False, f"output: returned shape {list(values.shape)} for a batch of {len(GRID)}: "
                      f"expected one loss per pair, shape [{len(GRID)}]")
    bad = ~torch.isfinite(values)
    if bad.any():
        z = GRID[bad] * beta
        return Report(False, f"finite: non-finite loss ({'nan' if values[bad].isnan().any() else 'inf'}) "
                      f"for {int(bad.sum())} of {len(GRID)} margins, beta*rho from {float(z.min()):g} to "
                      f"{float(z.max()):g} (float32)", {"finite": False})
    return Report(True, None, {"loads": True, "finite": True})


@dataclasses.dataclass
class Fingerprint:
    values: list

    @property
    def key(self) -> str:
        return hashlib.sha1(json.dumps([round(v, 4) for v in self.values]).encode()).hexdigest()[:16]

    def to_dict(self):
        return {"values": self.values}

    @classmethod
    def from_dict(cls, d):
        return cls(list(d["values"]))

    def same_function(self, other) -> bool:
        return all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for a, b in zip(self.values, other.values))


def fingerprint(x) -> Fingerprint:
    with torch.no_grad():
        return Fingerprint([float(v) for v in _load(x).of_rho(GRID.clone(), 0.1)])


def find_duplicate(fp, existing, up_to="function"):
    return next((i for i, other in existing if fp.same_function(other)), None)


def _mark(line: str) -> None:
    path = os.environ.get("DISCO_FAKE_MARKERS")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def train(objective, task="synthetic", beta=None, seed=0, out_dir=None, isolation="auto",
          timeout=600.0, progress=False, kind=None, **overrides) -> dict:
    """A fake training run: the 'win rate' rewards a steep loss at rho = 0, plus seed noise."""
    _mark(f"start {out_dir}")
    time.sleep(float(os.environ.get("DISCO_FAKE_TRAIN_SLEEP", "0")))
    obj = _load(objective)
    if "FAIL_TRAINING" in (obj.source or ""):
        _mark(f"end {out_dir}")
        return {"status": "failed", "reason": "non-finite loss (nan) at step 3", "steps": 3}
    rho = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    try:
        obj.of_rho(rho, beta or 0.1).sum().backward()
    except Exception as err:  # noqa: BLE001 - as the runner reports an exception in the sandboxed job
        _mark(f"end {out_dir}")
        return {"status": "failed", "reason": f"sandbox error: {type(err).__name__}: {err}", "steps": 0}
    slope = -float(rho.grad[0])
    win = 0.5 + 0.3 * math.tanh(20 * slope) + 0.01 * ((seed * 7919) % 5 - 2)
    scripted = json.loads(os.environ.get("DISCO_FAKE_WINS") or "{}")
    wins = scripted.get(obj.name) or scripted.get("*") or {}
    win = float(wins.get(str(seed), win))
    prompts = json.loads(os.environ.get("DISCO_FAKE_PER_PROMPT") or "{}")
    per_prompt = (prompts.get(obj.name) or prompts.get("*") or {}).get(str(seed))
    if per_prompt is None:
        h = int(abs(slope) * 1000) % 7
        per_prompt = [win + 0.02 * ((k * 3 + h * k * k + seed) % 5 - 2) for k in range(8)]
    result = {"status": "done", "metrics": {"win_rate": win, "win_rate_se": 0.01, "kl": 0.1 + slope,
                                            "per_prompt": {"win_rate": per_prompt}},
              "losses": [0.7, 0.6], "steps": 2, "seconds": {"total": 0.01}, "config": {"seed": seed}}
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "result.json").write_text(json.dumps(result))
    _mark(f"end {out_dir}")
    return result


def fake_config(**changes):
    """A small, fast CampaignConfig for these fakes; ``changes`` by setting name, flat (``seeds``,
    ``workers``, ``base_url``: mapped to their sections quietly) or dotted (``training.seeds``)."""
    from discovery.config import CampaignConfig, merge, nested_settings
    settings = {"candidates": 4, "training": {"beta": 0.1, "seeds": [0, 1], "screen_seeds": 0},
                "execution": {"inspect": False},
                "fitness": {"metric": "win_rate"},  # what the fake trainer reports
                "proposer": {"retry_base_delay": 0.01, "retry_max_delay": 0.05},
                "prompt": {"lessons_every": 0}}  # no lessons requests unless a test asks for them
    return CampaignConfig.from_dict(merge(settings, nested_settings(changes, warn=False)))


def seams(config=None):
    """These fakes as the campaign's seams (looked up when called, so a test's monkeypatch of
    ``campaign_fakes.train`` counts); fitness as the config names it (mean_metric by default)."""
    from discovery.seams import Seams, fitness_function
    return Seams(validate=validate, fingerprint=fingerprint, fingerprint_from_dict=Fingerprint.from_dict,
                 find_duplicate=find_duplicate, inspect=None, train=train,
                 fitness=fitness_function(config.fitness.function if config else "mean_metric"))


def install(monkeypatch=None) -> None:
    """Make :func:`seams` what ``Seams.default(config)`` builds (through ``monkeypatch`` in a test)."""
    from discovery.seams import Seams
    fake = classmethod(lambda cls, config: seams(config))
    if monkeypatch is not None:
        monkeypatch.setattr(Seams, "default", fake)
    else:
        Seams.default = fake


def lowest_kl(results, config):
    """A custom fitness for the seam test: the lower the mean KL, the fitter."""
    return -sum(r["metrics"]["kl"] for r in results) / len(results), None


def kill_when(proc, ready, what: str, timeout: float = 90.0):
    """SIGKILL ``proc`` as soon as ``ready()`` returns something true (and return that); fail with
    ``what`` when ``proc`` exits first or ``timeout`` passes."""
    import signal
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = ready()
        if found:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return found
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.02)
    raise AssertionError(what)
