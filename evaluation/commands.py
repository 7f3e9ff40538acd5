"""Subcommands of ``disco`` that belong to evaluation/ (registered by discovery.cli).

``disco eval mt-bench | generate-mt-bench | alpaca | tldr``. Each subcommand is one ``_add_*`` function
that adds its parser; ``register`` calls every function in ``EVAL_SUBCOMMANDS`` under ``disco eval``
and every function in ``TOP_LEVEL`` directly under ``disco``. To add ``heldout``, ``compare`` or
``report``, write an ``_add_*`` function whose handler imports its module lazily and list it in one
of the two tuples. Heavy imports happen inside the handlers so ``disco --help`` stays fast.
"""

from __future__ import annotations

import json


def register(subparsers) -> None:
    """Add this package's subcommands to the ``disco`` parser."""
    p = subparsers.add_parser("eval", help="evaluate a trained model (MT-Bench, AlpacaEval)")
    sub = p.add_subparsers(dest="eval_command", metavar="BENCHMARK")
    sub.required = True
    for add in EVAL_SUBCOMMANDS:
        add(sub)
    for add in TOP_LEVEL:
        add(subparsers)


def judge_flags(p, required: bool) -> None:
    """The judge endpoint's flags (also ``disco heldout``'s, for a task scored by a judge)."""
    p.add_argument("--judge-base-url", required=required,
                   help="an OpenAI-compatible endpoint, e.g. https://api.openai.com/v1")
    p.add_argument("--judge-model", required=required, help="the judge model name at that endpoint")
    p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the API key (default OPENAI_API_KEY)")
    p.add_argument("--judge-timeout", type=float, default=120.0, help="seconds per request (default 120)")
    p.add_argument("--judge-retries", type=int, default=5,
                   help="retries with backoff on 429/5xx/timeouts (default 5)")
    p.add_argument("--cache", help="JSONL cache of judge replies; a rerun reuses it (default: none)")


def _add_mt_bench(sub) -> None:
    p = sub.add_parser("mt-bench", help="grade FastChat-format answers with an LLM judge",
                       description="Exit status 1 when any judgment failed (they are counted, "
                                   "never averaged in); rerun with the same --cache to retry only those.")
    p.add_argument("--answers", required=True, help="FastChat model_answer JSONL")
    p.add_argument("--fastchat-data", required=True,
                   help="FastChat's llm_judge/data folder (judge_prompts.jsonl, mt_bench/...)")
    judge_flags(p, required=True)
    p.add_argument("--parallel", type=int, default=1, help="concurrent judge requests (default 1)")
    p.add_argument("--judgments-out", help="also write every judgment (with failures) as JSONL")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_mt_bench)


def _add_generate_mt_bench(sub) -> None:
    p = sub.add_parser("generate-mt-bench", help="answer MT-Bench's two turns with a local model")
    p.add_argument("--model", required=True, help="a transformers model folder or hub name")
    p.add_argument("--model-id", help="name written into the answers (default: folder name)")
    p.add_argument("--fastchat-data", required=True, help="FastChat's llm_judge/data folder")
    p.add_argument("--out", required=True, help="answer JSONL to write (FastChat's format)")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="per turn (default 1024)")
    p.add_argument("--question-ids", help="comma-separated subset, e.g. 81,82")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (default)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=_generate_mt_bench)


