"""A loss's functional fingerprint: what it computes, not how it is written, so duplicates are found.

Two candidates are the same function when they give the same losses and the same gradients on the
same inputs. The fingerprint records, for each beta in ``betas``:

* ``margin_f`` / ``margin_df``: f and df/drho on a fixed grid of margins, given in z = beta * rho
  (:data:`GRID_Z`) and fed as rho = z / beta through :meth:`Objective.of_rho` (one batch);
* ``batch_f`` / ``batch_grad``: the per-pair losses and the gradients of their sum with respect to
  all four log-prob tensors on one fixed batch (:func:`probe_batch`), which is what tells apart
  losses that are not functions of rho alone (``logratio``) or that couple the pairs (``batch``).

Design choices:

* beta is a parameter of the comparison, not averaged away: ``same_function`` compares the betas
  two fingerprints share (and refuses if they share none). LRML gated on sigmoid(rho) and LRML
  gated on sigmoid(beta*rho/0.05) are the same function at beta = 0.05 and different elsewhere;
  fingerprint at ``betas=(0.05,)`` to ask the first question, at several betas for the second.
  The default (0.05, 0.5) spans the betas DiscoPOP and TRL use.
* Values *and* gradients: a loss with ``detach()`` in it has the same values but other gradients,
  and is a different function.
* Two relations, not one. ``same_function``: equal values and gradients. ``same_training``: the
  gradients agree up to one positive factor per beta, so ``f + c`` and ``k * f`` (k > 0) count:
  the trainer only sees gradients, and Adam divides a constant factor out of its updates (up to
  its epsilon and gradient clipping). A campaign skips both by default (``dedupe="training"``),
  because an offline search that perturbs constants otherwise spends its budget retraining
  ``75 * f`` after ``100 * f`` to the same fitness.
* ``key`` is a coarse hash of the *normalised* gradients (3 significant digits) for an indexed SQL
  lookup, equal within a ``same_training`` class (hence also for the same function); candidates
  with the same key are then compared exactly. A float difference that straddles a rounding
  boundary can split a true duplicate across two keys; this is rare, and :func:`find_duplicate`
  compares exactly and does not rely on keys.

**The margins that matter** (``grid_z=``). The fixed grid reaches z = -6, where no short training
run goes: ``softplus(-clamp(z, min=-2.5))`` differs from DPO there, so the fixed grid calls it a new
function, yet trained on the synthetic task it reproduces DPO's run to the last float, because
DPO's training never visits z < -2.5. :func:`visited_grid` builds a grid from the margins a run's
loss actually saw (``TrainResult.margins``, recorded by :mod:`inner_loop.trainer`; typically DPO's
baseline runs, all seeds pooled): the union of their pooled quantiles and an even fill between the
lowest and the highest, as z = beta * rho at the training beta. ``fingerprint(..., betas=(beta,),
grid_z=grid)`` then measures the margin part on that grid and the batch part on the fixed batch
with its margins moved onto the grid (:func:`probe_batch` with ``rho=``: only the chosen policy
log-probs shift, so what is not rho, the log-ratios themselves, still varies as before). Two losses
that agree on the visited range then compare equal, however they differ outside it. Such a
fingerprint records its grid (``grid_z``) and its key says so; fingerprints on different grids
never compare (``same_function`` raises, :func:`find_duplicate` skips them), and the default (no
``grid_z``) is the fixed grid, unchanged, with the same keys as before.

Computing a fingerprint runs the loss (:func:`measure`), through :func:`objectives.isolation.run`:
a built-in in this process, source in the sandbox with its measured kind passed on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Iterable

import numpy as np
import torch

from objectives.analysis import SANDBOX_TIMEOUT, decode, encode
from objectives.base import Objective, ObjectiveError
from objectives.candidate import resolve
from objectives.isolation import run

VERSION = 2
GRID_Z = (-6.0, -3.0, -1.5, -0.7, -0.3, -0.1, 0.0, 0.05, 0.2, 0.45, 1.1, 2.5, 5.0)
DEFAULT_BETAS = (0.05, 0.5)
BATCH_SIZE = 8
BATCH_SEED = 20240612
FIELDS = ("margin_f", "margin_df", "batch_f", "batch_grad")
MAX_GRID = 64  # margins in a visited grid (visited_grid thins a longer union evenly)


def probe_batch(rho: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Four fixed [8] tensors of summed log-probs (about -40) whose margins have spread ~4; with
    ``rho`` ([8] margins), the same batch with the chosen policy log-probs shifted so that
    (pc - rc) - (pr - rr) equals ``rho``."""
    g = torch.Generator().manual_seed(BATCH_SEED)
    base = -40.0 + 5.0 * torch.randn(BATCH_SIZE, generator=g, dtype=torch.float64)
    pc, pr, rc, rr = [base + 2.0 * torch.randn(BATCH_SIZE, generator=g, dtype=torch.float64) for _ in range(4)]
    if rho is not None:
        pc = pc + (rho.to(torch.float64) - ((pc - rc) - (pr - rr)))
    return [pc, pr, rc, rr]


