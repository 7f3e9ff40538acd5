"""The campaign's seams to the rest of the project, as objects: :class:`Seams`.

A campaign calls six functions it does not own: the sandbox validator, the fingerprinter (with its
duplicate finder), the inspector, the trainer and the fitness function. :meth:`Seams.default`
builds them by plain imports of the project's own modules::

    validate        objectives.validate:validate
    fingerprint     objectives.fingerprint:fingerprint (find_duplicate, Fingerprint.from_dict)
    inspect         objectives.inspection:inspect_objective   (None: config.execution.inspect off)
    train           inner_loop.runner:run_candidate, or with fitness.kl_budget set
                    discovery.seams:train_at_matched_kl (inner_loop.matched_kl.run_matched_kl, its
                    betas and budget in ``train_kwargs``, which travel in the worker's JSON spec)
    fitness         fitness_function(config.fitness.function)

and a test passes its own :class:`Seams` instead. Nothing is looked up by a dotted string from the
config, and there is no fallback for a module that is missing: they all ship with the project.
:meth:`Seams.describe` names each seam as ``module:function``; the campaign records that in the
archive (``meta.seams``), so a reader knows which code ran.

The one place :mod:`discovery` reaches :mod:`evaluation` is :func:`fitness_function`: a fitness
other than ``mean_metric`` is a judge of ``evaluation.fitness.JUDGES``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Callable


def _as_dict(x) -> dict:
    if x is None:
        return {}
    if hasattr(x, "to_dict"):
        return x.to_dict()
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    return dict(x)


def importable_name(fn) -> str:
    """``"module:qualname"`` of ``fn``, as a worker process imports it (see :func:`import_name`)."""
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__name__)}"


def import_name(name: str):
    """The function named ``"module:qualname"`` (by :func:`importable_name`)."""
    import importlib
    module, _, qualname = name.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def check_importable(fn, what: str) -> str:
    """``fn``'s importable name, or a ValueError saying that a worker process could not import it."""
    name = importable_name(fn)
    try:
        found = import_name(name)
    except Exception as err:  # noqa: BLE001 - any failure means a worker could not find it
        raise ValueError(f"the {what} function {name} cannot be imported by a worker process "
                         f"({type(err).__name__}: {err}); with workers > 1 it must be a module-level "
                         "function") from None
    if found is not fn and getattr(found, "__wrapped__", None) is not fn:
        raise ValueError(f"the {what} function {name} is not what a worker process imports under that "
                         "name; with workers > 1 it must be a module-level function")
    return name


# -- fitness ------------------------------------------------------------------------------------

def mean_metric(results: list[dict], config) -> tuple[float, float | None]:
    """Mean over seeds of ``config.fitness.metric``; its standard error across seeds, or with one
    seed the run's own ``<metric>_se`` when the task reports one."""
    metric = config.fitness.metric
    values = [float(r["metrics"][metric]) for r in results]
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{metric} is missing or not finite: {values}")
    if len(values) > 1:
        return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))
    se = results[0]["metrics"].get(f"{metric}_se")
    return values[0], (float(se) if se is not None else None)


def fitness_function(name: str) -> Callable:
    """``mean_metric`` (built in), or the judge of that name in ``evaluation.fitness.JUDGES``
    (``mt_bench``, ``alpaca_eval``): the one seam from :mod:`discovery` to :mod:`evaluation`. An
    unknown name raises :class:`~objectives.registry.UnknownNameError` with a "did you mean"."""
    if name == "mean_metric":
        return mean_metric
    from evaluation.fitness import JUDGES
    if name not in JUDGES:
        import difflib

        from objectives.registry import UnknownNameError
        close = difflib.get_close_matches(name, ["mean_metric", *JUDGES], n=1)
        raise UnknownNameError(f"unknown fitness function {name!r}"
                               + (f"; did you mean {close[0]!r}?" if close else ""))
    return JUDGES[name] if isinstance(JUDGES, dict) else JUDGES.get(name)


# -- matched-KL training ------------------------------------------------------------------------

def train_at_matched_kl(objective, *, kl_budget: float, betas, **kwargs):
    """The train seam of a matched-KL fitness: :func:`inner_loop.matched_kl.run_matched_kl` with the
    campaign's ``fitness.kl_budget`` and ``fitness.kl_betas`` (given as :attr:`Seams.train_kwargs`,
    so a worker process gets them from its JSON spec; a module-level function, so it imports by
    name). The campaign's ``beta`` is passed on and ignored there: the sweep's betas replace it."""
    from inner_loop.matched_kl import run_matched_kl
    return run_matched_kl(objective, kl_budget=float(kl_budget), betas=tuple(float(b) for b in betas),
                          **kwargs)


