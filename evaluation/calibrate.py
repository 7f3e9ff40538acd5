"""The noise floor of a campaign's fitness: how large a difference between two losses it can see.

``disco calibrate`` trains the baselines (DPO and IPO by default) on the campaign's settings, seed
by seed (:func:`evaluation.compare.run_grid`), scores the SFT model on the same settings, and
reports for one metric:

* ``within_seed_se``: the evaluation error of one run's metric (the runs' ``<metric>_se``, over
  prompts), the mean over every finished run. Training noise is not in it.
* ``seed_sd``: the sample sd over seeds of one objective's metric (the first objective;
  ``seed_sd_by_objective`` has each): training and evaluation noise together.
* ``paired_sd``: the sample sd over seeds of the per-seed difference first - second objective
  (DPO - IPO). Seed effects shared by both cancel; this is the noise of a comparison.
* ``within_seed_paired_se``: the evaluation part of that difference on one seed: from the per-prompt
  outcomes when both runs report them on the same prompts (sd over prompts of the per-prompt
  difference / sqrt(prompts), mean over seeds), else sqrt(se_a^2 + se_b^2) (independent evaluations).
* ``paired_se``: paired_sd / sqrt(n), n the campaign's seed count (``campaign_seeds``, default
  ``len(CampaignConfig().training.seeds)``): the standard error of a candidate's paired difference
  to DPO in a campaign.
* ``half_width``: z_.975 * paired_se, the 95% half-width of that difference (normal approximation;
  ``half_width_t`` with Student's t on n - 1 degrees of freedom, wider at small n).
* ``min_detectable``: (z_.975 + z_.80) * paired_se, the smallest true difference a two-sided test
  at 5% finds with 80% power.
* ``effect_over_sft``: the first objective's (DPO's) mean per-seed improvement over the SFT model in
  the same metric, and ``half_width_ratio`` = half_width / |effect_over_sft| (issue 10's target:
  <= 0.1).

The SFT model's score on a seed (:data:`SFT_VALUE`): 0.5 for ``win_rate`` (the SFT model against its
own samples), 0 for ``reward_gain`` and the KL metrics (by definition), and for ``reward`` the
runs' ``ref_reward`` (the reference model's gold reward on the same evaluation prompts, mean over
the seed's runs). A metric with no SFT score has ``effect_over_sft`` None and says why.

Every number comes with ``what`` (a sentence saying what it is and from how many seeds, runs and
samples); the dict is JSON as it stands and is what ``fitness.calibration`` of a campaign reads.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Callable, Sequence

import numpy as np

from evaluation.compare import (Run, Setting, describe_evaluation, evaluation_size, jsonable, per_prompt,
                                prompt_set, resolve_objectives, run_grid)

DEFAULT_OBJECTIVES = ("dpo", "ipo")
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
Z_975 = NormalDist().inv_cdf(0.975)   # 1.95996...: two-sided 95%
Z_80 = NormalDist().inv_cdf(0.80)     # 0.84162...: 80% power
SFT_VALUE = {"win_rate": 0.5, "reward_gain": 0.0, "kl": 0.0, "kl_sample": 0.0, "kl_per_token": 0.0,
             "kl_sample_per_token": 0.0, "kl_ref_pi_per_token": 0.0}
SFT_FROM_RUNS = {"reward": "ref_reward"}  # metric -> the runs' key holding the SFT model's score


def campaign_defaults() -> dict:
    """The settings a default campaign trains with (discovery.config.CampaignConfig())."""
    from discovery.config import CampaignConfig
    cfg = CampaignConfig()
    return {"task": cfg.training.task, "beta": cfg.training.beta, "overrides": dict(cfg.training.overrides),
            "metric": cfg.fitness.metric, "campaign_seeds": len(cfg.training.seeds)}


def sft_value(runs: Sequence[Run], metric: str) -> float | None:
    """The SFT model's score in ``metric`` on the runs' (one seed's) setting, or None if unknown."""
    if metric in SFT_VALUE:
        return SFT_VALUE[metric]
    key = SFT_FROM_RUNS.get(metric)
    values = [r.metrics.get(key) for r in runs if key and r.status == "done"]
    values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def _sd(values: Sequence[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _eval_paired_se(a: Run, b: Run, metric: str) -> tuple[float | None, str]:
    """The evaluation error of a - b on one seed, and how it was computed."""
    pa, pb = per_prompt(a.metrics, metric), per_prompt(b.metrics, metric)
    if (pa is not None and pb is not None and pa.shape == pb.shape and pa.size >= 2
            and prompt_set(a.metrics) == prompt_set(b.metrics)):
        return float(np.std(pa - pb, ddof=1) / math.sqrt(pa.size)), "per-prompt"
    sa, sb = a.metrics.get(f"{metric}_se"), b.metrics.get(f"{metric}_se")
    if _finite(sa) and _finite(sb):
        return float(math.hypot(sa, sb)), "independent"
    return None, ""


def noise(runs: Sequence[Run], metric: str, objectives: Sequence[str], *, campaign_seeds: int) -> dict:
    """The calibration numbers (module docstring) from runs of ``objectives`` (labels, first two
    paired) on one setting per seed."""
    if len(objectives) < 2:
        raise ValueError("calibration needs two objectives to pair")
    first, second = objectives[0], objectives[1]
    by_seed: dict[int, dict[str, Run]] = {}
    for r in runs:
        by_seed.setdefault(r.setting.seed, {})[r.objective] = r
    seeds = list(by_seed)
    done = [r for r in runs if r.value(metric) is not None]
    ses = [float(r.metrics[f"{metric}_se"]) for r in done if _finite(r.metrics.get(f"{metric}_se"))]
    samples = describe_evaluation(evaluation_size(runs))

    per_seed, diffs, eval_paired, eval_how, effects = [], [], [], set(), []
    values: dict[str, list[float]] = {o: [] for o in objectives}
    for seed in seeds:
        mine = by_seed[seed]
        row = {"seed": seed, "values": {}, "se": {}, "failed": {}}
        for o in objectives:
            r = mine.get(o)
            v = r.value(metric) if r else None
            if v is None:
                row["failed"][o] = (r.reason if r and r.status != "done" else f"finished without a finite {metric!r}") \
                    if r else "not run"
                continue
            row["values"][o] = v
            values[o].append(v)
            se = r.metrics.get(f"{metric}_se")
            row["se"][o] = float(se) if _finite(se) else None
        row["sft"] = sft_value(list(mine.values()), metric)
        if first in row["values"] and second in row["values"]:
            row["diff"] = row["values"][first] - row["values"][second]
            diffs.append(row["diff"])
            e, how = _eval_paired_se(mine[first], mine[second], metric)
            if e is not None:
                eval_paired.append(e)
                eval_how.add(how)
        if first in row["values"] and row["sft"] is not None:
            row["effect_over_sft"] = row["values"][first] - row["sft"]
            effects.append(row["effect_over_sft"])
        per_seed.append(row)

    n = int(campaign_seeds)
    seed_sd_by = {o: _sd(v) for o, v in values.items()}
    paired_sd = _sd(diffs)
    paired_se = paired_sd / math.sqrt(n) if paired_sd is not None else None
    half_width = Z_975 * paired_se if paired_se is not None else None
    half_width_t = None
    if paired_se is not None and n >= 2:
        from scipy.stats import t
        half_width_t = float(t.ppf(0.975, n - 1) * paired_se)
    min_detectable = (Z_975 + Z_80) * paired_se if paired_se is not None else None
    effect = float(np.mean(effects)) if effects else None
    ratio = half_width / abs(effect) if half_width is not None and effect else None
    within_paired = float(np.mean(eval_paired)) if eval_paired else None

    k, m = len(diffs), len(values[first])
    seeds_word = lambda c: f"{c} seed{'s' if c != 1 else ''}"  # noqa: E731
    sft_how = (f"SFT's {metric} is {SFT_VALUE[metric]:g} by construction" if metric in SFT_VALUE else
               f"SFT's {metric} is the runs' {SFT_FROM_RUNS[metric]} (the reference model on the same prompts)"
               if metric in SFT_FROM_RUNS else "")
    notes = []
    if k < 2:
        notes.append(f"only {seeds_word(k)} where both {first} and {second} finished: no paired sd; add seeds")
    elif k < 5:
        notes.append(f"the paired sd is from {seeds_word(k)} only: itself uncertain by about "
                     f"{100 / math.sqrt(2 * (k - 1)):.0f}% (sd of a sample sd, normal data); add seeds")
    if effect is None:
        notes.append(f"no SFT score known for {metric!r}: effect_over_sft and half_width_ratio are not computed")
    what = {
        "within_seed_se": f"evaluation standard error of one run's {metric} (the runs' {metric}_se over prompts), "
                          f"mean over {len(ses)} runs{'; ' + samples if samples else ''}; training noise not included",
        "seed_sd": f"sample sd over {seeds_word(m)} of {first}'s {metric} (training and evaluation noise together)",
        "paired_sd": f"sample sd over {seeds_word(k)} of the per-seed difference {first} - {second}",
        "within_seed_paired_se": "evaluation part of the per-seed difference on one seed, mean over seeds: "
                                 + ("sd over prompts of the per-prompt difference / sqrt(prompts)"
                                    if eval_how == {"per-prompt"} else
                                    "sqrt(se_a^2 + se_b^2), evaluations taken as independent"
                                    if eval_how == {"independent"} else "mixed per-prompt and independent"
                                    if eval_how else "not available"),
        "paired_se": f"standard error of a paired difference at the campaign's {seeds_word(n)}: paired_sd / sqrt({n})",
        "half_width": f"95% half-width of that difference: {Z_975:.3f} x paired_se (normal approximation)",
        "half_width_t": f"the same with Student's t on {n - 1} degrees of freedom" if n >= 2 else
                        "needs a campaign of >= 2 seeds",
        "min_detectable": f"smallest detectable difference, 95% two-sided test with 80% power: "
                          f"({Z_975:.3f} + {Z_80:.3f}) x paired_se",
        "effect_over_sft": f"{first}'s mean improvement over the SFT model, over {seeds_word(len(effects))}"
                           + (f"; {sft_how}" if sft_how else ""),
        "half_width_ratio": "half_width / |effect_over_sft| (issue 10's target: <= 0.1)",
    }
    return jsonable({
        "metric": metric, "objectives": list(objectives), "paired": [first, second],
        "seeds": seeds, "n_seeds": len(seeds), "n_paired_seeds": k, "campaign_seeds": n,
        "evaluation": evaluation_size(runs),
        "within_seed_se": float(np.mean(ses)) if ses else None, "n_runs": len(done),
        "seed_sd": seed_sd_by[first], "seed_sd_by_objective": seed_sd_by,
        "paired_mean": float(np.mean(diffs)) if diffs else None, "paired_sd": paired_sd,
        "within_seed_paired_se": within_paired, "paired_se": paired_se,
        "half_width": half_width, "half_width_t": half_width_t, "min_detectable": min_detectable,
        "z": {"0.975": Z_975, "0.80": Z_80},
        "effect_over_sft": effect, "sft_mean": (float(np.mean([r["sft"] for r in per_seed if r["sft"] is not None]))
                                                if any(r["sft"] is not None for r in per_seed) else None),
        "half_width_ratio": ratio, "per_seed": per_seed, "what": what, "notes": notes,
    })


def calibrate(task: str | None = None, seeds: Sequence[int] = DEFAULT_SEEDS, overrides: tuple = (),
              metric: str | None = None, *, objectives: Sequence[str] = DEFAULT_OBJECTIVES,
              beta: float | None = None, campaign_seeds: int | None = None, runner=None,
              out_dir: str | None = None, log: Callable[[str], None] | None = None, **runner_kwargs) -> dict:
    """Train ``objectives`` on every seed of the campaign's settings and return :func:`noise`'s dict
    with the settings (task, beta, overrides) added. ``None`` means the default campaign's value
    (:func:`campaign_defaults`); ``overrides`` go over the campaign's training overrides."""
    defaults = campaign_defaults()
    task = task or defaults["task"]
    metric = metric or defaults["metric"]
    beta = defaults["beta"] if beta is None else beta
    campaign_seeds = defaults["campaign_seeds"] if campaign_seeds is None else campaign_seeds
    merged = tuple(sorted({**defaults["overrides"], **dict(overrides)}.items()))
    specs = resolve_objectives(list(objectives), baselines=())
    if len(specs) < 2:
        raise ValueError("calibration needs two different objectives to pair (e.g. --objectives dpo ipo)")
    settings = [Setting(seed=int(s), task=task, beta=beta, overrides=merged) for s in seeds]
    runs = run_grid(specs, settings, runner=runner, out_dir=out_dir, log=log, **runner_kwargs)
    result = noise(runs, metric, list(specs), campaign_seeds=campaign_seeds)
    failures = [{"objective": r.objective, "seed": r.setting.seed, "reason": r.reason}
                for r in runs if r.status != "done"]
    return jsonable({"command": "calibrate", "task": task, "beta": beta, "overrides": dict(merged),
                     **result, "failures": failures,
                     "seconds": {"total": sum(r.seconds for r in runs), "per_run": (sum(r.seconds for r in runs)
                                                                                    / len(runs)) if runs else None}})


def format_calibration(d: dict, digits: int = 4) -> str:
    """The calibration as labelled lines (each number with what it is and from what)."""
    def num(v, signed=False):
        return "—" if v is None else (f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}")

    first, second = d["paired"]
    n = d["campaign_seeds"]
    setting = ", ".join(f"{k}={v}" for k, v in d.get("overrides", {}).items())
    beta = d.get("beta")
    samples = describe_evaluation(d.get("evaluation") or {})
    head = (f"noise floor of {d['metric']} on {d.get('task', '?')} (beta {'default' if beta is None else f'{beta:g}'}"
            + (f"; {setting}" if setting else "") + f"): {', '.join(d['objectives'])} on {d['n_seeds']} seed{'s' if d['n_seeds'] != 1 else ''} "
            f"({' '.join(map(str, d['seeds']))})" + (f"; {samples}" if samples else ""))
    w = d["what"]
    rows = [
        ("within-seed evaluation se", num(d["within_seed_se"]), w["within_seed_se"]),
        (f"seed-to-seed sd ({first})", num(d["seed_sd"]), w["seed_sd"]),
        (f"paired sd ({first} - {second})", num(d["paired_sd"]),
         w["paired_sd"] + (f"; mean difference {num(d['paired_mean'], True)}" if d["paired_mean"] is not None else "")),
        ("  of which evaluation (one seed)", num(d["within_seed_paired_se"]), w["within_seed_paired_se"]),
        (f"paired se at {n} campaign seed{'s' if n != 1 else ''}", num(d["paired_se"]), w["paired_se"]),
        ("95% half-width", num(d["half_width"]), w["half_width"]
         + (f"; with t: {num(d['half_width_t'])}" if d["half_width_t"] is not None else "")),
        ("smallest detectable difference", num(d["min_detectable"]), w["min_detectable"]),
        (f"{first}'s effect over SFT", num(d["effect_over_sft"], True), w["effect_over_sft"]),
        ("half-width / effect", "—" if d["half_width_ratio"] is None else f"{d['half_width_ratio']:.3f}",
         w["half_width_ratio"]),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [head, ""] + [f"{a:<{width}}  {b:>9}  {c}" for a, b, c in rows]
    lines += ["", "per seed (" + d["metric"] + "; ± = that run's within-seed evaluation se):"]
    objs = d["objectives"]
    cols = ["seed"] + objs + [f"{first} - {second}", "SFT"]
    table = []
    for r in d["per_seed"]:
        cells = [str(r["seed"])]
        for o in objs:
            if o in r["values"]:
                se = r["se"].get(o)
                cells.append(num(r["values"][o]) + (f" ± {se:.{digits}f}" if se is not None else ""))
            else:
                cells.append("failed")
        cells += [num(r.get("diff"), True), num(r.get("sft"))]
        table.append(cells)
    widths = [max(len(c) for c in col) for col in zip(cols, *table)]
    fmt = "  ".join(f"{{:<{x}}}" for x in widths)
    lines += [fmt.format(*cols)] + [fmt.format(*c) for c in table]
    lines += [f"note: {x}" for x in d.get("notes", [])]
    lines += [f"failed: {f['objective']} on seed {f['seed']}: {f['reason']}" for f in d.get("failures", [])]
    return "\n".join(lines)
