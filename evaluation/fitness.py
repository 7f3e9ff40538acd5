"""A campaign's fitness: the options, and the LLM judges (MT-Bench score or AlpacaEval win rate of
the kept policy) that live here.

A campaign's fitness is one number per candidate, from its per-seed training results
(``results``: one :meth:`~inner_loop.runner.TrainResult.to_dict` per seed), with a standard error.
The ``fitness`` section of :class:`discovery.config.CampaignConfig` chooses it:

``function: mean_metric`` (the default; :func:`discovery.seams.mean_metric`)
    the mean over seeds of the per-seed metric ``fitness.metric`` that the task's scorer reports
    (the embedded task: ``win_rate`` against the SFT model, ``reward``, ``reward_gain`` = policy
    reward minus the SFT reference's on the same prompts, ...; each defined in
    :mod:`inner_loop.glossary`). Its standard error is the spread across seeds with several seeds;
    with one seed it is the run's own ``<metric>_se``: the within-seed evaluation error, training
    noise not included.
``kl_budget: K`` (with ``kl_betas``, default 0.05 0.1 0.2 0.5): fitness at matched KL
    every seed trains once per beta of the sweep (:func:`inner_loop.matched_kl.run_matched_kl`
    becomes the campaign's train seam), and the per-seed metric is the gold reward the loss reaches
    at KL(pi||pi_ref) = K (summed over completion tokens), read off by linear interpolation between
    the two runs that bracket K (the highest crossing when KL is not monotone in beta); a budget
    outside the measured KL range fails the seed (no extrapolation). ``fitness.metric`` defaults
    to ``reward_at_kl``; ``reward_gain_at_kl`` (the same, minus the SFT reference's reward) is there
    too when the runs report ``reward_gain``. The function is still ``mean_metric`` over seeds. It costs ``len(kl_betas)`` trainings per seed, and does not
    reward a loss merely for moving further from the reference than DPO does at the same beta (the
    DPO paper's reward-vs-KL protocol, which DiscoPOP's IMDb experiment follows). Each seed's
    ``result.config`` names the KL key and the interpolation rule.
``function: mt_bench`` or ``function: alpaca_eval``: a judge of :data:`JUDGES` (below)
    an LLM grades each seed's kept policy; needs a task that keeps its policy (``recipe:<name>``).

The campaign records which of these it used (its archive's config, and the header of status and
report). The rest of this module is the judges.

:data:`JUDGES` names them ``"mt_bench"`` and ``"alpaca_eval"``; :func:`discovery.seams.fitness_function`
looks a campaign's ``fitness.function`` up there (the one place :mod:`discovery` reaches
:mod:`evaluation`; nothing here imports :mod:`discovery`). Each is a fitness function
``(results, config) -> (fitness, se)`` with a ``check_config(config)`` that the campaign runs
before anything trains; ``config`` is a :class:`discovery.config.CampaignConfig`, whose
``fitness.judge`` section says which judge grades and on what. ``results`` holds one
:meth:`~inner_loop.runner.TrainResult.to_dict` per training seed, and each must carry
``metrics["model_dir"]``, a ``from_pretrained`` folder (tasks ``recipe:<name>`` keep one; see
:mod:`inner_loop.recipe_task`). For every seed the policy answers the benchmark on this machine
(GPU when there is one), the judge named in the config grades the answers, and the files land next
to the model, in the candidate's folder::

    candidates/<id>-<name>/seed-<k>/mt_bench/      answers.jsonl, judgments.jsonl, judge_cache.jsonl, summary.json
    candidates/<id>-<name>/seed-<k>/alpaca_eval/   model_outputs.json, annotations.json, judge_cache.jsonl, leaderboard.json

Fitness is the mean over seeds of the per-seed MT-Bench score (1-10) or AlpacaEval win rate
(0-100); its standard error is the spread across seeds when there are several, else across
questions (MT-Bench: per question, the mean of its judged turns) or instructions (AlpacaEval's own
``standard_error``). Failed judgments (HTTP errors, timeouts, unparseable replies) are counted in
``summary.json`` / ``leaderboard.json`` and the log, never averaged in; a seed with no judgment
left fails the candidate with the reason. The judge's API key is read from the environment
variable the config names (``fitness.judge.api_key_env``) when the judge is built, and written nowhere.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import statistics
from collections import defaultdict
from pathlib import Path

from typing import Callable

from evaluation import alpaca, mt_bench
from evaluation.judge import JudgmentCache, OpenAIJudge
from objectives.registry import Registry

log = logging.getLogger("discovery")

DEFAULT_JUDGE_URL = "https://api.openai.com/v1"
JUDGE_PARALLEL = 4        # concurrent MT-Bench judge requests


# -- shared pieces --------------------------------------------------------------------------------

def make_judge(config) -> OpenAIJudge:
    """The judge of ``config.fitness.judge`` (its key is read from the environment here)."""
    judge = config.fitness.judge
    return OpenAIJudge(base_url=judge.base_url or DEFAULT_JUDGE_URL, model=judge.model,
                       api_key_env=judge.api_key_env, timeout=judge.request_timeout,
                       max_retries=judge.max_retries)


def load_policy(model_dir: str):
    """(model, tokenizer) from a kept policy: bf16 on a GPU when it supports it, float32 on CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to("cuda" if cuda else "cpu").eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