# -- the seams ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Seams:
    """The functions a campaign calls; a None seam is a step not taken (no dedupe, no plots)."""

    validate: Callable | None = None        # (source, beta=, timeout=) -> report with .valid, .reason, .kind
    fingerprint: Callable | None = None     # (Candidate) -> Fingerprint
    fingerprint_from_dict: Callable | None = None
    find_duplicate: Callable | None = None  # (fp, [(id, Fingerprint)], up_to=) -> id | None
    inspect: Callable | None = None         # (Candidate, out_dir, beta=) -> summary
    fitness: Callable = mean_metric         # (results, config) -> (fitness, se)
    train: Callable | None = None           # run_candidate's signature, kind= included
    train_kwargs: dict = dataclasses.field(default_factory=dict)  # JSON-able keywords every train call gets

    @classmethod
    def default(cls, config) -> "Seams":
        """The project's own functions (see the module docstring)."""
        from inner_loop.runner import run_candidate
        from objectives import fingerprint, inspection, validate
        train, train_kwargs = run_candidate, {}
        if config.fitness.kl_budget is not None:
            train = train_at_matched_kl
            train_kwargs = {"kl_budget": config.fitness.kl_budget, "betas": list(config.fitness.kl_betas)}
        return cls(validate=validate.validate, fingerprint=fingerprint.fingerprint,
                   fingerprint_from_dict=fingerprint.Fingerprint.from_dict,
                   find_duplicate=fingerprint.find_duplicate,
                   inspect=inspection.inspect_objective if config.execution.inspect else None,
                   fitness=fitness_function(config.fitness.function), train=train,
                   train_kwargs=train_kwargs)

    def describe(self) -> dict:
        """Each seam as ``module:function`` (None: not taken), as the archive records it; the train
        seam's fixed keywords as ``train_kwargs`` when there are any."""
        out = {f.name: None if getattr(self, f.name) is None else importable_name(getattr(self, f.name))
               for f in dataclasses.fields(self) if f.name != "train_kwargs"}
        if self.train_kwargs:
            out["train_kwargs"] = dict(self.train_kwargs)
        return out

    def check_config(self, config) -> None:
        """Before anything trains: the fitness function's own ``check_config(config)`` (a judge that
        is not configured stops the campaign here), and a trainer to train with."""
        if self.validate is None or self.train is None:
            missing = [n for n in ("validate", "train") if getattr(self, n) is None]
            raise ValueError(f"a campaign needs the {' and '.join(missing)} seam(s)")
        check = getattr(self.fitness, "check_config", None)
        if check is not None:
            check(config)

    def check(self, source: str, beta: float, timeout: float) -> dict:
        """The validation report as a dict with at least ``valid`` and ``reason`` (and ``kind``, the
        measured kind, when the validator reports one)."""
        try:
            report = self.validate(source, beta=beta, timeout=timeout)
        except Exception as err:  # noqa: BLE001 - recorded as the candidate's reason
            return {"valid": False, "reason": f"the validator crashed: {type(err).__name__}: {err}"}
        d = _as_dict(report)
        d.setdefault("valid", bool(getattr(report, "valid", False)))
        d.setdefault("reason", getattr(report, "reason", None))
        if getattr(report, "kind", None) is not None:
            d.setdefault("kind", report.kind)
        return d

    def fingerprint_of(self, candidate) -> tuple[object | None, str | None]:
        """(Fingerprint, None) or (None, why not) of a :class:`~objectives.candidate.Candidate`."""
        if self.fingerprint is None:
            return None, "no fingerprinter"
        try:
            return self.fingerprint(candidate), None
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

    def inspect_into(self, candidate, out_dir, beta: float) -> dict:
        if self.inspect is None:
            return {"skipped": "inspection is turned off"}
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            result = self.inspect(candidate, str(out_dir), beta=beta)
        except Exception as err:  # noqa: BLE001 - plots are a convenience, never a failure
            return {"error": f"{type(err).__name__}: {err}"}
        try:
            d = _as_dict(result)
        except (TypeError, ValueError):
            d = {"result": str(result)}
        d.setdefault("files", sorted(str(p.relative_to(out_dir.parent)) for p in out_dir.rglob("*")
                                     if p.is_file()))
        return d

    def score(self, results: list[dict], config) -> tuple[float, float | None]:
        """The fitness of a row's per-seed results, as floats."""
        value, se = self.fitness(results, config)
        return float(value), (None if se is None else float(se))
