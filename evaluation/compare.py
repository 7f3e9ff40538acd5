"""Train objectives on the same settings and compare them with paired bootstrap intervals.

A *setting* is (task, task overrides, beta, seed); every objective is trained once per setting
through :func:`inner_loop.runner.run_candidate` (or an injected runner with the same signature),
and each (objective, setting) gives one :class:`Run`. A run that failed, or that finished without
the metric, is a typed row with its reason: it is shown and counted, never averaged in, and the
pairs it would have formed are left out of every interval (the table says how many pairs remain).

:func:`summarise` turns runs into a :class:`Table`: per objective the mean metric with its standard
error over settings, and for each baseline the paired difference (objective - baseline) with a 95%
percentile bootstrap interval (:mod:`evaluation.stats`); the pairing used is named in every cell.
When several candidates are compared with the same baseline, the table also carries, per baseline,
intervals and decisions corrected for the number of those comparisons (Bonferroni intervals and
Holm-adjusted bootstrap p-values, :func:`evaluation.stats.correct`), beside the uncorrected ones.
The family of a baseline's column is the candidates compared with it: the rows that are not
baselines (``summarise(candidates=...)`` names them), or every row when all rows are baselines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from evaluation.stats import Corrected, Estimate, correct, hierarchical_bootstrap, mean_se, paired_bootstrap

BASELINES = ("dpo", "ipo", "lrml")
HIGHER_IS_BETTER = {"win_rate": True, "reward": True, "reward_gain": True, "kl": False,
                    "lc_win_rate": True, "win_rate_vs_sft": True, "lc_win_rate_vs_sft": True}  # the last three: recipe:tldr


@dataclasses.dataclass(frozen=True)
class Setting:
    """One training configuration shared by every objective compared on it."""

    seed: int
    task: str = "synthetic"
    beta: float | None = None           # None: the task's default beta
    overrides: tuple = ()               # sorted (key, value) pairs for the task / trainer

    @property
    def key(self) -> str:
        parts = [self.task + "".join(f",{k}={v}" for k, v in self.overrides)]
        parts.append("beta=default" if self.beta is None else f"beta={self.beta:g}")
        parts.append(f"seed={self.seed}")
        return "/".join(parts)

    @property
    def stratum(self) -> str:
        """The setting without its seed: units are resampled within a stratum."""
        return self.key.rsplit("/seed=", 1)[0]

    def to_dict(self) -> dict:
        return {"seed": self.seed, "task": self.task, "beta": self.beta,
                "overrides": dict(self.overrides), "key": self.key}

    @classmethod
    def from_dict(cls, d: dict) -> "Setting":
        return cls(seed=int(d["seed"]), task=d.get("task", "synthetic"), beta=d.get("beta"),
                   overrides=tuple(sorted((d.get("overrides") or {}).items())))


@dataclasses.dataclass
class Run:
    """One objective trained and evaluated on one setting."""

    objective: str
    setting: Setting
    status: str                 # "done" | "failed"
    reason: str | None = None
    metrics: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    def value(self, metric: str) -> float | None:
        """The run's metric, or None when it failed or the metric is missing or not finite."""
        if self.status != "done":
            return None
        v = self.metrics.get(metric)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None

    def to_dict(self) -> dict:
        return {"objective": self.objective, "setting": self.setting.to_dict(), "status": self.status,
                "reason": self.reason, "metrics": jsonable(self.metrics), "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict) -> "Run":
        return cls(objective=d["objective"], setting=Setting.from_dict(d["setting"]),
                   status=d["status"], reason=d.get("reason"), metrics=d.get("metrics") or {},
                   seconds=float(d.get("seconds") or 0.0))


def per_prompt(metrics: dict, metric: str) -> np.ndarray | None:
    """The per-prompt outcomes behind ``metrics[metric]``, if the runner reported them.

    The one place that knows how the runner names per-sample arrays; keep it in sync with
    inner_loop.metrics.
    """
    for container in (metrics.get("per_prompt"), metrics.get("per_sample"), metrics.get("samples")):
        if isinstance(container, dict) and isinstance(container.get(metric), (list, tuple, np.ndarray)):
            return np.asarray(container[metric], dtype=float)
    for key in (f"{metric}_per_prompt", f"{metric}_per_sample", f"{metric}s"):
        if isinstance(metrics.get(key), (list, tuple, np.ndarray)):
            return np.asarray(metrics[key], dtype=float)
    return None


def prompt_set(metrics: dict) -> str | None:
    """The name of the prompts behind the per-prompt outcomes (inner_loop.metrics.prompt_set), if given."""
    container = metrics.get("per_prompt")
    return container.get("prompt_set") if isinstance(container, dict) else None


# -- running ----------------------------------------------------------------------------------

Runner = Callable[..., object]


def default_runner() -> Runner:
    from inner_loop.runner import run_candidate  # heavy: torch, transformers, the task
    return run_candidate


RUN_LOG = "train.log"


class _LazyLog(io.TextIOBase):
    """A text sink that creates ``path`` (and its folders) on the first non-empty write only, so a
    run that prints nothing leaves nothing behind."""

    def __init__(self, path: Path):
        self.path, self.file = path, None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text and self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a")
        return self.file.write(text) if text else 0

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        super().close()  # flushes first
        if self.file is not None:
            self.file.close()


@contextlib.contextmanager
def run_output(out_dir: str | None):
    """Where one run's own prints go (the Trainer's log lines, library warnings, a traceback): the
    run's ``out_dir/train.log``, appended to (created on the first write), or nowhere when the run
    has no folder. The terminal keeps the table (stdout) and one line per run (stderr)."""
    sink = _LazyLog(Path(out_dir) / RUN_LOG) if out_dir is not None else open(os.devnull, "w")
    with sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def run_one(runner: Runner, label: str, spec: str, setting: Setting, *, out_dir: str | None = None,
            **runner_kwargs) -> Run:
    """Train ``spec`` (a registry name or source code) on ``setting``; never raises for the run's faults."""
    start = time.perf_counter()
    try:
        with run_output(out_dir):
            result = runner(spec, task=setting.task, beta=setting.beta, seed=setting.seed, out_dir=out_dir,
                            **runner_kwargs, **dict(setting.overrides))
    except Exception as err:  # noqa: BLE001 - a crash of one run is that run's typed failure
        return Run(label, setting, "failed", f"{type(err).__name__}: {err}"[:500],
                   seconds=time.perf_counter() - start)
    d = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    seconds = d.get("seconds")
    if isinstance(seconds, dict):  # TrainResult: {"train", "eval", "total"}
        seconds = seconds.get("total")
    return Run(label, setting, d.get("status", "failed"), d.get("reason"), dict(d.get("metrics") or {}),
               float(seconds or time.perf_counter() - start))


def run_folder(setting: Setting, limit: int = 120) -> str:
    """The folder name of a setting's runs: its key, or, when that is too long for a file name (a
    task variant with model and data paths), its start and a hash of the whole key."""
    import hashlib
    name = setting.key.replace("/", "_")
    if len(name) <= limit:
        return name
    return f"{name[:limit - 17]}-{hashlib.sha256(setting.key.encode()).hexdigest()[:16]}"


RUN_CANDIDATE = "inner_loop.runner:run_candidate"


def run_grid(objectives: dict[str, str], settings: Sequence[Setting], *, runner: Runner | None = None,
             out_dir: str | Path | None = None, log: Callable[[str], None] | None = None,
             executor=None, in_flight: int = 1, train: str = RUN_CANDIDATE, **runner_kwargs) -> list[Run]:
    """Every objective ({label: spec}) on every setting, setting by setting (seeds outermost).
    With ``executor`` (:func:`discovery.executors.make_executor`'s: local worker processes or Ray),
    each run is a job submitted to it, ``in_flight`` at once, the function named ``train`` doing the
    work (see :func:`run_grid_on`); otherwise ``runner`` runs them here, one after another."""
    if executor is not None:
        return run_grid_on(executor, objectives, settings, out_dir=out_dir, log=log, in_flight=in_flight,
                           train=train, **runner_kwargs)
    runner = runner or default_runner()
    runs = []
    strata = list(dict.fromkeys(s.stratum for s in settings))
    if log and len(strata) == 1:
        log(f"setting: {strata[0]}")
    for setting in settings:
        for label, spec in objectives.items():
            run_dir = None
            if out_dir is not None:
                run_dir = str(Path(out_dir) / "runs" / label / run_folder(setting))
            run = run_one(runner, label, spec, setting, out_dir=run_dir, **runner_kwargs)
            if log:
                shown = "failed: " + (run.reason or "?") if run.status != "done" else \
                    ", ".join(f"{k}={run.metrics[k]:.4g}" for k in ("reward", "kl", "win_rate")
                              if isinstance(run.metrics.get(k), (int, float)))
                where = setting.key if len(strata) > 1 else f"seed={setting.seed}"
                log(f"{label:>14} {where}: {shown} ({run.seconds:.0f}s)")
            runs.append(run)
    return runs


def run_grid_on(executor, objectives: dict[str, str], settings: Sequence[Setting], *, out_dir=None, log=None,
                in_flight: int = 1, train: str = RUN_CANDIDATE, isolation: str = "auto",
                timeout: float = 600.0) -> list[Run]:
    """:func:`run_grid` through an executor (the campaign's seam, :class:`objectives.launcher.Executor`):
    each (objective, setting) is one job of one seed, at most ``in_flight`` submitted at once; its
    output lands in ``<run folder>/seed-<k>/`` (the worker's layout); the runs come back in grid
    order. A job that fails or dies is that run's typed failure."""
    import tempfile
    jobs = [(setting, label, spec) for setting in settings for label, spec in objectives.items()]
    scratch = None if out_dir is not None else tempfile.mkdtemp(prefix="disco-grid-")
    root = Path(out_dir if out_dir is not None else scratch)
    results: dict[int, Run] = {}
    running: dict[int, tuple] = {}
    nxt = 0
    while len(results) < len(jobs):
        while nxt < len(jobs) and len(running) < max(1, in_flight):
            setting, label, spec = jobs[nxt]
            folder = root / "runs" / label / run_folder(setting)
            folder.mkdir(parents=True, exist_ok=True)
            job = {"objective": spec, "kind": None, "task": setting.task, "beta": setting.beta,
                   "seeds": [setting.seed], "timeout": timeout, "isolation": isolation,
                   "overrides": dict(setting.overrides), "train": train, "train_kwargs": {}, "folder": str(folder)}
            running[nxt] = (executor.submit(job), time.perf_counter())
            nxt += 1
        for i, (handle, start) in list(running.items()):
            out = executor.poll(handle)
            if out is None:
                continue
            del running[i]
            setting, label, _ = jobs[i]
            d = out[0] if out else {"status": "failed", "reason": "the job produced no result"}
            seconds = d.get("seconds")
            seconds = seconds.get("total") if isinstance(seconds, dict) else seconds
            results[i] = Run(label, setting, d.get("status", "failed"), d.get("reason"), dict(d.get("metrics") or {}),
                             float(seconds or time.perf_counter() - start))
            if log:
                r = results[i]
                log(f"{label:>14} {setting.key}: " + ("failed: " + (r.reason or "?") if r.status != "done" else
                                                     ", ".join(f"{k}={r.metrics[k]:.4g}" for k in ("reward", "kl", "win_rate")
                                                               if isinstance(r.metrics.get(k), (int, float)))))
        if running and len(results) < len(jobs):
            time.sleep(0.1)
    return [results[i] for i in range(len(jobs))]


def resolve_objectives(items: Sequence[str], *, baselines: Sequence[str] = BASELINES) -> dict[str, str]:
    """{label: spec} for registry names and .py files (:func:`objectives.resolve`); the baselines
    are added when missing.

    A built-in's label and spec are its name; a file's label is its stem (made unique with a
    suffix) and its spec its source code, which the runner screens and runs in its sandbox.
    """
    from objectives import resolve

    out: dict[str, str] = {}
    for item in list(items) + [b for b in baselines if b not in items]:
        candidate = resolve(Path(item) if Path(item).is_file() else item)
        label = Path(candidate.path).stem if candidate.path else candidate.name
        base, i = label, 2
        while label in out:
            label, i = f"{base}-{i}", i + 1
        out[label] = candidate.ref
    return out


# -- summarising ------------------------------------------------------------------------------

@dataclasses.dataclass
class Row:
    objective: str
    n_done: int
    n_failed: int
    mean: float
    se: float
    failures: list[dict]                          # {"setting", "reason"} per failed run
    vs: dict[str, Estimate | str]                 # baseline -> interval, or why there is none
    vs_null: Estimate | None = None               # metric - NULL_VALUE (win rate vs the SFT model)
    corrected: dict[str, Corrected] = dataclasses.field(default_factory=dict)  # baseline -> family-corrected

    def to_dict(self) -> dict:
        def cell(b, e):
            if not isinstance(e, Estimate):
                return {"missing": e}
            d = e.to_dict()
            if b in self.corrected:
                d["corrected"] = self.corrected[b].to_dict()
            return d
        return {"objective": self.objective, "n_done": self.n_done, "n_failed": self.n_failed,
                "mean": self.mean, "se": self.se, "se_what": SE_WHAT if self.n_done > 1 else None,
                "failures": self.failures, "vs_null": self.vs_null.to_dict() if self.vs_null else None,
                "vs": {b: cell(b, e) for b, e in self.vs.items()}}


SE_WHAT = ("standard error over the row's runs, one per seed/setting (sample sd / sqrt(runs)): training "
           "and evaluation noise together")


@dataclasses.dataclass
class Table:
    metric: str
    baselines: tuple[str, ...]
    rows: list[Row]
    settings: list[str]
    families: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # baseline -> corrected rows
    evaluation: dict = dataclasses.field(default_factory=dict)  # samples behind each run's metric

    def to_dict(self) -> dict:
        return {"metric": self.metric, "higher_is_better": HIGHER_IS_BETTER.get(self.metric),
                "baselines": list(self.baselines), "settings": self.settings,
                "evaluation": self.evaluation, "families": self.families,
                "rows": [r.to_dict() for r in self.rows]}


def difference(runs_a: Iterable[Run], runs_b: Iterable[Run], metric: str, *, n_boot: int = 10_000,
               seed: int = 0) -> Estimate | str:
    """Paired interval of a - b over the settings where both finished; a string says why there is none.

    Prompt pairing is used when every shared setting has per-prompt outcomes of equal length for
    both objectives (same prompts, same order: when both runs name their prompt set, the names must
    match too); otherwise the pairing is by setting.
    """
    a = {r.setting: r for r in runs_a if r.value(metric) is not None}
    b = {r.setting: r for r in runs_b if r.value(metric) is not None}
    shared = sorted(set(a) & set(b), key=lambda s: s.key)
    if not shared:
        return "no setting where both finished"
    strata = [s.stratum for s in shared]
    pa = [per_prompt(a[s].metrics, metric) for s in shared]
    pb = [per_prompt(b[s].metrics, metric) for s in shared]
    same = all(prompt_set(a[s].metrics) == prompt_set(b[s].metrics) for s in shared)
    if same and all(x is not None and y is not None and x.shape == y.shape and x.size for x, y in zip(pa, pb)):
        return hierarchical_bootstrap(pa, pb, strata=strata, n_boot=n_boot, seed=seed)
    return paired_bootstrap([a[s].value(metric) for s in shared], [b[s].value(metric) for s in shared],
                            strata=strata, n_boot=n_boot, seed=seed)


# Metrics with a natural "no better than the reference" value: a win rate against the SFT model's
# own completions is 0.5 for the SFT model itself.
NULL_VALUE = {"win_rate": 0.5, "reward_gain": 0.0,   # the SFT model's value (shared random numbers)
              "win_rate_vs_sft": 0.5}                 # recipe:tldr: judged against the SFT model's summaries


def against_null(runs: Iterable[Run], metric: str, *, n_boot: int = 10_000, seed: int = 0) -> Estimate | None:
    """Interval of metric - NULL_VALUE[metric] (e.g. win rate - 0.5: "does it beat the SFT model?")."""
    if metric not in NULL_VALUE:
        return None
    done = sorted((r for r in runs if r.value(metric) is not None), key=lambda r: r.setting.key)
    if not done:
        return None
    null = NULL_VALUE[metric]
    strata = [r.setting.stratum for r in done]
    pa = [per_prompt(r.metrics, metric) for r in done]
    if all(x is not None and x.size for x in pa):
        return hierarchical_bootstrap(pa, [np.full_like(x, null) for x in pa], strata=strata,
                                      n_boot=n_boot, seed=seed)
    return paired_bootstrap([r.value(metric) for r in done], [null] * len(done), strata=strata,
                            n_boot=n_boot, seed=seed)


def evaluation_size(runs: Iterable[Run]) -> dict:
    """How many evaluation samples stand behind each finished run's metric (from the runner's
    ``n_prompts`` / ``n_samples_per_prompt`` / ``n``); a key is left out when runs disagree or lack it."""
    out = {}
    done = [r for r in runs if r.status == "done"]
    for key in ("n_prompts", "n_samples_per_prompt", "n"):
        values = {r.metrics.get(key) for r in done}
        if len(values) == 1 and isinstance(next(iter(values)), int):
            out[key] = next(iter(values))
    return out


def describe_evaluation(ev: dict) -> str:
    """"each run scored on 128 prompts x 2 samples", or "" when unknown."""
    if "n_prompts" in ev and "n_samples_per_prompt" in ev:
        return f"each run scored on {ev['n_prompts']} prompts x {ev['n_samples_per_prompt']} samples"
    if "n" in ev:
        return f"each run scored on {ev['n']} samples"
    return ""


def summarise(runs: Sequence[Run], metric: str, *, baselines: Sequence[str] = BASELINES,
              n_boot: int = 10_000, seed: int = 0, candidates: Sequence[str] | None = None) -> Table:
    """Per objective its mean ± se and paired intervals to each baseline; ``candidates`` names the
    rows whose comparisons with a baseline form the family corrected for multiplicity (default: the
    rows that are not baselines, or every row when all are baselines)."""
    by_objective: dict[str, list[Run]] = {}
    for r in runs:
        by_objective.setdefault(r.objective, []).append(r)
    rows = []
    for name, mine in by_objective.items():
        values = [v for v in (r.value(metric) for r in mine) if v is not None]
        failures = [{"setting": r.setting.key,
                     "reason": r.reason if r.status != "done" else f"finished without a finite {metric!r}"}
                    for r in mine if r.value(metric) is None]
        mean, se = mean_se(values)
        vs: dict[str, Estimate | str] = {}
        for b in baselines:
            if b == name:
                continue
            vs[b] = (difference(mine, by_objective[b], metric, n_boot=n_boot, seed=seed)
                     if b in by_objective else "baseline not run")
        rows.append(Row(name, len(values), len(failures), mean, se, failures, vs,
                        against_null(mine, metric, n_boot=n_boot, seed=seed)))
    settings = sorted({r.setting.key for r in runs})
    if candidates is None:
        candidates = [r.objective for r in rows if r.objective not in baselines] or [r.objective for r in rows]
    families = {}
    for b in baselines:
        family = [r for r in rows if r.objective in candidates and isinstance(r.vs.get(b), Estimate)]
        if len(family) >= 2:
            families[b] = [r.objective for r in family]
            for r, c in zip(family, correct([r.vs[b] for r in family])):
                r.corrected[b] = c
    return Table(metric, tuple(baselines), rows, settings, families, evaluation_size(runs))


def format_table(table: Table, digits: int = 3) -> str:
    """A plain-text table: mean ± se per objective and its difference to every baseline."""
    null = NULL_VALUE.get(table.metric)
    head = ["objective", "runs", f"{table.metric} mean ± se over runs"]
    if null is not None:
        judged = table.settings and all(str(k).startswith("recipe:tldr") for k in table.settings)
        what = "a tie with the human summary" if judged and table.metric == "win_rate" else "SFT"
        head.append(f"- {null} ({what}) [95% CI]")
    head += [f"- {b} [95% CI]" for b in table.baselines]
    lines = []
    pairings = set()
    notes = set()
    for r in table.rows:
        runs = f"{r.n_done}" + (f" (+{r.n_failed} failed)" if r.n_failed else "")
        mean = "—" if not r.n_done else (f"{r.mean:.{digits}f}" + ("" if math.isnan(r.se) else f" ± {r.se:.{digits}f}"))
        cells = [r.objective, runs, mean]
        if null is not None:
            e = r.vs_null
            cells.append("—" if e is None else e.format(digits) + ("*" if e.excludes_zero else ""))
        for b in table.baselines:
            e = r.vs.get(b)
            if e is None:
                cells.append("·")
            elif isinstance(e, Estimate):
                cells.append(e.format(digits) + ("*" if e.excludes_zero else ""))
                pairings.add(f"{e.pairing} (n={e.n_units} seed/setting units"
                             + (f", {e.n_prompts} prompts)" if e.n_prompts else ")"))
                if e.note:
                    notes.add(e.note)
            else:
                cells.append(f"n/a ({e})")
        lines.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*c) for c in lines]
    direction = {True: "higher is better", False: "lower is better"}.get(HIGHER_IS_BETTER.get(table.metric), "")
    out.append("")
    evaluated = describe_evaluation(table.evaluation)
    out.append("± = " + SE_WHAT + " (a row with one run shows none)" + (f"; {evaluated}" if evaluated else ""))
    out.append(f"difference = objective - baseline on {table.metric}" + (f" ({direction})" if direction else "")
               + "; [95% CI] = 95% paired percentile bootstrap interval, resampling seeds/settings (then prompts "
               "within each, when paired by prompt), not corrected for multiple comparisons; * the interval excludes 0")
    if pairings:
        out.append("paired by " + "; ".join(sorted(pairings)))
    out.extend(f"note: {n}" for n in sorted(notes))
    if table.families:
        out.append("")
        out.extend(format_corrected(table, digits))
    for r in table.rows:
        for f in r.failures:
            out.append(f"failed: {r.objective} on {f['setting']}: {f['reason']}")
    return "\n".join(out)