def _batch_margins(grid_z: tuple[float, ...], beta: float) -> torch.Tensor:
    """:data:`BATCH_SIZE` margins rho = z / beta at evenly spaced positions of ``grid_z`` (sorted)."""
    idx = np.linspace(0, len(grid_z) - 1, BATCH_SIZE).round().astype(int)
    return torch.tensor([grid_z[i] for i in idx], dtype=torch.float64) / beta


def _measure_beta(obj: Objective, beta: float, grid_z: tuple[float, ...] | None = None) -> dict:
    grid = GRID_Z if grid_z is None else grid_z
    rho = (torch.tensor(grid, dtype=torch.float64) / beta).requires_grad_()
    batch = probe_batch() if grid_z is None else probe_batch(_batch_margins(grid_z, beta))
    inputs = [t.clone().requires_grad_() for t in batch]
    margin_f, batch_f = obj.of_rho(rho, beta), obj(*inputs, beta)
    for out, n in ((margin_f, len(grid)), (batch_f, BATCH_SIZE)):
        if not isinstance(out, torch.Tensor) or out.shape != (n,):
            raise ObjectiveError(f"expected per-pair losses of shape ({n},), got "
                                 f"{getattr(out, 'shape', type(out).__name__)}")

    def grads(out, wrt):
        if not out.requires_grad:
            return [torch.zeros_like(w) for w in wrt]
        got = torch.autograd.grad(out.sum(), wrt, allow_unused=True)
        return [torch.zeros_like(w) if g is None else g for g, w in zip(got, wrt)]

    (margin_df,) = grads(margin_f, [rho])
    batch_grad = grads(batch_f, inputs)
    return {"margin_f": encode(margin_f.detach().tolist()), "margin_df": encode(margin_df.tolist()),
            "batch_f": encode(batch_f.detach().tolist()),
            "batch_grad": encode(torch.cat(batch_grad).tolist())}


def check_grid(grid_z) -> tuple[float, ...] | None:
    """``grid_z`` as a sorted tuple of distinct finite floats (None stays None: the fixed grid)."""
    if grid_z is None:
        return None
    grid = tuple(sorted({float(z) for z in grid_z}))
    if not 2 <= len(grid) <= MAX_GRID or not all(math.isfinite(z) for z in grid):
        raise ValueError(f"a fingerprint grid needs 2 to {MAX_GRID} finite margins, got {len(grid)}")
    return grid


def measure(obj: Objective, betas: Iterable[float] = DEFAULT_BETAS, grid_z=None) -> dict:
    """The fingerprint of ``obj`` as a plain dict; ``grid_z``: margins (z = beta * rho) to measure on
    instead of :data:`GRID_Z` (see :func:`visited_grid`). Runs ``obj``: call it through
    :func:`objectives.isolation.run` (target ``"objectives.fingerprint:measure"``)."""
    betas = [float(b) for b in betas]
    grid = check_grid(grid_z)
    out = {"version": VERSION, "betas": betas,
           "per_beta": {repr(b): _measure_beta(obj, b, grid) for b in betas}}
    if grid is not None:
        out["grid_z"] = list(grid)
    return out


