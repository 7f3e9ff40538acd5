"""What the proposer is shown about the campaign so far: the task card, per-entry diagnostics, the
complete history table and the lessons summary.

* :func:`task_card`: what the task is (written by the task: :func:`inner_loop.tasks.task_defaults`'
  ``card``), the fitness and its noise floor, the training budget and optimiser, what beta means,
  and whether batch-coupled losses are allowed. Built from the resolved config; nothing is trained.
* :func:`diagnose`: one entry's paired difference to DPO with its interval and a "within noise"
  flag (:func:`discovery.noise.paired_to`), its KL and reward next to DPO's, its per-seed values,
  the range of margins its training reached (when the runs recorded it), and plain-language
  :func:`flags` derived from those numbers ("trained identically to DPO", "barely moved from the
  reference", "drifted far: KL 64 vs DPO 10", "collapsed: completions shortened").
* :func:`history_table`: one line per candidate, *every* candidate: ``#id name | idea | diff to DPO
  | KL | status``. Past ``max_rows`` lines, the older rows are grouped by family (the parent they
  were built on, else their name's first word) into one line per family that lists every id it
  holds, its statuses and the range of its differences; the latest rows and the extremes (best and
  worst differences) keep their own lines. No row is ever dropped silently.
* :func:`rule_lessons`: a lessons summary computed from the archive by rules (what beats DPO, what is
  within noise, which families failed how); :mod:`discovery.llm` asks the model for one instead when
  one is configured. Lessons are stored in the archive's ``notes`` table (:func:`add_note`,
  :func:`notes`) and shown in later prompts and in the report.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time

from discovery import noise as noise_mod
from discovery.feedback import safe_reason
from discovery.proposal import Context, Entry

LESSONS = "lessons"
FAILED = ("invalid", "failed")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _row(e: Entry) -> dict:
    """An :class:`Entry` as the row dict :mod:`discovery.noise` reads."""
    return {"id": e.id, "name": e.name, "kind": e.kind, "status": e.status, "metrics": e.metrics or {}}


def mean_metric(e: Entry | None, key: str):
    mean = ((e.metrics or {}).get("mean") if e is not None else None) or {}
    value = mean.get(key)
    return value if _finite(value) else None


# -- the task card --------------------------------------------------------------------------------

def task_card(config, noise: dict | None = None) -> str:
    """The task card of a resolved :class:`~discovery.config.CampaignConfig` (see the module docstring)."""
    from inner_loop.glossary import define
    from inner_loop.tasks import task_defaults
    from inner_loop.train_config import split_overrides

    t, f = config.training, config.fitness
    defaults = task_defaults(t.task, t.overrides)
    train_over, _, _ = split_overrides(dict(t.overrides))
    train = {**defaults.train, **train_over}
    lines = [f"Task `{t.task}`: {defaults.card}".rstrip()]
    batch = int(train.get("batch_size", 1)) * int(train.get("grad_accum", 1) or 1)
    epochs = train.get("num_epochs")
    steps = train.get("max_steps", -1)
    if (steps is None or steps < 0) and defaults.pairs and epochs:
        steps = math.ceil(defaults.pairs / batch) * epochs
    budget = f"about {steps:g} optimizer steps" if _finite(steps) and steps > 0 else "the task's epochs"
    lines.append(
        f"Training: each candidate fine-tunes the SFT model with {budget} (batch {batch} pairs, learning rate "
        f"{train.get('learning_rate'):g}, AdamW, {train.get('lr_scheduler', 'linear')} schedule), once per seed "
        f"({len(t.seeds)} seeds; a new candidate first trains on {t.screen_seeds or len(t.seeds)} and goes on only "
        "if it is not clearly worse than DPO). Adam divides a constant factor of the gradient out, so "
        "multiplying a loss by c > 0 or adding a constant trains the same: only the shape of f(rho) counts.")
    lines.append(
        f"beta = {t.beta:g}: the scale of the margin rho (the policy's log-ratio to the reference, chosen minus "
        "rejected, summed over tokens). DPO is -logsigmoid(beta * rho); a larger beta pulls the policy harder "
        "towards the reference. At the first step rho = 0 for every pair (the policy is the reference).")
    metric = f.metric
    if f.function == "mean_metric":
        what = f"the mean over seeds of `{metric}` ({define(metric) or 'the task metric'})"
        kl = (f"at matched KL {f.kl_budget:g} (each seed trained at several betas)" if f.kl_budget else
              "KL to the reference is reported but not part of the fitness")
        lines.append(f"Fitness: {what}; higher is better; {kl}. Every entry below is shown as its paired "
                     "difference to DPO on the same seeds.")
    else:
        lines.append(f"Fitness: `{f.function}` (an LLM judge grades each seed's kept model); higher is better.")
    lines.append(noise_mod.floor_line(noise).capitalize() + ".")
    lines.append(
        f"Batches: the loss gets {int(train.get('batch_size', 1))} pairs at a time in random order. Pointwise "
        "losses (each pair's loss depends on its own rho) are the norm; batch-coupled losses (a pair's loss "
        "depends on the other pairs: batch means, ranks, quantiles) are allowed, checked as batch-coupled, and "
        "trained on the same batches.")
    return "\n".join(lines)


# -- diagnostics ----------------------------------------------------------------------------------

def margin_range(e: Entry) -> tuple[float, float] | None:
    """(lowest, highest) margin rho the entry's training reached over its seeds (the runs' recorded
    margins, :func:`discovery.pilot.margin_range`), or None when none was recorded."""
    from discovery.pilot import margin_range as run_range
    spans = [run_range(p.get("margins")) for p in ((e.metrics or {}).get("per_seed") or []) if isinstance(p, dict)]
    spans = [x for x in spans if x is not None]
    return (min(lo for lo, _ in spans), max(hi for _, hi in spans)) if spans else None


def flags(e: Entry, reference: Entry | None, diff: dict | None, metric: str) -> list[str]:
    """Plain-language flags for a finished entry, from its numbers next to DPO's."""
    out = []
    if reference is None or e.id == reference.id:
        return out
    mine = noise_mod.per_seed_values(_row(e), metric)
    theirs = noise_mod.per_seed_values(_row(reference), metric)
    shared = sorted(set(mine) & set(theirs))
    kl, kl_ref = mean_metric(e, "kl"), mean_metric(reference, "kl")
    if shared and all(abs(mine[s] - theirs[s]) <= 1e-9 for s in shared) and \
            (kl is None or kl_ref is None or abs(kl - kl_ref) <= 1e-6 * max(1.0, kl_ref)):
        out.append(f"trained identically to DPO on seed(s) {', '.join(map(str, shared))}: a reproduction, not a change")
    if kl is not None and kl_ref is not None and kl_ref > 0:
        if kl < 0.25 * kl_ref:
            out.append(f"barely moved from the reference: KL {kl:.3g} vs DPO {kl_ref:.3g}")
        elif kl > 3 * kl_ref:
            out.append(f"drifted far: KL {kl:.3g} vs DPO {kl_ref:.3g}")
    length, length_ref = mean_metric(e, "completion_length"), mean_metric(reference, "completion_length")
    if length is not None and length_ref and length < 0.6 * length_ref:
        out.append(f"collapsed: completions shortened to {length:.3g} tokens vs DPO {length_ref:.3g}")
    if diff is not None and diff.get("within_noise"):
        out.append("within noise: not distinguishable from DPO at this number of seeds")
    elif diff is not None and diff.get("lo") is not None and diff["lo"] > 0:
        out.append("beats DPO: the whole interval is above 0")
    elif noise_mod.clearly_negative(diff):
        out.append("worse than DPO: the whole interval is below 0")
    return out


