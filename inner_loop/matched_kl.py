"""Fitness at matched KL: the gold reward a loss reaches at a given KL budget (the DPO paper's
reward-vs-KL protocol, which DiscoPOP's IMDb experiment also follows).

A loss that moves further from the reference than DPO at the same beta can look better at that beta
only because it spent more KL. :func:`run_matched_kl` trains one run per beta of a small sweep
(each through :func:`inner_loop.runner.run_candidate`, into ``out_dir/beta-<b>/``), measures each
run's gold ``reward`` and ``kl``, and reads off the reward at ``KL = kl_budget`` by linear
interpolation between measured points, for one training seed. The campaign calls it once per seed,
as its train seam, when ``fitness.kl_budget`` is set.

The KL is the run's ``metrics["kl"]``: KL(pi||pi_ref) of whole completions, summed over completion
tokens (exact per token along the policy's own samples; see :mod:`inner_loop.metrics`), averaged
over the held-out samples.

Interpolation rule (:func:`reward_at`), also written into ``result.config["interpolation"]``:
the successful runs, in increasing beta, form a path in the (KL, reward) plane; each pair of
beta-neighbours is joined by a straight line (linear in KL). The reward at the budget is the
**highest** point where that path crosses ``KL = kl_budget`` (the upper envelope of the beta path).
When KL falls monotonically with beta (the usual case) the path crosses once, and this is plain
linear interpolation between the two measured points that bracket the budget on the points sorted
by KL. When it does not (noise, or an objective whose KL is not monotone in beta) the path can
cross the budget several times; the loss does reach the best of those rewards at that KL with some
beta in the swept range, so the highest crossing is taken (not the pair nearest in beta, which would
depend on where the betas happen to lie). A segment whose two ends have the same KL equal to the
budget counts as its better end. A failed beta run is left out of the path (its neighbours are
joined). There is no extrapolation: a budget outside [min KL, max KL] of the successful runs, or
fewer runs than that leaves a bracket, is a failed result whose reason says so.

Result (a :class:`~inner_loop.train_config.TrainResult`): ``metrics`` holds every key of the run
whose KL is closest to the budget (for reference: its ``win_rate``, ``reward``, ``kl``, ...; and
``reference_beta``, the beta of that run), plus

``reward_at_kl``, ``reward_at_kl_se``
    the interpolated gold reward at the budget; its within-seed evaluation standard error over
    held-out prompts, with the interpolation weights held fixed (KL's own error not included).
``reward_gain_at_kl``, ``reward_gain_at_kl_se``
    the same for ``reward_gain`` (policy reward minus the SFT reference's), when the runs report it.
``kl_budget``, ``kl_key`` (``"kl"``), ``points``
    the budget, the KL metric used, and one ``{beta, kl, reward, reward_gain?, win_rate}`` per
    successful run in beta order; ``failed_betas``: ``{beta, reason}`` per failed run.
``interpolation``
    ``{betas: [b_lo, b_hi], weights: [w_lo, w_hi]}``: the two runs the reward was read between.
``per_prompt``
    the reference run's per-prompt values, plus ``reward_at_kl`` (and ``reward_gain_at_kl``) per
    prompt with the same weights, so paired comparisons by prompt work on the matched-KL fitness.

``losses`` and ``steps`` are those of the reference run; ``seconds`` adds up over all runs (each
key: train, eval, total). ``timeout`` applies to each beta run. The campaign's ``beta`` argument
is ignored (the sweep's ``betas`` replace it); ``result.config`` says so.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from inner_loop.runner import run_candidate
from inner_loop.train_config import TrainResult

DEFAULT_BETAS = (0.05, 0.1, 0.2, 0.5)
KL_KEY = "kl"
KL_MEANING = "KL(pi||pi_ref), summed over completion tokens (exact per token), mean over held-out samples"
RULE = ("linear in KL between beta-neighbouring runs; the highest crossing of KL = kl_budget along the "
        "beta path (upper envelope; with KL monotone in beta: the two points bracketing the budget when "
        "sorted by KL); failed betas left out; no extrapolation")
GAINS = (("reward", "reward_at_kl"), ("reward_gain", "reward_gain_at_kl"))


def beta_folder(beta: float) -> str:
    """``beta-<b>``: the sub-folder of one beta's run (``beta-0.05``, ``beta-0.1``)."""
    return f"beta-{beta:g}"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def reward_at(points: list[dict], kl_budget: float, key: str = "reward") -> dict:
    """The crossing of ``KL = kl_budget`` with the highest ``key`` along ``points`` (dicts with
    ``beta``, ``kl`` and ``key``, taken in increasing beta): ``{"value", "betas": [a, b],
    "weights": [w_a, w_b], "index": (i, j)}``. Raises ValueError (the reason) when the budget is
    outside the points' KL range (or there are none). See the module docstring."""
    pts = sorted(points, key=lambda p: p["beta"])
    if not pts:
        raise ValueError("no successful beta run to interpolate between")
    kls = [p["kl"] for p in pts]
    lo, hi = min(kls), max(kls)
    if not lo <= kl_budget <= hi:
        measured = ", ".join(f"beta {p['beta']:g}: {p['kl']:.4g}" for p in pts)
        raise ValueError(f"kl_budget {kl_budget:g} is outside the measured KL range [{lo:.4g}, {hi:.4g}] "
                         f"({measured}); no extrapolation")
    crossings = []
    for i, p in enumerate(pts):
        if p["kl"] == kl_budget:
            crossings.append((p[key], i, i, 1.0))
    for i in range(len(pts) - 1):
        a, b = pts[i], pts[i + 1]
        if a["kl"] == b["kl"]:
            continue  # equal-KL segment: only on the budget if its ends are, counted above
        if min(a["kl"], b["kl"]) <= kl_budget <= max(a["kl"], b["kl"]):
            w = (b["kl"] - kl_budget) / (b["kl"] - a["kl"])
            crossings.append((w * a[key] + (1 - w) * b[key], i, i + 1, w))
    value, i, j, w = max(crossings, key=lambda c: c[0])  # equal values: the first found
    return {"value": value, "betas": [pts[i]["beta"], pts[j]["beta"]], "weights": [w, 1 - w], "index": (i, j)}