def visited_grid(margins: Iterable[dict | None], beta: float, fill: int = 9) -> tuple[float, ...]:
    """A fingerprint grid (z = ``beta`` * rho) over the margins training visited.

    ``margins``: margin records (``TrainResult.margins``, or the ``margins`` of a row's per-seed
    entries: anything with ``pooled``, quantiles of the rho a run's loss saw), typically DPO's on
    every seed; ``beta``: the beta those runs trained at (the grid means those margins only at that
    beta: fingerprint with ``betas=(beta,)``). The grid is every pooled quantile of every record and
    ``fill`` evenly spaced margins from the lowest to the highest, each rounded to 6 significant
    digits (so the same records give the same grid), duplicates dropped. Raises ValueError when no
    record has quantiles."""
    values = []
    for record in margins:
        pooled = (record or {}).get("pooled") if isinstance(record, dict) else None
        if pooled:
            values += [float(beta) * float(v) for v in pooled if math.isfinite(float(v))]
    if not values:
        raise ValueError("no recorded margins to build a grid from (no run recorded its margins)")
    lo, hi = min(values), max(values)
    values += np.linspace(lo, hi, max(int(fill), 2)).tolist()
    grid = sorted({float(f"{v:.6g}") + 0.0 for v in values})
    if len(grid) < 2:  # every margin the same (one step of a policy equal to its reference)
        grid = [grid[0] - 1e-3, grid[0] + 1e-3]
    if len(grid) > MAX_GRID:
        grid = [grid[i] for i in np.linspace(0, len(grid) - 1, MAX_GRID).round().astype(int)]
    return tuple(grid)


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """Values and gradients of a loss on fixed inputs, at each of ``betas``; ``grid_z``: the margin
    grid when it is not the fixed :data:`GRID_Z` (see :func:`visited_grid`)."""

    betas: tuple[float, ...]
    per_beta: dict  # repr(beta) -> {field: list of floats (non-finite as strings)}
    version: int = VERSION
    grid_z: tuple[float, ...] | None = None

    def to_dict(self) -> dict:
        out = {"version": self.version, "betas": list(self.betas), "per_beta": self.per_beta}
        if self.grid_z is not None:
            out["grid_z"] = list(self.grid_z)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Fingerprint":
        grid = d.get("grid_z")
        return cls(betas=tuple(float(b) for b in d["betas"]), per_beta=d["per_beta"],
                   version=int(d.get("version", VERSION)),
                   grid_z=None if grid is None else tuple(float(z) for z in grid))

    def vector(self, beta: float) -> np.ndarray:
        entry = self.per_beta[repr(float(beta))]
        return np.concatenate([decode(entry[field]) for field in FIELDS])

    def gradient(self, beta: float) -> np.ndarray:
        entry = self.per_beta[repr(float(beta))]
        return np.concatenate([decode(entry["margin_df"]), decode(entry["batch_grad"])])

    @property
    def key(self) -> str:
        """A coarse hash for indexed lookup: equal within a ``same_training`` class (up to rounding luck)."""
        parts = []
        for b in self.betas:
            parts += [_coarse(v) for v in _normalised(self.gradient(b))]
        digest = hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]
        betas = ','.join(repr(b) for b in self.betas)
        if self.grid_z is None:
            return f"fp{self.version}:{betas}:{digest}"
        return f"fp{self.version}:{betas}:grid-{grid_digest(self.grid_z)}:{digest}"

    def same_function(self, other: "Fingerprint", rtol: float = 1e-6, atol: float = 1e-9) -> bool:
        """True when values and gradients agree at every beta the two fingerprints share."""
        return all(_close(self.vector(b), other.vector(b), rtol, atol) for b in self._shared(other))

    def same_training(self, other: "Fingerprint", rtol: float = 1e-6, atol: float = 1e-9) -> bool:
        """True when, at every shared beta, the gradients agree up to one positive factor."""
        for b in self._shared(other):
            mine, theirs = self.gradient(b), other.gradient(b)
            if not (np.isfinite(mine).all() and np.isfinite(theirs).all()):
                if not _close(mine, theirs, rtol, atol):
                    return False
                continue
            norm = float(np.dot(theirs, theirs))
            factor = float(np.dot(mine, theirs)) / norm if norm > 0 else 1.0
            if factor <= 0 or not _close(mine, factor * theirs, rtol, atol * max(1.0, factor)):
                return False
        return True

    def relation(self, other: "Fingerprint") -> str | None:
        """"same function", "same training" (gradients up to a positive factor) or None."""
        if self.same_function(other):
            return "same function"
        return "same training" if self.same_training(other) else None

    def _shared(self, other: "Fingerprint") -> list[float]:
        if self.version != other.version:
            raise ValueError(f"fingerprint versions differ ({self.version} vs {other.version})")
        if self.grid_z != other.grid_z:
            raise ValueError("fingerprint grids differ (one on the fixed grid or on other visited margins)")
        shared = [b for b in self.betas if b in other.betas]
        if not shared:
            raise ValueError(f"no beta in common ({self.betas} vs {other.betas})")
        return shared