@dataclasses.dataclass
class Diagnosis:
    diff: dict | None
    flags: list[str]
    lines: list[str]


def diagnose(e: Entry, reference: Entry | None, noise: dict | None, metric: str) -> Diagnosis:
    """The diagnostics block of a finished entry (see the module docstring)."""
    diff = noise_mod.paired_to(_row(e), _row(reference), metric, noise) if reference is not None \
        and e.id != reference.id else None
    lines = []
    if diff is not None:
        lines.append(f"vs DPO: {metric} {noise_mod.interval_text(diff)} ({diff.get('what', '')})"
                     + ("; within noise" if diff.get("within_noise") else ""))
    numbers = []
    for key, label in (("kl", "KL"), ("reward", "reward"), ("completion_length", "length")):
        v = mean_metric(e, key)
        if v is not None:
            ref = mean_metric(reference, key) if reference is not None and e.id != reference.id else None
            numbers.append(f"{label} {v:.3g}" + (f" (DPO {ref:.3g})" if ref is not None else ""))
    if numbers:
        lines.append(", ".join(numbers))
    per_seed = noise_mod.per_seed_values(_row(e), metric)
    if per_seed:
        lines.append(f"per seed {metric}: " + ", ".join(f"{s}: {v:.4g}" for s, v in sorted(per_seed.items())))
    span = margin_range(e)
    if span:
        lines.append(f"margins rho reached in training (over steps and seeds): {span[0]:.3g} to {span[1]:.3g}")
    found = flags(e, reference, diff, metric)
    if found:
        lines.append("flags: " + "; ".join(found))
    return Diagnosis(diff, found, lines)


# -- the history table ----------------------------------------------------------------------------

