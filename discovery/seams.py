"""The campaign's seams to the rest of the project: validator, fingerprinter, inspector, fitness.

Each is named in :class:`~discovery.config.CampaignConfig` as ``module:function`` (the
fingerprinter as a module) and resolved here once, so tests swap in fakes through the config (or
by building :class:`Seams` directly) and the loop never imports them itself. Optional pieces that
are not installed are skipped with the reason recorded on the candidate, never silently:

* no ``objectives.validate``: a static screen only (nothing runs; the training job's isolation is
  then the only runtime check, and its failures are recorded as such);
* no fingerprinter: no duplicate detection;
* no inspector: no plots or symbolic summary.

The trainer is resolved where training happens (:mod:`discovery.training`), possibly in a worker.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import statistics
from typing import Callable

from objectives.registry import Registry

log = logging.getLogger("discovery")


def resolve(path: str):
    """``"package.module:attr"`` -> the attribute (``"package.module"`` -> the module)."""
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


def _as_dict(x) -> dict:
    if x is None:
        return {}
    if hasattr(x, "to_dict"):
        return x.to_dict()
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    return dict(x)


# -- fitness ------------------------------------------------------------------------------------

def mean_metric(results: list[dict], config) -> tuple[float, float | None]:
    """Mean over seeds of ``config.metric``; its standard error across seeds, or with one seed the
    run's own ``<metric>_se`` when the task reports one."""
    values = [float(r["metrics"][config.metric]) for r in results]
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{config.metric} is missing or not finite: {values}")
    if len(values) > 1:
        return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))
    se = results[0]["metrics"].get(f"{config.metric}_se")
    return values[0], (float(se) if se is not None else None)


FITNESS: Registry[Callable] = Registry("fitness function")
FITNESS.register("mean_metric", mean_metric)
JUDGE_FITNESS = "evaluation.fitness"  # registers "mt_bench" and "alpaca_eval" when imported


def fitness_function(name: str, config=None) -> Callable:
    """A name in FITNESS (importing :mod:`evaluation.fitness` for one not registered yet) or
    ``"module:function"``. With ``config``, a function's ``check_config(config)`` runs first, so a
    judge that is not configured stops the campaign before anything trains."""
    if ":" in name:
        fn = resolve(name)
    else:
        if name not in FITNESS:
            importlib.import_module(JUDGE_FITNESS)
        fn = FITNESS.get(name)
    check = getattr(fn, "check_config", None)
    if config is not None and check is not None:
        check(config)
    return fn


# -- the seams ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Seams:
    validate: Callable | None = None        # (source, beta=, timeout=) -> report with .valid, .reason
    fingerprint: Callable | None = None     # (objective or source) -> Fingerprint
    fingerprint_from_dict: Callable | None = None
    find_duplicate: Callable | None = None  # (fp, [(id, Fingerprint)], up_to=) -> id | None
    inspect: Callable | None = None         # (objective or source, out_dir, beta=) -> summary
    fitness_fn: Callable = mean_metric      # (results, config) -> (fitness, se)
    missing: dict = dataclasses.field(default_factory=dict)  # seam -> why it is not there

    @classmethod
    def from_config(cls, config) -> "Seams":
        seams, missing = {}, {}

        def get(label, path):
            try:
                return resolve(path)
            except (ImportError, AttributeError) as err:
                missing[label] = f"{path} is not available ({type(err).__name__}: {err})"
                log.warning("%s: %s", label, missing[label])
                return None

        seams["validate"] = get("validator", config.validator)
        fp = get("fingerprinter", config.fingerprinter)
        if fp is not None:
            seams.update(fingerprint=fp.fingerprint, fingerprint_from_dict=fp.Fingerprint.from_dict,
                         find_duplicate=fp.find_duplicate)
        seams["inspect"] = get("inspector", config.inspector) if config.inspect else None
        seams["fitness_fn"] = fitness_function(config.fitness, config)
        return cls(**seams, missing=missing)

    def check(self, source: str, beta: float, timeout: float) -> dict:
        """The validation report as a dict with at least ``valid`` and ``reason``."""
        if self.validate is None:
            from objectives.base import ObjectiveError
            from objectives.loader import detect_form
            from objectives.screen import screen
            note = self.missing.get("validator", "no validator")
            try:
                detect_form(screen(source).params)
            except ObjectiveError as err:
                return {"valid": False, "reason": str(err), "layers": ["screen"], "note": note}
            return {"valid": True, "reason": None, "layers": ["screen"], "note": note}
        try:
            report = self.validate(source, beta=beta, timeout=timeout)
        except Exception as err:  # noqa: BLE001 - recorded as the candidate's reason
            return {"valid": False, "reason": f"the validator crashed: {type(err).__name__}: {err}"}
        d = _as_dict(report)
        d.setdefault("valid", bool(getattr(report, "valid", False)))
        d.setdefault("reason", getattr(report, "reason", None))
        return d

    def fingerprint_of(self, x) -> tuple[object | None, str | None]:
        """(Fingerprint, None) or (None, why not); ``x`` is source or a registry name."""
        if self.fingerprint is None:
            return None, self.missing.get("fingerprinter", "no fingerprinter")
        try:
            if "def " not in x:  # a baseline's registry name: a trusted objective
                import objectives
                x = objectives.load(x)
            return self.fingerprint(x), None
        except Exception as err:  # noqa: BLE001 - no fingerprint means no dedup, not a failure
            return None, f"{type(err).__name__}: {err}"

    def duplicate_of(self, fp, existing: list[tuple[int, dict]], up_to: str = "function") -> tuple[int | None, str]:
        """(id of the earlier row ``fp`` duplicates, or None; how: "same function"/"same training")."""
        if self.find_duplicate is None or not existing:
            return None, ""
        others = [(i, self.fingerprint_from_dict(d)) for i, d in existing]
        dup = self.find_duplicate(fp, others, up_to=up_to)
        if dup is None:
            return None, ""
        relation = getattr(fp, "relation", None)
        return dup, relation(dict(others)[dup]) if relation else "same function"


    def inspect_into(self, x, out_dir, beta: float) -> dict:
        if self.inspect is None:
            return {"skipped": self.missing.get("inspector", "inspection is turned off")}
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            result = self.inspect(x, str(out_dir), beta=beta)
        except Exception as err:  # noqa: BLE001 - plots are a convenience, never a failure
            return {"error": f"{type(err).__name__}: {err}"}
        try:
            d = _as_dict(result)
        except (TypeError, ValueError):
            d = {"result": str(result)}
        d.setdefault("files", sorted(str(p.relative_to(out_dir.parent)) for p in out_dir.rglob("*")
                                     if p.is_file()))
        return d

    def fitness(self, results: list[dict], config) -> tuple[float, float | None]:
        value, se = self.fitness_fn(results, config)
        return float(value), (None if se is None else float(se))