def _generate(model_dir: Path, generate):
    """``generate(model, tokenizer)`` with the kept policy loaded, then freed before returning, so
    the next seed's policy never shares the device with this one."""
    import torch
    model, tokenizer = load_policy(str(model_dir))
    try:
        return generate(model, tokenizer)
    finally:
        del model, tokenizer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _model_dirs(results: list[dict]) -> list[tuple[int, Path]]:
    out = []
    for r in results:
        model_dir = (r.get("metrics") or {}).get("model_dir")
        if not model_dir or not Path(model_dir).is_dir():
            raise ValueError(f"seed {r.get('seed')}: no kept model (metrics.model_dir={model_dir!r}); a judge "
                             "fitness needs a task that keeps its policy, e.g. task: recipe:zephyr-gemma")
        out.append((int(r.get("seed", len(out))), Path(model_dir)))
    if not out:
        raise ValueError("no training results to score")
    return out


def _model_id(model_dir: Path) -> str:
    """``<candidate folder>/<seed folder>``: names the answers and keys the judge cache."""
    return f"{model_dir.parent.parent.name}/{model_dir.parent.name}"


def _combine(values: list[float], within_se: float | None) -> tuple[float, float | None]:
    """Mean over seeds; SE across seeds, or the single seed's own SE."""
    if len(values) > 1:
        return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))
    se = within_se if within_se is not None and math.isfinite(within_se) else None
    return values[0], se


def judge_each_seed(models: list[tuple[int, Path]], config, folder: str, generate: Callable, items: list,
                    score: Callable) -> tuple[float, float | None]:
    """Per seed: the kept policy answers ``items`` (``generate(model, tokenizer, items, model_id,
    max_new_tokens=, seed=)``), then ``score(judge, seed, out, answers) -> (value, se)`` grades them
    into ``out``, the seed folder's ``folder``; the mean over seeds (:func:`_combine`)."""
    judge = make_judge(config)
    values, ses = [], []
    for seed, model_dir in models:
        out = model_dir.parent / folder
        out.mkdir(parents=True, exist_ok=True)
        answers = _generate(model_dir, lambda model, tokenizer: generate(
            model, tokenizer, items, _model_id(model_dir), max_new_tokens=config.fitness.judge.max_new_tokens,
            seed=seed))
        value, se = score(judge, seed, out, answers)
        values.append(value)
        ses.append(se)
    return _combine(values, ses[0])


def read_records(path: str | Path) -> list[dict]:
    """A JSON list or a JSONL file of records."""
    text = Path(path).read_text(encoding="utf-8").strip()
    return json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]


# -- MT-Bench -------------------------------------------------------------------------------------

def _questions(config) -> tuple[mt_bench.FastChatData, list[dict]]:
    judge = config.fitness.judge
    data = mt_bench.load_fastchat(judge.fastchat_data)
    wanted = set(judge.mt_bench_questions)
    questions = [q for q in data.questions if not wanted or q["question_id"] in wanted]
    missing = wanted - {q["question_id"] for q in questions}
    if missing:
        raise ValueError(f"mt_bench_questions not in {judge.fastchat_data}: {sorted(missing)}")
    return data, questions


def question_se(judgments: list[mt_bench.Judgment]) -> float | None:
    """SE of the score across questions (a question's turns averaged first: they are not independent)."""
    by_question = defaultdict(list)
    for j in judgments:
        if j.score is not None:
            by_question[j.question_id].append(j.score)
    means = [statistics.fmean(v) for v in by_question.values()]
    return statistics.stdev(means) / math.sqrt(len(means)) if len(means) > 1 else None


def mt_bench_fitness(results: list[dict], config) -> tuple[float, float | None]:
    """Mean MT-Bench score (FastChat single-answer grading, 1-10) of the seeds' kept policies."""
    models = _model_dirs(results)
    data, questions = _questions(config)

    def score(judge, seed: int, out: Path, answers: list[dict]) -> tuple[float, float | None]:
        mt_bench.write_jsonl(out / "answers.jsonl", answers)
        judgments = mt_bench.judge_answers(judge, data, answers, JudgmentCache(out / "judge_cache.jsonl"),
                                           parallel=JUDGE_PARALLEL)
        mt_bench.write_jsonl(out / "judgments.jsonl", mt_bench.judgment_rows(judgments))
        summary = mt_bench.summarise(judgments)
        summary["question_se"] = question_se(judgments)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        log.info("MT-Bench seed %d: score %s from %d turns, %d failed %s", seed, summary["score"],
                 summary["n_judged"], summary["n_failed"], summary["failures"])
        if summary["score"] is None:
            raise ValueError(f"seed {seed}: all {summary['n_failed']} MT-Bench judgments failed "
                             f"{summary['failures']}: {_first_reason(judgments)}")
        return summary["score"], summary["question_se"]

    return judge_each_seed(models, config, "mt_bench", mt_bench.generate_answers, questions, score)