def _per_prompt(runs: list[dict], i: int, j: int, w: float, key: str) -> list[float] | None:
    a = ((runs[i].get("per_prompt") or {}).get(key))
    b = ((runs[j].get("per_prompt") or {}).get(key))
    if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b) or not a:
        return None
    return [w * x + (1 - w) * y for x, y in zip(a, b)]


def run_matched_kl(objective, task: str = "synthetic", beta: float | None = None, seed: int = 0,
                   out_dir: str | None = None, isolation: str = "auto", timeout: float = 600.0,
                   progress: bool = False, kind: str | None = None, betas=DEFAULT_BETAS,
                   kl_budget: float | None = None, **overrides: Any) -> TrainResult:
    """Train ``objective`` once per beta of ``betas`` (seed ``seed``) and return the gold reward it
    reaches at ``KL = kl_budget`` (see the module docstring); ``beta`` is ignored. The other
    arguments go to :func:`~inner_loop.runner.run_candidate` for each run, ``out_dir`` as
    ``out_dir/beta-<b>/``. Never raises for a candidate's failure; raises ValueError for a bad
    ``kl_budget`` or ``betas``."""
    if not _finite(kl_budget) or kl_budget < 0:
        raise ValueError(f"run_matched_kl needs a finite kl_budget >= 0, not {kl_budget!r}")
    sweep = sorted({float(b) for b in betas})
    if len(sweep) < 2 or not all(math.isfinite(b) and b > 0 for b in sweep):
        raise ValueError(f"run_matched_kl needs at least two distinct positive betas, not {tuple(betas)!r}")
    config: dict = {"fitness": "matched_kl", "kl_budget": kl_budget, "betas": sweep, "kl_key": KL_KEY,
                    "kl_meaning": KL_MEANING, "interpolation": RULE, "task": task,
                    "beta_ignored": beta, "beta_note": "the sweep's betas replace the campaign's beta",
                    "timeout_per_run": timeout, "runs": []}
    seconds: dict[str, float] = {}
    runs: list[tuple[float, TrainResult]] = []
    for b in sweep:
        sub = str(Path(out_dir) / beta_folder(b)) if out_dir else None
        r = run_candidate(objective, task=task, beta=b, seed=seed, out_dir=sub, isolation=isolation,
                          timeout=timeout, progress=progress, kind=kind, **overrides)
        runs.append((b, r))
        for k, v in (r.seconds or {}).items():
            if _finite(v):
                seconds[k] = seconds.get(k, 0.0) + float(v)
        config["runs"].append({"beta": b, "status": r.status, "out_dir": sub})
        config.setdefault("objective", (r.config or {}).get("objective"))

    points, metrics_of, failed = [], [], []
    for b, r in runs:
        m = r.metrics or {}
        if not r.ok:
            failed.append({"beta": b, "reason": r.reason or "failed"})
        elif not (_finite(m.get(KL_KEY)) and _finite(m.get("reward"))):
            failed.append({"beta": b, "reason": f"no finite {KL_KEY}/reward in its metrics "
                                                f"({KL_KEY}={m.get(KL_KEY)!r}, reward={m.get('reward')!r})"})
        else:
            point = {"beta": b, "kl": float(m[KL_KEY]), "reward": float(m["reward"])}
            if _finite(m.get("reward_gain")):
                point["reward_gain"] = float(m["reward_gain"])
            point["win_rate"] = m.get("win_rate")
            points.append(point)
            metrics_of.append(m)
    # the reference run: KL closest to the budget (lowest beta of equals); the first run when none measured
    near = min(range(len(points)), key=lambda k: (abs(points[k]["kl"] - kl_budget), k)) if points else None
    reference = dict(runs)[points[near]["beta"]] if points else runs[0][1]

    def fail(reason: str) -> TrainResult:
        if failed:
            reason += "; failed: " + ", ".join(f"beta {f['beta']:g} ({f['reason'][:120]})" for f in failed)
        result = TrainResult(status="failed", reason=" ".join(reason.split())[:1000], losses=list(reference.losses),
                             margins=reference.margins,
                             steps=reference.steps,
                             seconds=seconds, config=config,
                             metrics={"kl_budget": kl_budget, "kl_key": KL_KEY, "points": points,
                                      "failed_betas": failed})
        return _written(result, out_dir)

    if not points:
        return fail(f"matched KL: no beta run finished with a KL and reward (betas {', '.join(f'{b:g}' for b in sweep)})")
    try:
        hit = reward_at(points, kl_budget)
    except ValueError as err:
        return fail(f"matched KL: {err}")

    i, j = hit["index"]
    w = hit["weights"][0]
    metrics = {k: v for k, v in metrics_of[near].items() if k != "per_prompt"}
    per_prompt = dict(metrics_of[near].get("per_prompt") or {})
    for key, out in GAINS:
        if key == "reward":
            value = hit["value"]
        elif key in points[i] and key in points[j]:  # the same crossing and weights as the reward's
            value = w * points[i][key] + (1 - w) * points[j][key]
        else:
            continue
        metrics[out] = value
        rows = _per_prompt(metrics_of, i, j, w, key)
        metrics[f"{out}_se"] = (statistics.stdev(rows) / math.sqrt(len(rows))
                                if rows is not None and len(rows) > 1 else None)
        if rows is not None:
            per_prompt[out] = rows
    metrics.update(kl_budget=kl_budget, kl_key=KL_KEY, reference_beta=points[near]["beta"], points=points,
                   failed_betas=failed, interpolation={"betas": hit["betas"], "weights": hit["weights"]})
    if per_prompt:
        metrics["per_prompt"] = per_prompt
    config["reference_run"] = reference.config
    result = TrainResult(status="done", metrics=metrics, losses=list(reference.losses), steps=reference.steps,
                         margins=reference.margins,
                         seconds=seconds, config=config)
    return _written(result, out_dir)


def _written(result: TrainResult, out_dir: str | None) -> TrainResult:
    """``result`` written as ``out_dir/result.json`` (as run_candidate writes each run's)."""
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "result.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result
