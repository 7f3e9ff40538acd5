"""LLM-written source in any of three forms, turned into an :class:`~objectives.base.Objective`.

1. DiscoPOP's method form::

       def my_loss(self, policy_chosen_logps, policy_rejected_logps,
                   reference_chosen_logps, reference_rejected_logps):
           ...  # uses self.beta, torch and F without importing them

2. a plain function of the four tensors and beta: ``def f(pc, pr, rc, rr, beta)``;
3. a function of the margin: ``def f(rho, beta)``.

All three become an :class:`~objectives.base.Objective` called the same way (:func:`from_source`).
Loading source runs no candidate logic; the objective's ``kind`` is found by calling it on fixed
probe batches (:func:`probe_kind`) unless it is already known: validation measures it in the
sandbox, and a :class:`~objectives.candidate.Candidate` that carries it (``resolve(x, kind=...)``)
hands it to :func:`from_source`, so the code is not probed again. Load untrusted code in this
process only where you would run it anyway.

A registry name, a ``.py`` file or source text is resolved by :func:`objectives.candidate.resolve`;
``objectives.load(x)`` (:func:`objectives.candidate.load`) is that plus :func:`from_source`.
"""

from __future__ import annotations

import torch

from objectives.base import KINDS, Objective, ObjectiveError, margin
from objectives.baselines import REGISTRY
from objectives.execution import compile_function
from objectives.screen import screen


class _DiscoPOPSelf:
    """Stands in for the trainer that DiscoPOP's method-form losses read ``self.beta`` from."""

    def __init__(self, beta: float):
        self.beta = beta
        self.label_smoothing = 0.0


def detect_form(params: tuple[str, ...]) -> str:
    if params and params[0] == "self":
        if len(params) != 5:
            raise ObjectiveError(f"method form takes self and the four log-prob tensors, got "
                                 f"{len(params)} parameters ({', '.join(params)})")
        return "method"
    if len(params) == 5:
        return "logps"
    if len(params) == 2:
        return "rho"
    raise ObjectiveError(
        f"cannot tell the form from the parameters ({', '.join(params) or 'none'}): expected "
        "(self, pc, pr, rc, rr), (pc, pr, rc, rr, beta) or (rho, beta)")


def _wrap(fn, form: str):
    if form == "method":
        def call(pc, pr, rc, rr, beta):
            return fn(_DiscoPOPSelf(beta), pc, pr, rc, rr)
    elif form == "rho":
        def call(pc, pr, rc, rr, beta):
            return fn(margin(pc, pr, rc, rr), beta)
    else:
        call = fn
    return call


def _probe_batch(seed: int, n: int = 8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g, dtype=torch.float64) * 3 - 20 for _ in range(4)]


def probe_kind(fn, beta: float = 0.1) -> str:
    """Measure what a loss depends on: the batch, the individual log-ratios, or rho alone."""
    with torch.no_grad():
        a, b = _probe_batch(1), _probe_batch(2)
        full = fn(*a, beta)
        # pair 0 of batch a, once with batch a's other pairs and once with batch b's
        mixed = [torch.cat([x[:1], y[1:]]) for x, y in zip(a, b)]
        if not torch.allclose(fn(*mixed, beta)[:1], full[:1], rtol=1e-9, atol=1e-12):
            return "batch"
        shift = torch.linspace(0.5, 4.0, a[0].numel(), dtype=torch.float64)
        moved = [a[0] + shift, a[1] + shift, a[2], a[3]]  # both log-ratios move, rho does not
        if not torch.allclose(fn(*moved, beta), full, rtol=1e-6, atol=1e-9):
            return "logratio"
    return "pointwise"


def from_source(source: str, *, name: str | None = None, kind: str | None = None,
                probe: bool = True) -> Objective:
    """The objective defined by ``source`` (screened, then compiled), named ``name`` or after its
    function. ``kind``: the measured kind; None probes it (``probe=False``: pointwise for the rho
    form, logratio otherwise, without calling the code)."""
    screened = screen(source)
    form = detect_form(screened.params)
    call = _wrap(compile_function(source), form)
    if kind is None:
        kind = probe_kind(call) if probe else ("pointwise" if form == "rho" else "logratio")
    elif kind not in KINDS:
        raise ObjectiveError(f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    doc = (call.__doc__ or "").strip().splitlines()
    # named after its function, a file too: as `disco validate`, `disco inspect` and the campaign
    return Objective(name=name or screened.function_name, fn=call, form=form,
                     kind=kind, source=source, description=doc[0] if doc else "")


def get(name: str) -> Objective:
    return REGISTRY.get(name)


def names() -> list[str]:
    return list(REGISTRY)
