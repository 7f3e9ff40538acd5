"""Paired bootstrap intervals for "how much better is objective A than objective B?".

Two objectives are trained on the same settings (task, beta, seed), so their outcomes are paired:
the same seed gives both the same data order and initial policy. A difference is therefore
computed per unit and resampled per unit (the paired bootstrap), which removes the seed-to-seed
variance that both objectives share.

Two pairings, and every :class:`Estimate` says which one it used:

* ``"setting"``: one number per (seed, setting) unit for each objective; resample units.
* ``"prompt-within-setting"``: per-prompt outcomes (the same evaluation prompts in the same order for
  both objectives) inside every unit; a two-level bootstrap resamples units, then prompts within
  each drawn unit (Davison & Hinkley 1997, sec. 3.8, "randomness at both stages"). With one unit
  it is the ordinary bootstrap over prompts.

Units may carry a stratum (e.g. the held-out setting); units are then resampled within their
stratum, so every bootstrap replicate keeps the design's mix of settings.

The statistic is the mean over units of the per-unit mean difference (each seed weighs the same,
whatever its number of prompts). Intervals are percentile intervals, and with few units they are
too narrow: simulated on normal differences, a nominal 95% interval covered the true mean 76% of
the time with 3 units, 86% with 5, 89% with 10 and 93% with 20. Below ``FEW_UNITS`` units,
:attr:`Estimate.note` says so; the cure is more seeds, not a different interval.

Multiple comparisons. When several candidates are each compared with the same baseline, some
interval excludes 0 by chance more often than 5% of the time. :func:`correct` adjusts a family of
estimates (one baseline's column) two ways, from the same bootstrap replicates:

* decisions by Holm's step-down procedure (Holm 1979) on bootstrap p-values: sort the m p-values,
  multiply the i-th smallest by (m - i + 1), make the sequence non-decreasing and cap it at 1; a
  difference is called nonzero when its Holm-adjusted p is below 0.05. This controls the chance of
  any false call in the family at 5%, and is never less powerful than Bonferroni;
* intervals by Bonferroni: each percentile interval at level 1 - 0.05/m, which hold jointly with
  probability >= 95%. Holm has no simple matching intervals, so the two can disagree in one
  direction only: a Bonferroni interval that excludes 0 is always a Holm call (up to bootstrap
  resolution), while Holm may call a difference whose Bonferroni interval touches 0.

The bootstrap p-value of "difference = 0" is two-sided, from the replicates' position of zero:
p = min(1, 2 * min(#{rep <= 0} + 1, #{rep >= 0} + 1) / (B + 1)), so that a level-(1 - a) percentile
interval excludes 0 roughly when p < a, and p is never 0 from a finite bootstrap.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Hashable, Sequence

import numpy as np

FEW_UNITS = 10  # below this many paired units an interval is flagged: percentile intervals run narrow
PAIRINGS = ("setting", "prompt-within-setting")


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A mean difference with its standard error and bootstrap interval."""

    mean: float
    se: float               # standard error of the mean (see ``se_kind``)
    lo: float               # lower end of the percentile interval
    hi: float               # upper end
    n_units: int            # paired (seed, setting) units
    n_prompts: int | None   # paired prompts over all units (prompt pairing only)
    pairing: str            # one of PAIRINGS
    level: float = 0.95
    n_boot: int = 10_000
    se_kind: str = "analytic"  # "analytic": sd/sqrt(n) over units; "bootstrap": sd of replicates
    note: str = ""
    p_value: float | None = None  # two-sided bootstrap p of "difference = 0" (module docstring)
    replicates: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    @property
    def what(self) -> str:
        """What the interval is, in words: level, method and what was resampled."""
        if self.pairing == "setting":
            over = f"over {self.n_units} paired seed/setting units"
        else:
            over = f"over {self.n_units} paired seed/setting units, then {self.n_prompts} paired prompts within them"
        return f"{self.level:.0%} paired percentile bootstrap CI {over} ({self.n_boot} replicates)"

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "replicates"}
        return {**d, "excludes_zero": self.excludes_zero, "what": self.what}

    def format(self, digits: int = 3) -> str:
        f = f"{{:+.{digits}f}}"
        return f"{f.format(self.mean)} [{f.format(self.lo)}, {f.format(self.hi)}]"


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample sd / sqrt(n)); the se is nan for fewer than two values."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, strata: Sequence[Hashable] | None = None,
                     n_boot: int = 10_000, level: float = 0.95, seed: int = 0) -> Estimate:
    """Interval for mean(a - b), ``a[i]`` and ``b[i]`` being the same unit's outcomes."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired arrays must be 1-D and the same length, got {a.shape} and {b.shape}")
    return _bootstrap([np.array([d]) for d in a - b], strata=strata, n_boot=n_boot, level=level,
                      seed=seed, pairing="setting")


def hierarchical_bootstrap(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], *,
                           strata: Sequence[Hashable] | None = None, n_boot: int = 10_000,
                           level: float = 0.95, seed: int = 0) -> Estimate:
    """Interval for the mean over units of mean(a[u] - b[u]), paired by prompt within each unit.

    ``a[u]`` and ``b[u]`` are unit u's per-prompt outcomes, prompt i being the same prompt in both.
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} units against {len(b)}")
    groups = []
    for u, (x, y) in enumerate(zip(a, b)):
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        if x.shape != y.shape or x.ndim != 1 or x.size == 0:
            raise ValueError(f"unit {u}: per-prompt arrays differ in shape ({x.shape} vs {y.shape}) or are empty")
        groups.append(x - y)
    return _bootstrap(groups, strata=strata, n_boot=n_boot, level=level, seed=seed,
                      pairing="prompt-within-setting")


