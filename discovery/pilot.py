"""A one-seed pilot: does a candidate train exactly like an earlier row? Then its other seeds are not spent.

The functional fingerprint (:mod:`objectives.fingerprint`) compares losses before training, on
margins chosen in advance. A loss can differ from DPO only where training never goes:
``softplus(-clamp(z, min=-2.5))`` is DPO until z < -2.5, which a short run never reaches, so it
trains to DPO's results on every seed while the fixed grid calls it new. After the candidate's first
seed has trained, :func:`trains_like` compares that run with the same seed of every earlier row.

**The criterion.** The pilot trains like row #k when, at the same seed, both runs finished, took the
same number of optimizer steps, and

* their **evaluation metrics** are equal within ``rtol``/``atol``: ``reward``, ``kl``, ``win_rate``
  and ``reward_gain`` (those of :data:`METRICS` that both report; every numeric metric both report
  when they share none of those; at least one), and their ``per_prompt`` lists of the same keys,
  element by element (and ``per_prompt["prompt_set"]`` equal);
* their **margin trajectories** are equal within ``margin_rtol``/``margin_atol``: the min, p05, p50,
  p95 and max of the margins the loss saw, at every optimizer step the row recorded (a row keeps at
  most :data:`MAX_POINTS` of them, evenly spaced, :func:`compact_margins`), and the pooled quantiles
  of the whole run. A run without a margin record never matches (rows trained before margins were
  recorded are never called the same).

Not the loss values: a constant shift or a positive scale of a loss changes them and nothing else
(Adam divides the scale out, up to its epsilon and gradient clipping); the margins and metrics say
whether training went the same way. Equality here is "within float tolerance" on purpose: two losses
that compute the same gradients in a different order (``softplus(-z)`` against ``-logsigmoid(z)``)
drift apart by rounding, about 1e-5 in the margins and 2e-6 in the per-prompt KL after 8 steps of
the synthetic task, while DPO at 1.3 x its beta differs by 1.5 in the margins and 4 in a prompt's
KL (the tiny task of tests/discovery/test_pilot.py). A long run on a GPU can amplify rounding past the
tolerances; then the pilot says nothing and every seed trains, which costs time, never a result.

**Trust.** The metrics come from the trusted parent (it loads the job's weights and scores them
itself); the losses and margins are the training job's claims (``inner_loop.runner``: in the sandbox
the candidate's code runs beside the trainer that records them). Both must agree, so a forged
margin record can only make a candidate *not* match (it then trains on every seed, as without the
pilot) or match a row whose metrics it already reproduced; it cannot change any row's fitness.

The message the row and the proposer get is :data:`TEMPLATE` (:func:`message`); a candidate found
equal before training, by its fingerprint on the margins DPO's training visited
(:func:`objectives.fingerprint.visited_grid`), gets :data:`VISITED_TEMPLATE` (:func:`visited_message`).
:func:`compact_margins` is what a row's per-seed entry keeps of a run's margins, and
:func:`describe_margins` / :func:`margin_range` say in a line what range training reached.
"""

from __future__ import annotations

import json

import numpy as np

TEMPLATE = ("trains like #{n} {name}: its one-seed pilot reproduced that row's training (metrics and "
            "margins equal); the other seeds were not spent")
# before training: the fingerprint on the margins DPO's training visited (objectives.fingerprint.visited_grid)
VISITED_TEMPLATE = ("computes the same function as #{n} {name} on the margins DPO's training visits "
                    "(z = beta * rho from {lo} to {hi})")
METRICS = ("reward", "kl", "win_rate", "reward_gain")
SKIP = frozenset({"seconds", "seed"})  # numeric metrics that say nothing about the policy
MAX_POINTS = 64  # per-step margin rows a per-seed entry keeps (evenly spaced, first and last)
RTOL, ATOL = 1e-3, 1e-4                # metrics (rewards in [0, 1], KL of a few nats)
MARGIN_RTOL, MARGIN_ATOL = 1e-3, 1e-3  # margins (summed log-prob ratios, tens of nats)


def message(row_id: int, name: str) -> str:
    """The reason a pilot duplicate gets (:data:`TEMPLATE` filled in)."""
    return TEMPLATE.format(n=int(row_id), name=name)