def _add_alpaca(sub) -> None:
    p = sub.add_parser("alpaca", help="AlpacaEval metrics from annotations, or judge outputs first")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--annotations", help="alpaca_eval annotations.json to score")
    src.add_argument("--outputs", help="model_outputs.json (alpaca_eval format) to judge")
    p.add_argument("--reference", help="reference outputs (alpaca_eval format), with --outputs")
    p.add_argument("--annotations-out", help="with --outputs: where to write annotations.json")
    p.add_argument("--judge-prompt", help="judge prompt file (default: the installed alpaca_eval's)")
    p.add_argument("--judge-temperature", type=float, default=1.0,
                   help="judge temperature (default 1, as alpaca_eval's weighted annotator)")
    judge_flags(p, required=False)
    p.add_argument("--instruction-difficulty",
                   help="alpaca_eval's instruction_difficulty.csv: LC from its length_controlled_noreg GLM "
                        "(default: length_controlled_minimal, no download needed either way)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_alpaca)


def _add_tldr(sub) -> None:
    p = sub.add_parser("tldr", help="judge a TL;DR recipe run's summaries against the references and the SFT model",
                       description="Judge the summaries `disco train --recipe tldr --out RUN_DIR` wrote "
                                   "(RUN_DIR/tldr/*.json) pairwise with an LLM judge, against the human-preferred "
                                   "references and against the SFT model's summaries; print win rates and "
                                   "length-controlled win rates and write RUN_DIR/tldr/leaderboard.json. Exit "
                                   "status 1 when any judgment failed (counted, never averaged in); rerun to retry "
                                   "only those (replies are cached in RUN_DIR/tldr/judgments.jsonl by default).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (or its tldr/ folder)")
    judge_flags(p, required=True)
    p.add_argument("--judge-prompt", help="judge prompt file (default: evaluation/prompts/tldr_pairwise.txt)")
    p.add_argument("--judge-temperature", type=float, default=1.0,
                   help="judge temperature (default 1, as alpaca_eval's weighted annotator)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(func=_tldr)


EVAL_SUBCOMMANDS = (_add_mt_bench, _add_generate_mt_bench, _add_alpaca, _add_tldr)
TOP_LEVEL: tuple = ()   # heldout, compare, report go here (or into EVAL_SUBCOMMANDS)


# ------------------------------------------------------------------------------------ handlers
def _check_judge(args) -> None:
    """The judge flags' ranges (a :class:`~inner_loop.overrides.UserError` names the valid one)."""
    from inner_loop.overrides import check
    check("--judge-timeout", args.judge_timeout, "> 0")
    check("--judge-retries", args.judge_retries, "int >= 0")


def make_judge(args):
    from evaluation.judge import OpenAIJudge
    _check_judge(args)
    return OpenAIJudge(args.judge_base_url, args.judge_model, args.judge_api_key_env,
                       timeout=args.judge_timeout, max_retries=args.judge_retries)


def _mt_bench(args) -> int:
    from inner_loop.overrides import check
    from evaluation import mt_bench
    from evaluation.judge import JudgmentCache

    check("--parallel", args.parallel, "int >= 1")
    _check_judge(args)
    data = mt_bench.load_fastchat(args.fastchat_data)
    answers = mt_bench.load_answers(args.answers)
    judgments = mt_bench.judge_answers(make_judge(args), data, answers, JudgmentCache(args.cache),
                                       parallel=args.parallel)
    summary = mt_bench.summarise(judgments)
    if args.judgments_out:
        mt_bench.write_jsonl(args.judgments_out, mt_bench.judgment_rows(judgments))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        score = "n/a" if summary["score"] is None else f"{summary['score']:.3f}"
        print(f"MT-Bench score {score}  ({summary['n_judged']} turns judged, "
              f"{summary['n_failed']} failed {summary['failures']}, {summary['n_cached']} from cache)")
        for turn, s in summary["per_turn"].items():
            print(f"  turn {turn:<12} {s:.3f}")
        for cat, s in summary["per_category"].items():
            print(f"  {cat:<17} {s:.3f}")
    return 0 if summary["n_failed"] == 0 else 1


def _generate_mt_bench(args) -> int:
    from pathlib import Path

    from inner_loop.overrides import UserError, check
    check("--max-new-tokens", args.max_new_tokens, "int >= 1")
    wanted = None
    if args.question_ids:
        try:
            wanted = {int(x) for x in args.question_ids.split(",")}
        except ValueError:
            raise UserError(f"--question-ids must be comma-separated integers, e.g. 81,82; not "
                            f"{args.question_ids!r}") from None

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evaluation import mt_bench

    data = mt_bench.load_fastchat(args.fastchat_data)
    questions = data.questions
    if wanted is not None:
        questions = [q for q in questions if q["question_id"] in wanted]
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).to(device).eval()
    model_id = args.model_id or Path(args.model.rstrip("/")).name
    rows = mt_bench.generate_answers(model, tokenizer, questions, model_id,
                                     max_new_tokens=args.max_new_tokens, seed=args.seed)
    mt_bench.write_jsonl(args.out, rows)
    print(f"wrote {len(rows)} answers to {args.out}")
    return 0


def _alpaca(args) -> int:
    from inner_loop.overrides import UserError, check
    from evaluation import alpaca
    from evaluation.judge import JudgmentCache

    check("--judge-temperature", args.judge_temperature, ">= 0")
    _check_judge(args)
    if args.annotations:
        with open(args.annotations, encoding="utf-8") as f:
            annotations = json.load(f)
    else:
        if not (args.reference and args.judge_base_url and args.judge_model):
            raise UserError("--outputs needs --reference, --judge-base-url and --judge-model")
        with open(args.outputs, encoding="utf-8") as f:
            outputs = json.load(f)
        with open(args.reference, encoding="utf-8") as f:
            reference = json.load(f)
        rows = alpaca.pair_outputs(outputs, reference)
        annotations = alpaca.annotate(make_judge(args), rows, args.judge_prompt,
                                      JudgmentCache(args.cache), temperature=args.judge_temperature)
        if args.annotations_out:
            with open(args.annotations_out, "w", encoding="utf-8") as f:
                json.dump(annotations, f, indent=2, ensure_ascii=False)
    difficulty = (alpaca.load_instruction_difficulty(args.instruction_difficulty)
                  if args.instruction_difficulty else None)
    row = alpaca.leaderboard_row(annotations, difficulty)
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        lc, lc_se = row["length_controlled_winrate"], row["lc_standard_error"]
        print(f"win_rate {row['win_rate']:.2f} ± {row['standard_error']:.2f}   "
              f"discrete {row['discrete_win_rate']:.2f}   "
              f"wins {row['n_wins']} / base wins {row['n_wins_base']} / draws {row['n_draws']} "
              f"of {row['n_total']}   avg_length {row['avg_length']}")
        print(("LC win_rate n/a (too few judged rows)" if lc is None else f"LC win_rate {lc:.2f}")
              + (f" ± {lc_se:.2f}" if lc_se is not None else "") + f"   ({row['lc_glm']}, "
              "not the leaderboard's length_controlled_v1: see evaluation/alpaca.py)")
        if row["failures"]:
            print(f"failed judgments (left out): {row['failures']}")
    return 0


def _tldr(args) -> int:
    from inner_loop.overrides import UserError, check
    from evaluation import tldr

    check("--judge-temperature", args.judge_temperature, ">= 0")
    try:
        folder = tldr.outputs_folder(args.run_dir)
        metrics = tldr.judge_outputs(folder, make_judge(args), prompt_path=args.judge_prompt,
                                     cache=args.cache, temperature=args.judge_temperature)
    except tldr.TldrJudgeError as err:
        raise UserError(str(err)) from None
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if k != "per_prompt"}, indent=2))
    else:
        print(tldr.format_metrics(metrics, folder))
        print(f"wrote {folder / tldr.LEADERBOARD}")
    return 0 if metrics["n_failed"] == 0 else 1