def one_line(text: str, limit: int) -> str:
    """``text`` on one line, cut at a word boundary with an ellipsis (never mid-word)."""
    text = " ".join((text or "").split())
    if len(text) <= limit:
        return text
    cut = text[:limit + 1].rsplit(" ", 1)[0] if " " in text[:limit + 1] else text[:limit]
    return cut.rstrip(",;:.") + " ..."


def idea_of(e: Entry, limit: int = 80) -> str:
    """The entry's one-line idea (the model's ``idea`` field; older rows: the hypothesis's first sentence)."""
    if e.idea:
        return one_line(e.idea, limit)
    first = re.split(r"(?<=[.!?])\s", " ".join((e.thought or "").split()), maxsplit=1)[0]
    return one_line(first, limit)


def family(e: Entry) -> str:
    """The family an entry belongs to: the first parent it was built on; else, for an ``evolve``
    name (``evo<k>_<operator>_<parent>``), its parent's short name; else its name's first word."""
    if e.parents:
        return str(e.parents[0])
    m = re.fullmatch(r"evo\d+_[a-z]+_(\w+)", e.name or "")
    if m:
        return m.group(1)
    return re.split(r"[_\-]", e.name or "?", maxsplit=1)[0] or "?"


def _status(e: Entry, diff: dict | None) -> str:
    if e.status == "done":
        return "done" + (" ~noise" if diff is not None and diff.get("within_noise") else "")
    if e.status == "duplicate":
        return f"duplicate of #{e.duplicate_of}" if e.duplicate_of else "duplicate"
    return e.status


def _ids(ids: list[int]) -> str:
    """``#3, #5, #9-#12``: every id, runs of consecutive ids joined."""
    out, run = [], []
    for i in sorted(ids):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"#{run[0]}" if len(run) == 1 else f"#{run[0]}-#{run[-1]}")
        run = [i]
    if run:
        out.append(f"#{run[0]}" if len(run) == 1 else f"#{run[0]}-#{run[-1]}")
    return ", ".join(out)