def visited_message(row_id: int, name: str, grid_z) -> str:
    """The reason a candidate gets when its fingerprint on the visited grid (``grid_z``) equals row
    #``row_id``'s (:data:`VISITED_TEMPLATE` filled in)."""
    return VISITED_TEMPLATE.format(n=int(row_id), name=name, lo=f"{min(grid_z):.3g}", hi=f"{max(grid_z):.3g}")


def compact_margins(margins: dict | None, max_points: int = MAX_POINTS) -> dict | None:
    """A margin record (``TrainResult.margins``) with at most ``max_points`` per-step rows, evenly
    spaced over the run, the first and last step always kept (``step`` names the steps kept), for a
    row's per-seed entry; the pooled quantiles stay. None stays None."""
    if not isinstance(margins, dict):
        return None
    rows, steps = margins.get("per_step") or [], margins.get("step") or []
    if len(rows) != len(steps):
        steps = list(range(1, len(rows) + 1))
    if len(rows) > max_points:
        keep = sorted(set(np.linspace(0, len(rows) - 1, max_points).round().astype(int).tolist()))
        rows, steps = [rows[i] for i in keep], [steps[i] for i in keep]
    return {**margins, "per_step": list(rows), "step": list(steps)}


def margin_range(margins: dict | None) -> tuple[float, float] | None:
    """(lowest, highest) margin rho a run's loss saw, from its record (full or compact); None
    without one."""
    if not isinstance(margins, dict):
        return None
    pooled = margins.get("pooled")
    if pooled:
        return float(pooled[0]), float(pooled[-1])
    rows = margins.get("per_step") or []
    if not rows:
        return None
    return min(float(r[0]) for r in rows), max(float(r[-1]) for r in rows)


def describe_margins(margins: dict | None, beta: float | None = None) -> str:
    """One line for a diagnostic: ``"margins rho from -10.96 to 14.18 (p05 -7.31, median 0.00, p95
    7.85; 256 pair-steps)"``, with ``z = beta * rho`` from .. to .. when ``beta`` is given; "" without
    a record."""
    span = margin_range(margins)
    if span is None:
        return ""
    text = f"margins rho from {span[0]:.3g} to {span[1]:.3g}"
    pooled, levels = margins.get("pooled"), margins.get("pooled_levels") or []
    if pooled and len(pooled) == len(levels):
        q = dict(zip((round(float(x), 2) for x in levels), pooled))
        if all(k in q for k in (0.05, 0.5, 0.95)):
            text += (f" (p05 {q[0.05]:.3g}, median {q[0.5]:.3g}, p95 {q[0.95]:.3g}; "
                     f"{int(margins.get('n') or 0)} pair-steps)")
    if beta is not None:
        text += f"; z = beta * rho from {beta * span[0]:.3g} to {beta * span[1]:.3g}"
    return text


# -- the comparison ------------------------------------------------------------------------------

def _seed_of(pilot: dict) -> int | None:
    if pilot.get("seed") is not None:
        return pilot["seed"]
    return ((pilot.get("config") or {}).get("train") or {}).get("seed")


def _entries(row: dict) -> list[dict]:
    metrics = row.get("metrics")
    if isinstance(metrics, str):
        try:
            metrics = json.loads(metrics)
        except ValueError:
            return []
    return [p for p in (metrics or {}).get("per_seed") or [] if isinstance(p, dict)]