def grid_digest(grid_z) -> str:
    """8 hex digits naming a grid (as :meth:`Fingerprint.key` writes it)."""
    return hashlib.sha1(",".join(repr(float(z)) for z in grid_z).encode()).hexdigest()[:8]


def _normalised(g: np.ndarray) -> np.ndarray:
    finite = g[np.isfinite(g)]
    norm = float(np.linalg.norm(finite)) if finite.size else 0.0
    return g / norm if norm > 0 else g


def _coarse(v: float) -> str:
    if not math.isfinite(v):
        return repr(v)
    return "0" if abs(v) < 1e-6 else f"{v:.2e}"


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> bool:
    if a.shape != b.shape:
        return False
    finite_a, finite_b = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(finite_a, finite_b):
        return False
    # non-finite entries must match exactly (inf with inf of the same sign, nan with nan)
    if not all(x == y or (x != x and y != y) for x, y in zip(a[~finite_a], b[~finite_b])):
        return False
    return bool(np.allclose(a[finite_a], b[finite_b], rtol=rtol, atol=atol))


def fingerprint(obj_or_source, betas: Iterable[float] = DEFAULT_BETAS, grid_z=None) -> Fingerprint:
    """The fingerprint of anything :func:`objectives.candidate.resolve` takes (a Candidate, a
    registry name, an Objective, source or a .py path): a built-in is measured in this process,
    anything else in the sandbox, with the candidate's kind passed on (no re-probe). ``grid_z``:
    margins to measure on instead of the fixed grid (:func:`visited_grid`)."""
    candidate = resolve(obj_or_source)
    grid = check_grid(grid_z)
    return Fingerprint.from_dict(run(candidate, "objectives.fingerprint:measure", [float(b) for b in betas],
                                     None if grid is None else list(grid), timeout=SANDBOX_TIMEOUT))


def find_duplicate(fp: Fingerprint, existing: Iterable, rtol: float = 1e-6,
                   atol: float = 1e-9, up_to: str = "function"):
    """The id of the first (id, Fingerprint-or-dict) in ``existing`` that duplicates ``fp``.

    ``up_to="function"``: computes the same function; ``up_to="training"``: also a loss whose
    gradients agree up to a positive factor (``f + c``, ``k * f``). Entries sharing no beta with
    ``fp`` (or of another version, or measured on another grid) are skipped; None when none match.
    """
    if up_to not in ("function", "training"):
        raise ValueError(f"up_to must be 'function' or 'training', not {up_to!r}")
    for ident, other in existing:
        if isinstance(other, dict):
            other = Fingerprint.from_dict(other)
        if other.version != fp.version or other.grid_z != fp.grid_z or not set(fp.betas) & set(other.betas):
            continue
        if fp.same_function(other, rtol=rtol, atol=atol) or (
                up_to == "training" and fp.same_training(other, rtol=rtol, atol=atol)):
            return ident
    return None
