"""Held-out evaluation: a campaign's best candidates against DPO, IPO and LRML on settings the
search never trained on.

Fitness during a search is measured on a few fixed settings, and choosing the best of many
candidates on them overfits those settings (the winner's curse). Here the top K candidates and the
baselines are retrained on *other* settings (seeds, betas, task variants) and compared with paired
bootstrap intervals (:mod:`evaluation.compare`).

A setting (task variant, beta, seed) counts as *used* when its task variant, its beta and its seed
were all used by the search (the campaign's resolved config, :func:`evaluation.campaign.used_settings`).
Used settings are dropped with a warning unless ``allow_used``; a request made only of used
settings is refused. A held-out setting that shares its seed with the search (a new beta on an old
seed) is kept, with a warning, since the data order is then not new.

Results go to ``DIR/heldout.json``: the pooled table (units resampled within each setting), one
table per setting, every run, and what was used, dropped and warned about. With two or more
candidates, every table also carries each candidate's interval to each baseline corrected for the K
candidates compared with it (Bonferroni intervals, Holm-adjusted p: :func:`evaluation.stats.correct`).

Transfer. Per held-out setting (a task variant and beta, its seeds pooled), and pooled over all of
them when there are several, ``transfer`` says whether the search's ranking holds there: Spearman's
rho and Kendall's tau-b between each objective's search fitness (the archive's, baselines included)
and its mean held-out metric (sign-flipped for a lower-is-better metric such as kl, so that +1 always
means "the same order"), each with a percentile bootstrap interval that resamples the held-out seeds
(:func:`evaluation.stats.rank_correlations`), and the candidates that beat DPO there: a difference
to DPO in the better direction whose Holm-adjusted bootstrap p is below 0.05 over the K candidates
(with K = 1, the plain bootstrap p; nothing to correct).

Judged tasks. A task whose runs only write outputs for a judge (``recipe:tldr``: summaries) has a
post-run judge in :data:`POST_RUN_JUDGES`; each finished run of such a setting is judged right after
it trains (replies cached, by default in ``DIR/heldout/judgments.jsonl``) and the judge's metrics are merged
into the run's, so ``--metric win_rate`` (or ``lc_win_rate``, ``win_rate_vs_sft``) reads them. Such
a task needs ``judge``; a judging error fails that run, with its reason.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from evaluation.campaign import CampaignResults, read_campaign, used_settings
from evaluation.compare import (BASELINES, HIGHER_IS_BETTER, Run, Setting, Table, default_runner, jsonable,
                                run_grid, summarise)
from evaluation.settings import parse_task_variant
from evaluation.stats import Estimate, average_ranks, rank_correlations
from inner_loop.overrides import UserError

HELDOUT_JSON = "heldout.json"
N_DEFAULT_SEEDS = 3
# task -> "module:function(run metrics, judge, cache=...) -> metrics": judged after each finished run
POST_RUN_JUDGES = {"recipe:tldr": "evaluation.tldr:judge_run"}
JUDGE_CACHE = "judgments.jsonl"


class HeldoutError(ValueError):
    """The request cannot give a held-out evaluation (nothing to evaluate, or only used settings)."""


def parse_task(text: str) -> tuple[str, tuple]:
    """``"synthetic:max_completion_len=32,data_seed=7"`` -> (name, sorted overrides)
    (:func:`evaluation.settings.parse_task_variant`, a mistake raised as :class:`HeldoutError`);
    ``"recipe:zephyr-gemma:model=PATH"`` -> ("recipe:zephyr-gemma", (("model", "PATH"),))."""
    try:
        head, colon, rest = text.partition(":")
        if head.strip() == "recipe" and colon:  # a recipe task's name has its own colon: recipe:NAME[:k=v,...]
            recipe, _, pairs = rest.partition(":")
            return f"recipe:{recipe.strip()}", parse_task_variant(f"recipe:{pairs}")[1]
        return parse_task_variant(text)
    except UserError as err:
        raise HeldoutError(str(err)) from None


def plan_settings(used: dict, *, tasks: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
                  betas: Sequence[float] | None = None, overrides: tuple = (), allow_used: bool = False
                  ) -> tuple[list[Setting], list[Setting], list[str]]:
    """(settings to run, used settings dropped, warnings) for the requested grid.

    Every setting starts from the overrides the search used (its training budget), then a task
    variant's own overrides, then ``overrides`` (``--set``): any of them makes a setting new.
    """
    variants = [parse_task(t) for t in tasks] if tasks else [(t, ()) for t in used["tasks"]]
    if seeds is None:
        free = (s for s in itertools.count() if s not in used["seeds"])
        seeds = list(itertools.islice(free, N_DEFAULT_SEEDS))
    if betas is None:
        betas = sorted(used["betas"]) or [None]
    base = dict(used["overrides"])

    def is_used(s: Setting) -> bool:
        beta_used = (s.beta in used["betas"]) if used["betas"] else s.beta is None
        return (s.task in used["tasks"] and s.overrides == tuple(used["overrides"]) and s.seed in used["seeds"]
                and beta_used)

    grid = [Setting(seed=int(seed), task=t, beta=None if b is None else float(b),
                    overrides=tuple(sorted({**base, **dict(o), **dict(overrides)}.items())))
            for (t, o), b, seed in itertools.product(variants, betas, seeds)]
    dropped = [s for s in grid if is_used(s)]
    warnings = []
    if dropped and not allow_used:
        if len(dropped) == len(grid):
            free = list(itertools.islice((s for s in itertools.count() if s not in used["seeds"]), 3))
            raise HeldoutError(
                f"every requested setting was used by the search ({', '.join(s.key for s in dropped)}); "
                f"ask for other seeds (e.g. --seeds {' '.join(map(str, free))}), betas or task variants, "
                "or pass --allow-used to evaluate in-sample on purpose")
        warnings.append(f"dropped {len(dropped)} setting(s) the search used: {', '.join(s.key for s in dropped)}")
        grid = [s for s in grid if not is_used(s)]
    elif dropped:
        warnings.append(f"--allow-used: {len(dropped)} setting(s) were used by the search and are in-sample: "
                        f"{', '.join(s.key for s in dropped)}")
        dropped = []
    old_seeds = sorted({s.seed for s in grid} & used["seeds"])
    if old_seeds:
        warnings.append(f"seed(s) {', '.join(map(str, old_seeds))} were used by the search: those settings are "
                        "held out only in their beta or task variant")
    return grid, dropped, warnings


@dataclasses.dataclass
class HeldoutResult:
    path: Path
    metric: str
    candidates: list[dict]              # id, name, label, fitness of the evaluated candidates
    used: dict
    settings: list[Setting]
    dropped: list[Setting]
    warnings: list[str]
    table: Table                        # pooled over every held-out setting
    per_setting: dict[str, Table]       # one table per setting (seeds pooled)
    runs: list[Run]
    search_metric: str = ""             # the campaign's fitness metric (the search ranking)
    transfer: dict[str, dict] = dataclasses.field(default_factory=dict)  # stratum (or POOLED) -> transfer()

    def to_dict(self) -> dict:
        return jsonable({
            "command": "heldout", "metric": self.metric, "candidates": self.candidates,
            "used": {"tasks": self.used["tasks"], "overrides": dict(self.used["overrides"]),
                     "seeds": sorted(self.used["seeds"]), "betas": sorted(self.used["betas"])},
            "settings": [s.to_dict() for s in self.settings], "dropped": [s.to_dict() for s in self.dropped],
            "warnings": self.warnings, "table": self.table.to_dict(),
            "per_setting": {k: t.to_dict() for k, t in self.per_setting.items()},
            "runs": [r.to_dict() for r in self.runs],
            "search_metric": self.search_metric, "transfer": self.transfer})


def evaluate_heldout(directory: str | Path, *, top: int = 3, tasks: Sequence[str] | None = None,
                     seeds: Sequence[int] | None = None, betas: Sequence[float] | None = None,
                     metric: str | None = None, allow_used: bool = False, overrides: tuple = (),
                     runner=None, log: Callable[[str], None] | None = None, n_boot: int = 10_000,
                     reader: Callable[[str | Path], CampaignResults] = read_campaign, judge=None,
                     judge_cache: str | Path | None = None, **runner_kwargs) -> HeldoutResult:
    """Retrain the top ``top`` candidates and the baselines on held-out settings; write heldout.json.
    ``judge``: an :class:`evaluation.judge.Judge` for the settings whose task is judged (module docstring),
    its replies cached in ``judge_cache`` (default ``DIR/heldout/judgments.jsonl``)."""
    campaign = reader(directory)
    best = campaign.top(top)
    if not best:
        raise HeldoutError(f"{directory}: no finished candidate with a fitness to evaluate")
    metric = metric or campaign.metric
    used = used_settings(campaign.config)
    settings, dropped, warnings = plan_settings(used, tasks=tasks, seeds=seeds, betas=betas, overrides=overrides,
                                                allow_used=allow_used)
    for w in warnings:
        (log or print)(f"warning: {w}")

    objectives: dict[str, str] = {}
    candidates = []
    for row in best:
        label = f"{row['name']}#{row['id']}"
        objectives[label] = row["code"]
        candidates.append({"id": row["id"], "name": row["name"], "label": label, "fitness": row.get("fitness"),
                           "fitness_se": row.get("fitness_se")})
    for b in BASELINES:
        objectives[b] = b

    out = Path(directory)
    if runner_kwargs.get("executor") is not None and any(s.task in POST_RUN_JUDGES for s in settings):
        raise HeldoutError("a judged task (recipe:tldr) runs in this process, not through --executor: "
                           "drop --executor, or judge the runs afterwards with `disco eval tldr`")
    runner = with_judges(runner, settings, judge, judge_cache or out / "heldout" / JUDGE_CACHE)
    runs = run_grid(objectives, settings, runner=runner, out_dir=out / "heldout", log=log, **runner_kwargs)
    labels = [c["label"] for c in candidates]  # the family corrected for multiplicity: the top K, not the baselines
    table = summarise(runs, metric, baselines=BASELINES, n_boot=n_boot, candidates=labels)
    per_setting = {}
    for stratum in dict.fromkeys(s.stratum for s in settings):
        per_setting[stratum] = summarise([r for r in runs if r.setting.stratum == stratum], metric,
                                         baselines=BASELINES, n_boot=n_boot, candidates=labels)
    search = {c["label"]: c["fitness"] for c in candidates}
    search.update({r["name"]: r.get("fitness") for r in campaign.baselines() if r.get("name") in BASELINES})
    transfers = {k: transfer(runs, k, t, search, metric, candidates=labels, n_boot=n_boot)
                 for k, t in per_setting.items()}
    if len(per_setting) > 1:
        transfers[POOLED] = transfer(runs, None, table, search, metric, candidates=labels, n_boot=n_boot)
    result = HeldoutResult(path=out / HELDOUT_JSON, metric=metric, candidates=candidates, used=used,
                           settings=settings, dropped=dropped, warnings=warnings, table=table,
                           per_setting=per_setting, runs=runs, search_metric=campaign.metric,
                           transfer=transfers)
    result.path.write_text(json.dumps(result.to_dict(), indent=1))
    return result


def with_judges(runner, settings: Sequence[Setting], judge, cache_path: Path):
    """``runner`` (None: the default one), its finished runs of a judged task judged after training
    (:data:`POST_RUN_JUDGES`); unchanged when no setting's task is judged. A :class:`HeldoutError`
    when one is and there is no ``judge``."""
    judged = sorted({s.task for s in settings if s.task in POST_RUN_JUDGES})
    if not judged:
        return runner
    if judge is None:
        raise HeldoutError(f"{', '.join(judged)} is scored by an LLM judge: pass --judge-base-url URL and "
                           "--judge-model MODEL (and --judge-api-key-env VAR for a key)")
    from evaluation.judge import JudgmentCache
    base, cache = runner or default_runner(), JudgmentCache(cache_path)

    def run(spec, *, task, **kwargs):
        result = base(spec, task=task, **kwargs)
        d = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        if task not in POST_RUN_JUDGES or d.get("status") != "done":
            return result
        module, _, name = POST_RUN_JUDGES[task].partition(":")
        metrics = dict(d.get("metrics") or {})
        metrics.update(getattr(importlib.import_module(module), name)(metrics, judge, cache=cache))
        return {**d, "metrics": metrics}
    return run


POOLED = "all settings"


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def beats_dpo(table: Table, candidates: Sequence[str]) -> tuple[list[str], str]:
    """(the candidates that beat DPO in ``table`` after the multiple-comparison correction, how decided)."""
    higher = HIGHER_IS_BETTER.get(table.metric, True)
    winners = []
    family = table.families.get("dpo")
    for r in table.rows:
        if r.objective not in candidates:
            continue
        e = r.vs.get("dpo")
        if not isinstance(e, Estimate) or (e.mean > 0) != higher or e.mean == 0:
            continue
        p = r.corrected["dpo"].p_holm if "dpo" in r.corrected else e.p_value
        if p is not None and p < 0.05:
            winners.append(r.objective)
    how = (f"Holm-adjusted bootstrap p < 0.05 over the {len(family)} candidates compared with DPO" if family
           else "bootstrap p < 0.05 (one candidate: nothing to correct)")
    return winners, how


def transfer(runs: Sequence[Run], stratum: str | None, table: Table, search: dict, metric: str, *,
             candidates: Sequence[str], n_boot: int = 10_000) -> dict:
    """Does the search ranking hold on held-out setting ``stratum`` (None: every setting, seeds
    resampled within each)? Rank correlations of the search fitness with the held-out mean, the
    objectives behind them, and the candidates that beat DPO there (module docstring)."""
    mine = [r for r in runs if stratum is None or r.setting.stratum == stratum]
    units = sorted({r.setting for r in mine}, key=lambda s: s.key)
    sign = -1.0 if HIGHER_IS_BETTER.get(metric) is False else 1.0
    labels, excluded, matrix = [], [], []
    for label in dict.fromkeys(r.objective for r in mine):
        values = {r.setting: r.value(metric) for r in mine if r.objective == label}
        row = [sign * values[u] if values.get(u) is not None else math.nan for u in units]
        if not _finite(search.get(label)):
            excluded.append({"objective": label, "why": "no search fitness in the archive"})
        elif all(math.isnan(v) for v in row):
            excluded.append({"objective": label, "why": "no finished held-out run"})
        else:
            labels.append(label)
            matrix.append(row)
    out: dict = {"setting": stratum or POOLED, "metric": metric, "oriented": sign < 0, "n_seeds": len(units),
                 "seeds": [u.seed for u in units], "excluded": excluded}
    if labels:
        y = np.array(matrix)
        x = np.array([float(search[lab]) for lab in labels])
        corr = rank_correlations(x, y, strata=[u.stratum for u in units], n_boot=n_boot)
        means = np.nanmean(y, axis=1)
        search_rank, heldout_rank = average_ranks(-x), average_ranks(-means)
        out["objectives"] = [{"objective": lab, "kind": "candidate" if lab in candidates else "baseline",
                              "search_fitness": float(x[i]), "search_rank": float(search_rank[i]),
                              "heldout_mean": float(sign * means[i]), "heldout_rank": float(heldout_rank[i]),
                              "n_done": int(np.isfinite(y[i]).sum())} for i, lab in enumerate(labels)]
        out.update({k: c.to_dict() for k, c in corr.items()})
    else:
        out["objectives"] = []
    out["beats_dpo"], out["beats_dpo_what"] = beats_dpo(table, candidates)
    return jsonable(out)


def format_transfer(transfers: dict, *, search_metric: str = "") -> str:
    """The transfer block as the terminal shows it (from ``HeldoutResult.to_dict()["transfer"]``)."""
    if not transfers:
        return ""
    first = next(iter(transfers.values()))
    metric = first["metric"]
    out = [f"does the search ranking transfer? rank correlation between the search fitness"
           f"{' (' + search_metric + ', from the archive)' if search_metric else ''} and the held-out mean "
           f"{metric}{' (negated: lower is better)' if first.get('oriented') else ''}, per held-out setting; "
           "+1: the same order, -1: reversed"]
    for key, t in transfers.items():
        out.append("")
        out.append(f"setting {key} ({t['n_seeds']} held-out seed/setting units):")
        if t["objectives"]:
            ranks = ", ".join(f"{o['objective']} {o['search_rank']:g}->{o['heldout_rank']:g}" for o in t["objectives"])
            out.append(f"  rank search->held-out: {ranks}")
        for method in ("spearman", "kendall"):
            if method in t:
                out.append(f"  {t[method]['text']}")
        if t.get("spearman", {}).get("note"):
            out.append(f"  note: {t['spearman']['note']}")
        for e in t.get("excluded", []):
            out.append(f"  left out: {e['objective']} ({e['why']})")
        out.append(f"  beat DPO ({t['beats_dpo_what']}): " + (", ".join(t["beats_dpo"]) or "none"))
    out.append("")
    out.append("CI: percentile bootstrap resampling the held-out seeds (the same draw for every objective), "
               "the search fitness held fixed")
    return "\n".join(out)
