"""The proposer interface: what a proposer is given, what it returns, and the error it may raise.

A proposer gets a :class:`Context` (a bounded view of the archive, rebuilt from the database before
every proposal, so that a resumed campaign sees exactly what an uninterrupted one would) and returns
a :class:`Proposal`: the hypothesis (``thought``), a ``name`` and the ``code``, as the paper's
language model did. A proposal that could not be produced (a reply that would not parse) carries an
``error`` instead of code; the campaign records it as an invalid candidate so the error reaches the
next prompt.

This module imports nothing of the project: the implementations (:mod:`discovery.evolve`,
:mod:`discovery.llm`) and their registry (:mod:`discovery.proposers`) import it, never the reverse.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol


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
    idea: str = ""                      # the model's one-line idea ("" for older rows: the thought's start)
    proposer: str = ""
    parents: tuple[str, ...] = ()
    duplicate_of: int | None = None
    metrics: dict | None = None         # the row's metrics (mean, per_seed, stage) for diagnostics


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
    known_codes: frozenset[str] = frozenset()  # normalise_code() of every row's code
    history: tuple[Entry, ...] = ()     # every candidate row so far, oldest first (the history table)
    n_total: int = 0                    # the campaign's number of candidates (experiment k of N)
    task_card: str = ""                 # what the task is, written by the task (Task.card)
    noise: dict | None = None           # the campaign's noise record (discovery.noise)
    lessons: tuple[str, ...] = ()       # the lessons summaries so far, oldest first
    budget_left: str = ""               # what remains of the campaign's budgets, in words
    parents: tuple[Entry, ...] = ()     # the entries selection chose to build on (shown with code)
    island: int | None = None           # the island the next proposal belongs to


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
    idea: str = ""            # one line: the idea in a few words (shown in the history table)
    reply: str | None = None  # the raw model reply, kept in the candidate's folder
    prompt: str | None = None  # the prompt that produced it, likewise
    parents: tuple[str, ...] = ()


class Proposer(Protocol):
    name: str

    def propose(self, context: Context) -> Proposal: ...


def normalise_code(code: str) -> str:
    """``code`` with every run of whitespace made one space: equal texts up to layout compare equal."""
    return " ".join((code or "").split())