def resample_units(strata: Sequence[Hashable], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` bootstrap draws of unit indices, shape (n_boot, units): column j draws, with
    replacement, among the units of unit j's stratum."""
    idx = np.empty((n_boot, len(strata)), dtype=np.int64)
    by_stratum: dict = {}
    for j, s in enumerate(strata):
        by_stratum.setdefault(s, []).append(j)
    for members in by_stratum.values():
        members = np.asarray(members)
        idx[:, members] = members[rng.integers(0, members.size, size=(n_boot, members.size))]
    return idx


def _bootstrap(groups: list[np.ndarray], *, strata, n_boot: int, level: float, seed: int,
               pairing: str) -> Estimate:
    n_units = len(groups)
    if n_units == 0:
        raise ValueError("no paired units")
    if any(not np.all(np.isfinite(g)) for g in groups):
        raise ValueError("non-finite outcome: failed runs must be left out before pairing, not averaged in")
    if strata is None:
        strata = [0] * n_units
    if len(strata) != n_units:
        raise ValueError(f"{len(strata)} strata for {n_units} units")
    rng = np.random.default_rng(seed)
    unit_means = np.array([g.mean() for g in groups])

    # level 1: units, resampled within their stratum (column j draws from unit j's stratum)
    idx = resample_units(strata, n_boot, rng)

    # level 2: prompts within every drawn unit, an independent resample per draw
    if pairing == "setting":
        replicate_units = unit_means[idx]
    else:
        replicate_units = np.empty((n_boot, n_units))
        for j in range(n_units):
            for u, g in enumerate(groups):
                rows = np.flatnonzero(idx[:, j] == u)
                if rows.size:
                    draws = rng.integers(0, g.size, size=(rows.size, g.size))
                    replicate_units[rows, j] = g[draws].mean(axis=1)
    replicates = replicate_units.mean(axis=1)

    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(replicates, [alpha, 1.0 - alpha])
    mean = float(unit_means.mean())
    if pairing == "setting":
        se, se_kind = mean_se(unit_means)[1], "analytic"
    else:
        se, se_kind = float(replicates.std(ddof=1)), "bootstrap"
    note = ""
    if n_units < FEW_UNITS:
        note = (f"only {n_units} paired unit{'s' if n_units != 1 else ''}: "
                + ("percentile bootstrap intervals run too narrow at this size; add seeds" if pairing == "setting"
                   else "seed-to-seed variation is barely sampled"))
    return Estimate(mean=mean, se=se, lo=float(lo), hi=float(hi), n_units=n_units,
                    n_prompts=int(sum(g.size for g in groups)) if pairing != "setting" else None,
                    pairing=pairing, level=level, n_boot=n_boot, se_kind=se_kind, note=note,
                    p_value=bootstrap_p(replicates), replicates=replicates)


def bootstrap_p(replicates: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the difference is 0" (module docstring)."""
    r = np.asarray(replicates, dtype=float)
    below, above = int(np.sum(r <= 0)), int(np.sum(r >= 0))
    return float(min(1.0, 2.0 * (min(below, above) + 1) / (r.size + 1)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input's order: the i-th smallest p times (m - i + 1), made
    non-decreasing along the sorted order, capped at 1. Reject where the adjusted p < alpha."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        adjusted[j] = running
    return adjusted.tolist()


@dataclasses.dataclass(frozen=True)
class Corrected:
    """One estimate of a family of ``m`` comparisons, corrected for the family."""

    lo: float               # Bonferroni interval: percentile interval at level 1 - (1 - level) / m
    hi: float
    p_holm: float           # Holm-adjusted bootstrap p-value
    m: int                  # comparisons in the family
    level: float = 0.95     # the family-wise level the correction keeps

    @property
    def significant(self) -> bool:
        """Holm's decision at the family-wise level."""
        return self.p_holm < 1.0 - self.level

    @property
    def what(self) -> str:
        return (f"{self.level:.0%} CI, Bonferroni-corrected for {self.m} comparisons (each at "
                f"{1 - (1 - self.level) / self.m:.2%}); decision by Holm-adjusted bootstrap p < {1 - self.level:.2g}")

    def to_dict(self) -> dict:
        return {"lo": self.lo, "hi": self.hi, "p_holm": self.p_holm, "m": self.m, "level": self.level,
                "significant": self.significant, "what": self.what}

    def format(self, digits: int = 3) -> str:
        f = f"{{:+.{digits}f}}"
        return f"[{f.format(self.lo)}, {f.format(self.hi)}] p={self.p_holm:.3g}"


def correct(estimates: Sequence[Estimate], level: float = 0.95) -> list[Corrected]:
    """Bonferroni intervals and Holm-adjusted p-values for a family of estimates (module docstring).

    Each estimate must carry its bootstrap replicates (those made by this module do)."""
    m = len(estimates)
    if m == 0:
        return []
    if any(e.replicates is None for e in estimates):
        raise ValueError("an estimate without its bootstrap replicates cannot be corrected")
    alpha = (1.0 - level) / m / 2.0
    adjusted = holm([bootstrap_p(e.replicates) for e in estimates])
    out = []
    for e, p in zip(estimates, adjusted):
        lo, hi = np.quantile(e.replicates, [alpha, 1.0 - alpha])
        out.append(Corrected(lo=float(lo), hi=float(hi), p_holm=float(p), m=m, level=level))
    return out


# -- rank correlation: does a ranking transfer? ---------------------------------------------------
#
# Two rankings of the same objectives (the search fitness, from the archive, and the mean held-out
# metric) are compared by Spearman's rho (Pearson's correlation of the ranks, tied values given their
# average rank) and Kendall's tau-b ((concordant - discordant pairs) / sqrt((pairs untied in x) *
# (pairs untied in y)), which stays in [-1, 1] with ties). Both are undefined (nan) when either
# ranking is constant.
#
# The interval resamples the held-out *seeds* (units), not the objectives: the question is "would
# another draw of held-out seeds give the same ranking?", while the objectives are the fixed set being
# ranked (resampling 4 to 8 objectives would mostly duplicate them into ties). Every objective is
# given the same drawn seeds (the paired design: a seed is one data order and initial policy for
# all), within its stratum (held-out setting) when several are pooled; the search fitness is held
# fixed (its own noise is the campaign's, measured by its standard errors, not resampled here).
# Replicates where the correlation is undefined (a constant ranking, an objective with no finished
# run among the drawn seeds) are left out and counted.

RANK_METHODS = {"spearman": "Spearman rho", "kendall": "Kendall tau"}


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n along the last axis, tied values sharing their average rank (nan stays nan)."""
    from scipy.stats import rankdata
    return rankdata(np.asarray(x, dtype=float), axis=-1)


def spearman(x, y) -> float | np.ndarray:
    """Spearman's rho of ``x`` and ``y`` (ties: average ranks); ``y`` may be 2-D (one row per
    replicate), giving one rho per row. nan when a ranking is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rx = average_ranks(x)
    ry = average_ranks(y)
    rx = rx - rx.mean()
    ry = ry - ry.mean(axis=-1, keepdims=True)
    den = np.sqrt((rx ** 2).sum() * (ry ** 2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, (ry * rx).sum(axis=-1) / np.where(den > 0, den, 1.0), np.nan)
    return float(rho) if np.ndim(rho) == 0 else rho


def kendall(x, y) -> float | np.ndarray:
    """Kendall's tau-b of ``x`` and ``y`` (ties handled as tau-b does); ``y`` may be 2-D (one row
    per replicate). nan when a ranking is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(x.size, k=1)
    sx = np.sign(x[j] - x[i])
    sy = np.sign(y[..., j] - y[..., i])
    s = (sx * sy).sum(axis=-1)
    den = np.sqrt(np.count_nonzero(sx) * np.count_nonzero(sy, axis=-1).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(den > 0, s / np.where(den > 0, den, 1.0), np.nan)
    return float(tau) if np.ndim(tau) == 0 else tau


@dataclasses.dataclass(frozen=True)
class RankCorrelation:
    """A rank correlation between two rankings of the same objectives, with a bootstrap interval."""

    method: str             # "spearman" | "kendall"
    estimate: float         # nan when undefined (a constant ranking)
    lo: float               # percentile interval over the valid replicates (nan when none)
    hi: float
    n_objectives: int
    n_units: int            # held-out seeds (units) resampled
    n_boot: int
    n_valid: int            # replicates where the correlation was defined
    level: float = 0.95
    note: str = ""

    @property
    def label(self) -> str:
        return RANK_METHODS[self.method]

    @property
    def what(self) -> str:
        return (f"{self.label} between the search fitness and the held-out mean over {self.n_objectives} objectives; "
                f"{self.level:.0%} percentile bootstrap CI resampling the {self.n_units} held-out seeds (the same "
                f"draw for every objective, within each setting), search fitness held fixed; "
                f"{self.n_valid} of {self.n_boot} replicates defined")

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**d, "label": self.label, "what": self.what, "text": self.format()}

    def format(self, digits: int = 2) -> str:
        def f(v):
            return "n/a" if v is None or not math.isfinite(v) else f"{v:+.{digits}f}"
        return (f"{self.label} over {self.n_objectives} objectives: {f(self.estimate)} "
                f"[{self.level:.0%} bootstrap CI over seeds: {f(self.lo)}, {f(self.hi)}]")


def rank_correlations(search: Sequence[float], heldout: Sequence[Sequence[float]], *,
                      strata: Sequence[Hashable] | None = None, n_boot: int = 10_000, level: float = 0.95,
                      seed: int = 0) -> dict[str, RankCorrelation]:
    """Spearman and Kendall between ``search[i]`` (objective i's search fitness) and objective i's
    mean held-out outcome, ``heldout[i][u]`` being its outcome on held-out unit (seed) u, nan where
    that run failed; units are resampled (within ``strata``) as the comment above this function says."""
    x = np.asarray(search, dtype=float)
    y = np.asarray(heldout, dtype=float)
    if y.ndim != 2 or y.shape[0] != x.size:
        raise ValueError(f"heldout must be (objectives, units) = ({x.size}, n), got {y.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("every objective needs a finite search fitness")
    n_obj, n_units = y.shape
    if strata is None:
        strata = [0] * n_units
    rng = np.random.default_rng(seed)
    idx = resample_units(strata, n_boot, rng)
    done = np.isfinite(y)
    filled = np.where(done, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = filled.sum(axis=1) / done.sum(axis=1)                           # mean over finished units
        reps = filled[:, idx].sum(axis=2) / done[:, idx].sum(axis=2)          # (objectives, n_boot)
    reps = reps.T
    ok = np.all(np.isfinite(reps), axis=1)
    alpha = (1.0 - level) / 2.0
    out = {}
    for method, fn in (("spearman", spearman), ("kendall", kendall)):
        estimate = fn(x, point) if np.all(np.isfinite(point)) else math.nan
        r = fn(x, reps[ok]) if ok.any() else np.array([])
        r = np.asarray(r)[np.isfinite(r)] if np.size(r) else np.array([])
        lo, hi = (np.quantile(r, [alpha, 1.0 - alpha]) if r.size else (math.nan, math.nan))
        notes = []
        if n_obj < 3:
            notes.append(f"only {n_obj} objectives: a rank correlation of 2 is +1 or -1")
        if n_units < FEW_UNITS:
            notes.append(f"only {n_units} held-out seed/setting unit{'s' if n_units != 1 else ''}: percentile intervals run "
                         "narrow at this size; add seeds")
        if r.size < n_boot:
            notes.append(f"{n_boot - r.size} replicate(s) undefined (a constant ranking or no finished run) and left out")
        out[method] = RankCorrelation(method=method, estimate=float(estimate), lo=float(lo), hi=float(hi),
                                      n_objectives=n_obj, n_units=n_units, n_boot=n_boot, n_valid=int(r.size),
                                      level=level, note="; ".join(notes))
    return out
