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

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "excludes_zero": self.excludes_zero}

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
    idx = np.empty((n_boot, n_units), dtype=np.int64)
    by_stratum: dict = {}
    for j, s in enumerate(strata):
        by_stratum.setdefault(s, []).append(j)
    for members in by_stratum.values():
        members = np.asarray(members)
        idx[:, members] = members[rng.integers(0, members.size, size=(n_boot, members.size))]

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
                    pairing=pairing, level=level, n_boot=n_boot, se_kind=se_kind, note=note)