def history_table(entries: tuple[Entry, ...] | list[Entry], reference: Entry | None, noise: dict | None,
                  metric: str, max_rows: int = 40, idea_chars: int = 70) -> str:
    """Every candidate in one table (see the module docstring); grouped past ``max_rows`` lines."""
    entries = list(entries)
    if not entries:
        return "(no candidates yet)"
    diffs = {e.id: (noise_mod.paired_to(_row(e), _row(reference), metric, noise)
                    if reference is not None and e.status == "done" else None) for e in entries}

    def line(e: Entry) -> str:
        d = diffs[e.id]
        kl = mean_metric(e, "kl")
        return (f"#{e.id} {e.name} | {idea_of(e, idea_chars) or '-'} | "
                f"{noise_mod.interval_text(d) if d else '-'} | {f'{kl:.3g}' if kl is not None else '-'} | "
                f"{_status(e, d)}")

    header = f"id name | idea | {metric} minus DPO [95% interval] | KL | status"
    if len(entries) <= max_rows:
        return "\n".join([header] + [line(e) for e in entries])
    scored = sorted((e for e in entries if diffs[e.id] is not None), key=lambda e: diffs[e.id]["diff"])
    n_latest = max(1, max_rows // 2)
    n_extreme = max(1, (max_rows - n_latest) // 4)
    keep = {e.id for e in entries[-n_latest:]}
    keep |= {e.id for e in scored[-n_extreme:]} | {e.id for e in scored[:max(1, n_extreme // 2)]}
    grouped: dict[str, list[Entry]] = {}
    for e in entries:
        if e.id not in keep:
            grouped.setdefault(family(e), []).append(e)
    lines = [header, f"({len(entries)} candidates: older rows grouped by family, one line each; the latest "
                     f"{n_latest}, the best and the worst keep their own line)"]
    for fam, members in grouped.items():
        statuses: dict[str, int] = {}
        for m in members:
            statuses[m.status] = statuses.get(m.status, 0) + 1
        ds = [(diffs[m.id]["diff"], m) for m in members if diffs[m.id] is not None]
        span = ""
        if ds:
            lo, hi = min(ds, key=lambda x: x[0]), max(ds, key=lambda x: x[0])
            span = f"; minus DPO from {lo[0]:+.4f} to {hi[0]:+.4f} (best #{hi[1].id} {hi[1].name})"
        counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        lines.append(f"family {fam}: {len(members)} rows {_ids([m.id for m in members])} ({counts}){span}")
    lines += [line(e) for e in entries if e.id in keep]
    return "\n".join(lines)


# -- lessons --------------------------------------------------------------------------------------

def rule_lessons(entries, reference: Entry | None, noise: dict | None, metric: str) -> str:
    """A lessons summary computed from the archive by rules (no model)."""
    entries = [e for e in entries if e.kind == "candidate"]
    done = [e for e in entries if e.status == "done"]
    diffs = {e.id: noise_mod.paired_to(_row(e), _row(reference), metric, noise) if reference else None
             for e in done}
    above = [e for e in done if (diffs[e.id] or {}).get("lo") is not None and diffs[e.id]["lo"] > 0]
    below = [e for e in done if noise_mod.clearly_negative(diffs[e.id])]
    within = [e for e in done if (diffs[e.id] or {}).get("within_noise")]
    out = [f"- {len(entries)} candidates so far: {len(done)} trained, "
           f"{sum(e.status in FAILED for e in entries)} failed or invalid, "
           f"{sum(e.status == 'duplicate' for e in entries)} duplicates."]
    if reference is None:
        out.append("- DPO has not finished: no paired differences yet.")
    else:
        out.append(f"- Beat DPO with the whole interval above 0: "
                   f"{', '.join(f'#{e.id} {e.name}' for e in above) or 'none yet'}.")
        out.append(f"- Within noise of DPO: {len(within)}; clearly worse: "
                   f"{', '.join(f'#{e.id} {e.name}' for e in below[:6]) or 'none'}"
                   + (f" and {len(below) - 6} more" if len(below) > 6 else "") + ".")
    flagged: dict[str, list[str]] = {}
    for e in done:
        for f in flags(e, reference, diffs[e.id], metric):
            key = next((k for k in ("trained identically to DPO", "barely moved from the reference", "drifted far",
                                    "collapsed") if f.startswith(k)), None)
            if key:
                flagged.setdefault(key, []).append(f"#{e.id}")
    for key, ids in flagged.items():
        out.append(f"- {key}: {', '.join(ids)}.")
    fams: dict[str, list[float]] = {}
    for e in done:
        if diffs[e.id] is not None:
            fams.setdefault(family(e), []).append(diffs[e.id]["diff"])
    if fams:
        ranked = sorted(fams.items(), key=lambda kv: -max(kv[1]))
        best, worst = ranked[0], ranked[-1]
        out.append(f"- Best family so far: {best[0]} (best difference {max(best[1]):+.4f} over {len(best[1])} rows)"
                   + (f"; weakest: {worst[0]} (best {max(worst[1]):+.4f})" if len(ranked) > 1 else "") + ".")
    reasons: dict[str, int] = {}
    for e in entries:
        if e.status in FAILED and e.reason:  # the project's words only: a reason may quote the candidate
            key = safe_reason(e.reason, e.code).split(":")[0][:40]
            reasons[key] = reasons.get(key, 0) + 1
    if reasons:
        top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
        out.append("- Most common failures: " + "; ".join(f"{k} ({n})" for k, n in top) + ".")
    return "\n".join(out)


def add_note(archive, *, kind: str, after_id: int, text: str, author: str) -> None:
    """Store a note (a lessons summary) in the archive's ``notes`` table."""
    from discovery.text import clean
    with archive.db:
        archive.db.execute("INSERT INTO notes (kind, after_id, text, author, created_at) VALUES (?, ?, ?, ?, ?)",
                           (kind, int(after_id), clean(text), clean(author), time.time()))


def notes(archive, kind: str = LESSONS) -> list[dict]:
    """The notes of ``kind``, oldest first."""
    try:
        cur = archive.db.execute("SELECT * FROM notes WHERE kind = ? ORDER BY id", (kind,))
    except Exception:  # noqa: BLE001 - an archive written before notes existed
        return []
    return [dict(r) for r in cur]


def lessons_due(archive, every: int) -> int | None:
    """The id of the candidate after which a lessons summary is due (``every`` finished candidates
    since the last one), or None."""
    if every <= 0:
        return None
    finished = [r["id"] for r in archive.db.execute(
        "SELECT id FROM candidates WHERE kind = 'candidate' AND status IN ('done', 'failed', 'invalid', "
        "'duplicate') ORDER BY id")]
    last = notes(archive)
    after = last[-1]["after_id"] if last else 0
    since = [i for i in finished if i > after]
    return since[every - 1] if len(since) >= every else None


def reference_entry(context: Context) -> Entry | None:
    return next((e for e in context.baselines if e.name == noise_mod.REFERENCE and e.status == "done"), None)


def enrich(context: Context, archive, config) -> Context:
    """``context`` with what the archive and the config add: the task card, the noise record, the
    lessons so far and the number of experiments in all."""
    record = archive.meta("noise")
    try:
        card = task_card(config, record)
    except Exception as err:  # noqa: BLE001 - a card that cannot be written must not stop the campaign
        card = f"Task `{config.training.task}` (its card could not be written: {type(err).__name__})"
    return dataclasses.replace(context, task_card=card, noise=record, n_total=config.candidates,
                               lessons=tuple(n["text"] for n in notes(archive)))