def _first_reason(judgments) -> str:
    return next((f"{j.failure}: {j.reason}"[:300] for j in judgments if j.failure), "")


def check_mt_bench(config) -> None:
    fastchat_data = config.fitness.judge.fastchat_data
    if not fastchat_data:
        raise ValueError("fitness mt_bench needs fastchat_data: FastChat's llm_judge/data folder")
    if not Path(fastchat_data, "mt_bench", "question.jsonl").is_file():
        raise ValueError(f"fastchat_data {fastchat_data!r} has no mt_bench/question.jsonl")
    _questions(config)


mt_bench_fitness.check_config = check_mt_bench


# -- AlpacaEval -----------------------------------------------------------------------------------

def _alpaca_inputs(config) -> tuple[list[dict], list[dict]]:
    """(instruction rows, reference outputs): the instructions default to the reference's."""
    judge = config.fitness.judge
    reference = read_records(judge.alpaca_reference)
    rows = read_records(judge.alpaca_instructions) if judge.alpaca_instructions else reference
    instructions = [{"instruction": r["instruction"], "dataset": r.get("dataset")} for r in rows]
    known = {r["instruction"] for r in reference}
    missing = [r["instruction"][:60] for r in instructions if r["instruction"] not in known]
    if missing:
        raise ValueError(f"{len(missing)} instruction(s) without a reference output, e.g. {missing[0]!r}")
    return instructions, reference


def alpaca_eval_fitness(results: list[dict], config) -> tuple[float, float | None]:
    """Mean AlpacaEval win rate (0-100, weighted by the judge's log-probs) against the reference."""
    models = _model_dirs(results)
    instructions, reference = _alpaca_inputs(config)

    def score(judge, seed: int, out: Path, outputs: list[dict]) -> tuple[float, float | None]:
        alpaca.write_model_outputs(out / "model_outputs.json", outputs)
        annotations = alpaca.annotate(judge, alpaca.pair_outputs(outputs, reference),
                                      config.fitness.judge.alpaca_judge_prompt, JudgmentCache(out / "judge_cache.jsonl"))
        (out / "annotations.json").write_text(json.dumps(annotations, indent=2, ensure_ascii=False))
        failures: dict[str, int] = {}
        for a in annotations:
            if a.get("failure"):
                failures[a["failure"]] = failures.get(a["failure"], 0) + 1
        judged = [a["preference"] for a in annotations if a.get("preference") is not None]
        if not judged:
            reason = next((f"{a['failure']}: {a.get('reason', '')}"[:300] for a in annotations), "")
            raise ValueError(f"seed {seed}: all {len(annotations)} AlpacaEval judgments failed {failures}: {reason}")
        row = alpaca.winrate_metrics(judged)
        row.update(n_failed=len(annotations) - len(judged), failures=failures,
                   avg_length=alpaca.avg_length([o["output"] for o in outputs]))
        (out / "leaderboard.json").write_text(json.dumps(row, indent=2))
        log.info("AlpacaEval seed %d: win rate %.2f ± %.2f from %d, %d failed %s", seed, row["win_rate"],
                 row["standard_error"], row["n_total"], row["n_failed"], failures)
        return row["win_rate"], row["standard_error"]

    return judge_each_seed(models, config, "alpaca_eval", alpaca.generate_outputs, instructions, score)


def check_alpaca_eval(config) -> None:
    judge = config.fitness.judge
    if not judge.alpaca_reference:
        raise ValueError("fitness alpaca_eval needs alpaca_reference: reference outputs in alpaca_eval's format")
    _alpaca_inputs(config)
    try:
        prompt = alpaca.find_prompt(judge.alpaca_judge_prompt)
    except FileNotFoundError as err:
        raise ValueError(f"fitness alpaca_eval: {err} (or set alpaca_judge_prompt)") from None
    if not prompt.is_file():
        raise ValueError(f"alpaca_judge_prompt {str(prompt)!r} is not a file")


alpaca_eval_fitness.check_config = check_alpaca_eval

# The judges a campaign's fitness.function may name (discovery.seams.fitness_function looks them up)
JUDGES: Registry[Callable] = Registry("judge fitness")
JUDGES.register("mt_bench", mt_bench_fitness)
JUDGES.register("alpaca_eval", alpaca_eval_fitness)