def _close(a, b, rtol: float, atol: float) -> bool:
    try:
        x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    except (TypeError, ValueError):
        return False
    if x.shape != y.shape:
        return False
    fx, fy = np.isfinite(x), np.isfinite(y)
    if not np.array_equal(fx, fy) or not np.array_equal(x[~fx], y[~fy], equal_nan=True):
        return False
    return bool(np.allclose(x[fx], y[fy], rtol=rtol, atol=atol))


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def metrics_differ(a: dict, b: dict, rtol: float = RTOL, atol: float = ATOL) -> str | None:
    """Why two runs' metrics differ (the first difference found), or None when they are equal
    (see the module docstring)."""
    a, b = a or {}, b or {}
    keys = [k for k in METRICS if _number(a.get(k)) and _number(b.get(k))]
    if not keys:
        keys = sorted(k for k in a if k not in SKIP and _number(a.get(k)) and _number(b.get(k)))
    if not keys:
        return "no metric in common"
    for k in keys:
        if not _close(a[k], b[k], rtol, atol):
            return f"{k} {a[k]:.6g} vs {b[k]:.6g}"
    pa, pb = a.get("per_prompt") or {}, b.get("per_prompt") or {}
    if pa.get("prompt_set") != pb.get("prompt_set"):
        return "other prompts"
    for k in keys:
        if (k in pa) != (k in pb):
            return f"per_prompt {k} in one run only"
        if k in pa and not _close(pa[k], pb[k], rtol, atol):
            return f"per_prompt {k} differs"
    return None


def margins_differ(a: dict | None, b: dict | None, rtol: float = MARGIN_RTOL,
                   atol: float = MARGIN_ATOL) -> str | None:
    """Why two margin records differ, or None when they are equal at every step ``b`` kept (``a``:
    the pilot's, full or compact; ``b``: the row's) and in their pooled quantiles."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return "no margin record"
    rows_a, steps_a = a.get("per_step") or [], a.get("step") or []
    rows_b, steps_b = b.get("per_step") or [], b.get("step") or []
    if not rows_b or len(rows_a) != len(steps_a) or len(rows_b) != len(steps_b):
        return "no margin record"
    by_step = dict(zip(steps_a, rows_a))
    if not all(s in by_step for s in steps_b):
        return "margins recorded at other steps"
    for s, row in zip(steps_b, rows_b):
        if not _close(by_step[s], row, rtol, atol):
            return f"margins differ at step {s}"
    if (a.get("pooled") is None) != (b.get("pooled") is None) or (
            a.get("pooled") is not None and not _close(a["pooled"], b["pooled"], rtol, atol)):
        return "pooled margins differ"
    return None


def differs(pilot: dict, entry: dict, *, rtol: float = RTOL, atol: float = ATOL,
            margin_rtol: float = MARGIN_RTOL, margin_atol: float = MARGIN_ATOL) -> str | None:
    """Why the pilot run did not train like ``entry`` (a run of the same seed: a per-seed entry or
    a result dict), or None when it did (the criterion of the module docstring)."""
    if pilot.get("status") != "done" or entry.get("status") != "done":
        return "not both finished"
    if pilot.get("steps") is not None and entry.get("steps") is not None and pilot["steps"] != entry["steps"]:
        return f"{pilot['steps']} steps vs {entry['steps']}"
    why = metrics_differ(pilot.get("metrics"), entry.get("metrics"), rtol, atol)
    if why:
        return why
    return margins_differ(pilot.get("margins"), entry.get("margins"), margin_rtol, margin_atol)


def trains_like(pilot: dict, rows: list[dict], *, seed: int | None = None, rtol: float = RTOL,
                atol: float = ATOL, margin_rtol: float = MARGIN_RTOL,
                margin_atol: float = MARGIN_ATOL) -> tuple[int, str] | None:
    """(id, name) of the first of ``rows`` whose run at the pilot's seed trained like the pilot, or
    None (see the module docstring for the criterion).

    ``pilot``: the candidate's first finished seed, a ``TrainResult.to_dict()`` (its seed from
    ``pilot["seed"]``, as :func:`discovery.training.train_seeds` adds it, else its config, else
    ``seed``); ``rows``: earlier archive rows (dicts with ``id``, ``name``, ``status`` and
    ``metrics["per_seed"]`` entries carrying ``margins``; not the candidate's own row), in the order
    to try them. Rows with status ``duplicate`` are skipped (the row they duplicate comes first)."""
    seed = _seed_of(pilot) if seed is None else seed
    if seed is None or pilot.get("status") != "done":
        return None
    for row in rows:
        if row.get("status") == "duplicate":
            continue
        for entry in _entries(row):
            if entry.get("seed") == seed and differs(pilot, entry, rtol=rtol, atol=atol,
                                                     margin_rtol=margin_rtol, margin_atol=margin_atol) is None:
                return int(row["id"]), str(row.get("name"))
    return None