def format_corrected(table: Table, digits: int = 3) -> list[str]:
    """The family-corrected block: per baseline column, the Bonferroni interval and Holm p of each
    candidate in its family."""
    baselines = [b for b in table.baselines if b in table.families]
    head = ["objective"] + [f"- {b} [95% CI, Bonferroni-corrected for {len(table.families[b])} comparisons] Holm p"
                            for b in baselines]
    lines = []
    for r in table.rows:
        if not any(b in r.corrected for b in baselines):
            continue
        lines.append([r.objective] + [r.corrected[b].format(digits) + ("*" if r.corrected[b].significant else "")
                                      if b in r.corrected else "·" for b in baselines])
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    families = "; ".join(f"{b}: {len(table.families[b])} ({', '.join(table.families[b])})" for b in baselines)
    return (["corrected for multiple comparisons (family = the candidates compared with one baseline; "
             f"comparisons per family: {families}):"]
            + [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*c) for c in lines]
            + ["95% CI, Bonferroni-corrected for m comparisons: each interval at level 1 - 0.05/m, all m hold "
               "jointly with >= 95% probability; Holm p = Holm step-down adjusted bootstrap p-value; * Holm calls "
               "the difference nonzero at family-wise 5% (the uncorrected intervals above are kept)"])


def jsonable(x):
    """``x`` with numpy/torch values as plain Python and NaN/inf as None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    elif hasattr(x, "tolist"):  # torch tensors, without importing torch here
        return jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None  # strict JSON has no NaN; a missing number reads as null
    return x
