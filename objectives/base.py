"""The objective interface: a pure function from per-pair log-probs to per-pair losses.

Every objective, built in or written by an LLM, is called the same way::

    losses = objective(policy_chosen_logps, policy_rejected_logps,
                       reference_chosen_logps, reference_rejected_logps, beta)   # -> shape [B]

with rho = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected), the DPO
log-ratio margin. The trainer takes the mean over the batch; it never names a loss.

An objective also says what it depends on (``kind``):

* ``pointwise``: a function of rho alone, pair by pair (DPO, IPO, SLiC, LRML);
* ``logratio``: a per-pair function of the two individual log-ratios (BCO-pair, NCA-pair, APO-zero);
* ``batch``: couples the pairs of a batch through batch statistics (KTO-pair's batch KL, AQL).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal

import torch

Kind = Literal["pointwise", "logratio", "batch"]
Form = Literal["registry", "method", "logps", "rho"]
KINDS: tuple[str, ...] = ("pointwise", "logratio", "batch")

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


class ObjectiveError(ValueError):
    """A candidate objective could not be loaded or did not behave; ``line`` points into its source."""

    def __init__(self, reason: str, line: int | None = None):
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line else reason)


def margin(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor) -> torch.Tensor:
    """rho = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))."""
    return (pc - rc) - (pr - rr)


@dataclasses.dataclass(frozen=True)
class Objective:
    """A loss with its metadata. Call it like the function it wraps."""

    name: str
    fn: LossFn
    form: Form
    kind: Kind
    source: str = ""
    citation: str = ""
    description: str = ""
    length_normalized: bool = False  # True: the trainer feeds per-token mean log-probs (TRL's ipo)

    def __call__(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                 reference_rejected_logps, beta: float) -> torch.Tensor:
        return self.fn(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                       reference_rejected_logps, float(beta))

    @property
    def pointwise(self) -> bool:
        return self.kind == "pointwise"

    def of_rho(self, rho: torch.Tensor, beta: float) -> torch.Tensor:
        """Evaluate on margins: rho is put on the chosen policy log-prob, everything else zero.

        Exact for pointwise objectives; for the others it is one slice through their domain.
        """
        zeros = torch.zeros_like(rho)
        return self(rho, zeros, zeros, zeros, beta)

    def describe(self) -> dict:
        return {"name": self.name, "form": self.form, "kind": self.kind,
                "length_normalized": self.length_normalized, "citation": self.citation,
                "description": self.description}
