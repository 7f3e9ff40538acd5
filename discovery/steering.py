"""What the campaign does around its proposer: the context it is given, the requests it is asked,
the proposals it is spared, and the lessons it is shown.

* :func:`proposer_context`: the archive's bounded view (:meth:`discovery.archive.Archive.context`)
  with the task card, noise record and lessons (:func:`discovery.history.enrich`), the parents and
  island that selection chose (:func:`discovery.selection.for_context`: islands, or uniform for
  ``proposer.selection: random``), and what remains of the budgets.
* :func:`propose`: ``proposer.proposals_per_request`` proposals for one context (a proposer with
  ``propose_many`` is asked for them at once; the campaign records all before training any).
* :func:`sweeps`: variants of the numeric constants of every finished candidate that beats DPO
  (:mod:`discovery.constants_sweep`), trained without a model call (``proposer.sweep_constants``).
* :func:`near_duplicate`: the earlier row a proposal nearly duplicates (:func:`discovery.selection.duplicate`),
  refused before validation with :data:`NEAR_DUPLICATE`.
* :func:`write_lessons`: a lessons summary every ``prompt.lessons_every`` finished candidates, by the
  model when one is configured (its tokens counted toward the budget), else by rules.
"""

from __future__ import annotations

import dataclasses
import logging

from discovery import budget, constants_sweep, history, noise, selection
from discovery.parsing import slug
from discovery.proposal import Entry, Proposal, normalise_code

log = logging.getLogger("discovery")

SWEEP = "sweep"  # the proposer name of a constants-sweep variant
NEAR_DUPLICATE = ("near-duplicate of #{n} {name} before validation: the same code up to names, layout and "
                  "constant arithmetic, or the same values of f(z)")


def proposer_context(archive, config, beta: float, spent=None):
    """The proposer's context (module docstring); ``spent``: :func:`discovery.budget.spent`'s last."""
    context = history.enrich(archive.context(
        task=config.training.task, beta=beta, metric=config.fitness.metric, n_best=config.prompt.n_best,
        n_recent=config.prompt.n_recent, n_failures=config.prompt.n_failures), archive, config)
    chosen = selection.for_context(context, seed=config.proposer.seed, n_islands=config.proposer.islands,
                                   uniform=config.proposer.selection == "random")
    context = dataclasses.replace(context, parents=chosen.entries, island=chosen.island)
    left = budget.words(spent, config.budget, capped_only=True) if spent is not None else ""
    return dataclasses.replace(context, budget_left=left) if left else context


def propose(proposer, context, k: int, room: int) -> list[Proposal]:
    """``k`` proposals (at most ``room``) for one context."""
    k = max(1, min(k, room))
    many = getattr(proposer, "propose_many", None)
    return list(many(context, k))[:k] if k > 1 and many else [proposer.propose(context)]


def sweeps(archive, config) -> list[Proposal]:
    """The constants-sweep proposals not yet in the archive, computed from it (so a resumed campaign
    sweeps what an uninterrupted one would); a variant is never swept again."""
    k = config.proposer.sweep_constants
    if k <= 0:
        return []
    rows = archive.rows()
    ref = noise.reference_row(rows)
    known = {normalise_code(r["code"]) for r in rows}
    out = []
    for r in rows:
        if r["kind"] != "candidate" or r["status"] != "done" or r["proposer"] == SWEEP or noise.screened_out(r):
            continue
        paired = noise.paired_to(r, ref, config.fitness.metric)
        if paired is None or paired["diff"] <= 0:
            continue
        for i, (code, what) in enumerate(constants_sweep.variants(r["code"], k), start=1):
            if normalise_code(code) not in known:
                known.add(normalise_code(code))
                out.append(Proposal(thought=f"{what} of #{r['id']} {r['name']}", idea=what,
                                    name=slug(f"{r['name']}_sw{i}"), code=code, proposer=SWEEP,
                                    parents=(r["name"],)))
    return out


def near_duplicate(archive, code: str, beta: float, dedupe: str) -> Entry | None:
    """The earlier row whose code ``code`` nearly duplicates, or None (``dedupe: training`` also
    counts a positive factor and a constant as the same)."""
    entries = [Entry(id=r["id"], name=r["name"], kind=r["kind"], status=r["status"], code=r["code"])
               for r in archive.rows() if r["code"]]
    return selection.duplicate(code, entries, beta=beta, up_to_scale=dedupe == "training")


def write_lessons(archive, config, proposer, context_of) -> None:
    """Store a lessons summary when due (:func:`discovery.history.lessons_due`); ``context_of()``
    builds the proposer's context for it."""
    due = history.lessons_due(archive, config.prompt.lessons_every)
    if due is None:
        return
    context = context_of()
    text, author = None, "rules"
    if config.proposer.lessons_model and hasattr(proposer, "lessons"):
        try:
            text, (prompt_tokens, completion_tokens) = proposer.lessons(context)
            author = f"model {config.proposer.model}"
            budget.record_usage(archive, config.proposer.model, prompt_tokens, completion_tokens)
        except Exception as err:  # noqa: BLE001 - lessons are help, never a reason to stop
            log.warning("the lessons summary by the model failed (%s); written by rules instead", type(err).__name__)
    if text is None:
        text = history.rule_lessons(context.history, history.reference_entry(context), context.noise,
                                    config.fitness.metric)
    history.add_note(archive, kind=history.LESSONS, after_id=due, text=text, author=author)
    log.info("lessons after #%d (%s):\n%s", due, author, text)
