"""The proposer seam: whatever writes the next candidate objective.

A proposer gets a :class:`Context` (a bounded view of the archive, rebuilt from the database before
every proposal, so that a resumed campaign sees exactly what an uninterrupted one would) and returns
a :class:`Proposal`: the hypothesis (``thought``), a ``name`` and the ``code``, as the paper's
language model did. A proposal that could not be produced (a reply that would not parse) carries an
``error`` instead of code; the campaign records it as an invalid candidate so the error reaches the
next prompt.

Two real proposers are registered: ``evolve`` (offline symbolic search, :mod:`discovery.evolve`,
the default) and ``openai`` (any OpenAI-compatible endpoint, :mod:`discovery.llm`). Tests inject
their own fakes by passing a proposer object to :func:`discovery.campaign.run_campaign`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

from objectives.registry import Registry


class ProposerError(RuntimeError):
    """The proposer could not produce anything at all (endpoint down after all retries, no key)."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One archive row as a proposer sees it."""

    id: int
    name: str
    kind: str  # "baseline" or "candidate"
    status: str
    thought: str = ""
    code: str = ""
    fitness: float | None = None
    fitness_se: float | None = None
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class Context:
    """What a proposer may know: baselines, best, most recent and last failed candidates."""

    task: str
    beta: float
    metric: str
    n_proposed: int  # candidate rows so far: the index of the proposal being asked for
    baselines: tuple[Entry, ...] = ()
    best: tuple[Entry, ...] = ()
    recent: tuple[Entry, ...] = ()
    failures: tuple[Entry, ...] = ()
    known_codes: frozenset[str] = frozenset()  # whitespace-normalised code of every row


@dataclasses.dataclass(frozen=True)
class Proposal:
    """A proposed candidate, or the error that kept one from being produced."""

    thought: str
    name: str
    code: str
    proposer: str
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reply: str | None = None  # the raw model reply, kept in the candidate's folder
    prompt: str | None = None  # the prompt that produced it, likewise
    parents: tuple[str, ...] = ()


class Proposer(Protocol):
    name: str

    def propose(self, context: Context) -> Proposal: ...


def normalise_code(code: str) -> str:
    return " ".join((code or "").split())


def _openai(config) -> Proposer:
    from discovery.llm import LLMProposer
    return LLMProposer.from_config(config)


def _evolve(config) -> Proposer:
    from discovery.evolve import EvolveProposer
    return EvolveProposer(seed=config.seed)


PROPOSERS: Registry[Callable[..., Proposer]] = Registry("proposer")
PROPOSERS.register("evolve", _evolve)
PROPOSERS.register("openai", _openai)


def make_proposer(config) -> Proposer:
    """Build the proposer named by ``config.proposer`` (unknown names get a "did you mean")."""
    return PROPOSERS.get(config.proposer)(config)
