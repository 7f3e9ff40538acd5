"""The proposer registry: whatever writes the next candidate objective, by name.

Two proposers are registered: ``evolve`` (offline symbolic search, :mod:`discovery.evolve`, the
default) and ``openai`` (any OpenAI-compatible endpoint, :mod:`discovery.llm`; the ``openai``
package is imported only when one is built, so the offline proposer never needs it). Tests inject
their own fakes by passing a proposer object to :func:`discovery.campaign.run_campaign`.

The interface itself (``Context``, ``Entry``, ``Proposal``, ``Proposer``, ``ProposerError``) lives
in :mod:`discovery.proposal`, which the implementations import; nothing imports this module back.
"""

from __future__ import annotations

from typing import Callable

from discovery.evolve import EvolveProposer
from discovery.llm import LLMProposer
from discovery.proposal import Proposer
from objectives.registry import Registry


def _openai(config) -> Proposer:
    return LLMProposer.from_config(config)


def _evolve(config) -> Proposer:
    return EvolveProposer.from_config(config)


PROPOSERS: Registry[Callable[..., Proposer]] = Registry("proposer")
PROPOSERS.register("evolve", _evolve)
PROPOSERS.register("openai", _openai)


def make_proposer(config) -> Proposer:
    """Build the proposer named by ``config.proposer.name`` (unknown names get a "did you mean")."""
    return PROPOSERS.get(config.proposer.name)(config)
