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


def probe_batch() -> list[torch.Tensor]:
    """Four fixed [8] tensors of summed log-probs (about -40) whose margins have spread ~4."""
    g = torch.Generator().manual_seed(BATCH_SEED)
    base = -40.0 + 5.0 * torch.randn(BATCH_SIZE, generator=g, dtype=torch.float64)
    return [base + 2.0 * torch.randn(BATCH_SIZE, generator=g, dtype=torch.float64) for _ in range(4)]


def _measure_beta(obj: Objective, beta: float) -> dict:
    rho = (torch.tensor(GRID_Z, dtype=torch.float64) / beta).requires_grad_()
    inputs = [t.clone().requires_grad_() for t in probe_batch()]
    margin_f, batch_f = obj.of_rho(rho, beta), obj(*inputs, beta)
    for out, n in ((margin_f, len(GRID_Z)), (batch_f, BATCH_SIZE)):
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


def measure(obj: Objective, betas: Iterable[float] = DEFAULT_BETAS) -> dict:
    """The fingerprint of ``obj`` as a plain dict. Runs ``obj``: call it through
    :func:`objectives.isolation.run` (target ``"objectives.fingerprint:measure"``)."""
    betas = [float(b) for b in betas]
    return {"version": VERSION, "betas": betas,
            "per_beta": {repr(b): _measure_beta(obj, b) for b in betas}}


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """Values and gradients of a loss on fixed inputs, at each of ``betas``."""

    betas: tuple[float, ...]
    per_beta: dict  # repr(beta) -> {field: list of floats (non-finite as strings)}
    version: int = VERSION

    def to_dict(self) -> dict:
        return {"version": self.version, "betas": list(self.betas), "per_beta": self.per_beta}

    @classmethod
    def from_dict(cls, d: dict) -> "Fingerprint":
        return cls(betas=tuple(float(b) for b in d["betas"]), per_beta=d["per_beta"],
                   version=int(d.get("version", VERSION)))

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
        return f"fp{self.version}:{','.join(repr(b) for b in self.betas)}:{digest}"

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
        shared = [b for b in self.betas if b in other.betas]
        if not shared:
            raise ValueError(f"no beta in common ({self.betas} vs {other.betas})")
        return shared


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


def fingerprint(obj_or_source, betas: Iterable[float] = DEFAULT_BETAS) -> Fingerprint:
    """The fingerprint of anything :func:`objectives.candidate.resolve` takes (a Candidate, a
    registry name, an Objective, source or a .py path): a built-in is measured in this process,
    anything else in the sandbox, with the candidate's kind passed on (no re-probe)."""
    candidate = resolve(obj_or_source)
    return Fingerprint.from_dict(run(candidate, "objectives.fingerprint:measure", [float(b) for b in betas],
                                     timeout=SANDBOX_TIMEOUT))


def find_duplicate(fp: Fingerprint, existing: Iterable, rtol: float = 1e-6,
                   atol: float = 1e-9, up_to: str = "function"):
    """The id of the first (id, Fingerprint-or-dict) in ``existing`` that duplicates ``fp``.

    ``up_to="function"``: computes the same function; ``up_to="training"``: also a loss whose
    gradients agree up to a positive factor (``f + c``, ``k * f``). Entries sharing no beta with
    ``fp`` (or of another version) are skipped; None when none match.
    """
    if up_to not in ("function", "training"):
        raise ValueError(f"up_to must be 'function' or 'training', not {up_to!r}")
    for ident, other in existing:
        if isinstance(other, dict):
            other = Fingerprint.from_dict(other)
        if other.version != fp.version or not set(fp.betas) & set(other.betas):
            continue
        if fp.same_function(other, rtol=rtol, atol=atol) or (
                up_to == "training" and fp.same_training(other, rtol=rtol, atol=atol)):
            return ident
    return None
