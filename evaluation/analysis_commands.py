"""Subcommands of ``disco`` for held-out evaluation, comparison, noise calibration, beta sweeps and
reports (registered by discovery.cli). Handlers are thin: the work is in evaluation.compare,
.heldout, .calibrate, .frontier and .report, imported inside the handlers so that ``disco --help`` stays fast."""

from __future__ import annotations

import argparse
import json
import sys

from evaluation.settings import parse_overrides

RUNNER = None  # None: inner_loop.runner.run_candidate; tests put a fake here
DEFAULT_SEEDS = (0, 1, 2)


def _runner_kwargs(args, task: str = "synthetic") -> dict:
    """What run_grid passes on: isolation and timeout, and with ``--executor`` the executor (local
    worker processes or a Ray cluster) and how many runs it keeps in flight."""
    kwargs = {"isolation": args.isolation, "timeout": args.timeout}
    kind = getattr(args, "executor", None) or ("ray" if getattr(args, "ray_address", None) else None)
    if kind:
        from discovery.executors import for_runs
        kwargs["executor"], kwargs["in_flight"] = for_runs(kind, address=getattr(args, "ray_address", None),
                                                           task=task, workers=args.workers)
    return kwargs


def check_args(args, *, betas=(), beta_flag="--beta", seeds=None, task=None, overrides=()) -> None:
    """The ranges of the flags compare and heldout share (a :class:`~inner_loop.overrides.UserError`
    names the valid range): betas > 0, seeds distinct integers, timeout > 0, n_boot >= 1; the task's
    name, the --set keys and, on the synthetic task, the metric's name (each with a "did you mean")."""
    from inner_loop.overrides import UserError, check, check_seeds
    for b in betas:
        check(beta_flag, b, "> 0")
    if seeds is not None:
        check_seeds(seeds, "--seeds")
    check("--timeout", args.timeout, "> 0")
    if hasattr(args, "n_boot"):
        check("--n-boot", args.n_boot, "int >= 1")
    if task is not None:
        from inner_loop.commands import check_overrides
        from inner_loop.tasks import TASKS
        TASKS.get(task)  # an unknown task raises with a "did you mean"
        check_overrides(dict(overrides), task)
        metric = getattr(args, "metric", None)
        if task == "synthetic" and metric is not None:
            import difflib

            from inner_loop.glossary import GLOSSARY
            known = [k for k in GLOSSARY if k != "fitness"]
            if metric not in known:
                close = difflib.get_close_matches(metric, known, n=1)
                raise UserError(f"unknown --metric {metric!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                                + f" (known: {', '.join(known)})")


def _log(message: str) -> None:
    print(_shown(message), file=sys.stderr, flush=True)


def _warnings_only(message: str) -> None:
    """``--quiet``: the log keeps its warnings and drops the per-run progress lines."""
    if message.startswith("warning"):
        _log(message)


def _logger(args):
    return _warnings_only if getattr(args, "quiet", False) else _log


def _quiet(args):
    """``--quiet``: the libraries' progress bars and warnings off for the command (each run's own
    output goes to its folder's train.log either way, :func:`evaluation.compare.run_output`)."""
    import contextlib
    if not getattr(args, "quiet", False):
        return contextlib.nullcontext()
    from inner_loop.synthetic import quiet_libraries
    return quiet_libraries(True)


def _shown(text: str) -> str:
    """Text for the terminal with control characters made visible (failure reasons quote candidates)."""
    from discovery.text import shown
    return shown(text)


def _common(p: argparse.ArgumentParser, *, seeds=True, boot=True) -> None:
    if seeds:
        p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                       help="training seeds; every objective is trained once per seed (default: 0 1 2)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a task or training field for every run (e.g. max_steps=20); repeatable")
    p.add_argument("--isolation", default="auto", choices=("auto", "none", "process", "sandbox"),
                   help="how run_candidate isolates candidate code (default: auto)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per training run (default: 600)")
    p.add_argument("--executor", choices=("local", "ray"), default=None,
                   help="run the trainings as jobs: local worker processes (--workers at once) or Ray tasks "
                        "(default: one after another in this process)")
    p.add_argument("--ray-address", default=None, help="the Ray cluster for --executor ray (default: start one here)")
    p.add_argument("--workers", type=int, default=2, help="local worker processes at once (default: 2)")
    if boot:
        p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap replicates (default: 10000)")
    p.add_argument("--quiet", action="store_true",
                   help="only the result and warnings: no line per run, no library warnings or bars "
                        "(each run's own log is in its folder's train.log, with --out)")


def _objectives_and_task(p: argparse.ArgumentParser, *, default: tuple | None = None) -> None:
    """--objectives (required, or ``default``) and --task, as compare and sweep take them."""
    if default is None:
        p.add_argument("--objectives", nargs="+", required=True, metavar="NAME_OR_FILE",
                       help="registry names (dpo, ipo, lrml, ...) and/or .py files with one loss each")
    else:
        p.add_argument("--objectives", nargs="+", default=list(default), metavar="NAME_OR_FILE",
                       help=f"registry names and/or .py files (default: {' '.join(default)})")
    p.add_argument("--task", default="synthetic", help="inner-loop task (default: synthetic)")


def _finish(p: argparse.ArgumentParser, handler, *, seeds: bool = True, boot: bool = True) -> None:
    """The flags every training command shares (:func:`_common`), and its handler."""
    _common(p, seeds=seeds, boot=boot)
    p.set_defaults(func=handler)


# -- compare ------------------------------------------------------------------------------------

def cmd_compare(args) -> int:
    from pathlib import Path

    from evaluation.compare import Setting, format_table, jsonable, resolve_objectives, run_grid, summarise

    overrides = parse_overrides(args.overrides)
    check_args(args, betas=() if args.beta is None else (args.beta,), seeds=args.seeds, task=args.task,
               overrides=overrides)
    objectives = resolve_objectives(args.objectives, baselines=args.baselines)
    settings = [Setting(seed=s, task=args.task, beta=args.beta, overrides=overrides) for s in args.seeds]
    with _quiet(args):
        runs = run_grid(objectives, settings, runner=RUNNER, out_dir=args.out, log=_logger(args),
                        **_runner_kwargs(args, args.task))
    table = summarise(runs, args.metric, baselines=args.baselines, n_boot=args.n_boot)
    result = jsonable({"command": "compare", "settings": [s.to_dict() for s in settings],
                       "table": table.to_dict(), "runs": [r.to_dict() for r in runs]})
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "comparison.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1) if args.json else _shown(format_table(table)))
    return 0


# -- heldout ------------------------------------------------------------------------------------

def cmd_heldout(args) -> int:
    from evaluation.campaign import CampaignError
    from evaluation.compare import format_table
    from inner_loop.overrides import check
    from evaluation.heldout import HeldoutError, evaluate_heldout, format_transfer

    check_args(args, betas=args.betas or (), beta_flag="each of --betas", seeds=args.seeds)
    check("--top", args.top, "int >= 1")
    judge = None
    if args.judge_model:  # for a task scored by a judge (recipe:tldr)
        from evaluation.commands import make_judge
        judge = make_judge(args)
    try:
        with _quiet(args):
            result = evaluate_heldout(args.dir, top=args.top, tasks=args.tasks, seeds=args.seeds,
                                      betas=args.betas, metric=args.metric, allow_used=args.allow_used,
                                      overrides=parse_overrides(args.overrides), runner=RUNNER,
                                      log=_logger(args), n_boot=args.n_boot, judge=judge,
                                      judge_cache=args.cache, **_runner_kwargs(args))
    except (HeldoutError, CampaignError) as err:
        print(_shown(f"disco: error: {err}"), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(_shown(format_table(result.table)))
        print("\n" + _shown(format_transfer(result.to_dict()["transfer"], search_metric=result.search_metric)))
    print(f"\nwrote {result.path}", file=sys.stderr)
    return 0


# -- calibrate ----------------------------------------------------------------------------------

def cmd_calibrate(args) -> int:
    from pathlib import Path

    from evaluation.calibrate import calibrate, campaign_defaults, format_calibration
    from evaluation.compare import resolve_objectives
    from inner_loop.overrides import UserError, check

    defaults = campaign_defaults()
    args.task = args.task or defaults["task"]
    args.metric = args.metric or defaults["metric"]
    overrides = parse_overrides(args.overrides)
    check_args(args, betas=() if args.beta is None else (args.beta,), seeds=args.seeds, task=args.task,
               overrides=overrides)
    if args.campaign_seeds is not None:
        check("--campaign-seeds", args.campaign_seeds, "int >= 1")
    if len(args.seeds) < 2:
        raise UserError(f"--seeds needs at least 2 seeds to measure seed-to-seed variation, got {len(args.seeds)}")
    if len(resolve_objectives(args.objectives, baselines=())) < 2:
        raise UserError(f"--objectives needs two different objectives to pair (e.g. dpo ipo), got "
                        f"{' '.join(args.objectives)}")
    with _quiet(args):
        result = calibrate(args.task, args.seeds, overrides, args.metric, objectives=args.objectives,
                           beta=args.beta, campaign_seeds=args.campaign_seeds, runner=RUNNER, log=_logger(args),
                           **_runner_kwargs(args))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1) if args.json else _shown(format_calibration(result)))
    if args.out:
        print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


# -- sweep --------------------------------------------------------------------------------------

def cmd_sweep(args) -> int:
    from evaluation.compare import resolve_objectives
    from evaluation.frontier import check_betas, format_points, sweep

    try:
        check_betas(args.betas)
    except ValueError as err:
        print(f"disco sweep: {err}", file=sys.stderr)
        return 2
    objectives = resolve_objectives(args.objectives, baselines=())
    with _quiet(args):
        result = sweep(objectives, betas=args.betas, seeds=args.seeds, task=args.task, out_dir=args.out,
                       overrides=parse_overrides(args.overrides), x=args.x, runner=RUNNER, log=_logger(args),
                       **_runner_kwargs(args))
    print(_shown(format_points(result["points"], x=args.x, sft=result["sft"])))
    print(f"\nwrote {result['png']} and {result['json']}", file=sys.stderr)
    return 0


# -- report -------------------------------------------------------------------------------------

def cmd_report(args) -> int:
    from evaluation.campaign import CampaignError
    from evaluation.report import write_report

    try:
        path = write_report(args.dir, out=args.out)
    except CampaignError as err:
        print(_shown(f"disco: error: {err}"), file=sys.stderr)
        return 2
    print(path)
    return 0


def register(subparsers) -> None:
    """Add compare, heldout, calibrate, sweep and report to the ``disco`` parser."""
    from evaluation.frontier import DEFAULT_BETAS

    p = subparsers.add_parser("compare", help="train objectives on the same seeds; paired intervals vs baselines",
                              description="Train every objective on every seed with run_candidate and print, "
                              "per objective, the mean metric ± its standard error over seeds and the paired-bootstrap "
                              "95% interval of its difference to each baseline; with two or more candidates, also "
                              "intervals Bonferroni-corrected for their number and Holm-adjusted p-values. Failed "
                              "runs are listed, never averaged in.")
    _objectives_and_task(p)
    p.add_argument("--baselines", nargs="*", default=["dpo", "ipo", "lrml"],
                   help="objectives every row is compared with; added to the runs when missing (default: dpo ipo lrml)")
    p.add_argument("--beta", type=float, default=None, help="KL strength (default: the task's)")
    p.add_argument("--metric", default="win_rate", help="metric to compare: win_rate, reward, kl (default: win_rate)")
    p.add_argument("--json", action="store_true", help="print JSON (runs and table) instead of the table")
    p.add_argument("--out", default=None, metavar="DIR", help="write DIR/comparison.json and per-run results")
    _finish(p, cmd_compare)

    p = subparsers.add_parser("heldout", help="re-evaluate a campaign's best candidates on settings it never used",
                              description="Train the campaign's top-K candidates and the baselines on seeds, "
                              "betas and task variants that the search did not use, and write DIR/heldout.json "
                              "with paired-bootstrap 95% intervals of every candidate's difference to each baseline (for K >= 2 "
                              "also intervals Bonferroni-corrected for the K candidates, with Holm-adjusted p-values), and, per "
                              "held-out setting, whether the search ranking transfers: Spearman and Kendall rank "
                              "correlations between the search fitness and the held-out mean over the top K and the "
                              "baselines, with bootstrap intervals over the held-out seeds, and which candidates beat "
                              "DPO there after the Holm correction.")
    p.add_argument("dir", metavar="DIR", help="campaign directory (holds archive.sqlite)")
    p.add_argument("--top", type=int, default=3, metavar="K", help="how many of the best candidates (default: 3)")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                   help="tasks or task variants, NAME or NAME:key=value,key=value (e.g. synthetic:max_completion_len=32); "
                   "default: the campaign's task")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="training seeds (default: three seeds the campaign did not use)")
    p.add_argument("--betas", type=float, nargs="+", default=None, help="KL strengths (default: the campaign's)")
    p.add_argument("--metric", default=None, help="metric to compare (default: the campaign's fitness metric)")
    p.add_argument("--allow-used", action="store_true",
                   help="keep settings the search used (otherwise they are dropped with a warning)")
    p.add_argument("--json", action="store_true", help="print the JSON written to DIR/heldout.json")
    from evaluation.commands import judge_flags
    judge_flags(p, required=False)  # a task scored by a judge: recipe:tldr (cache default: DIR/heldout/judgments.jsonl)
    _finish(p, cmd_heldout, seeds=False)

    from evaluation.calibrate import DEFAULT_OBJECTIVES, DEFAULT_SEEDS as CALIBRATION_SEEDS
    p = subparsers.add_parser("calibrate", help="the noise floor: the smallest difference between two losses a "
                              "campaign can detect",
                              description="Train the baselines (default: dpo ipo) on the campaign's settings, "
                              "seed by seed, score the SFT model, and report for one metric the within-seed "
                              "evaluation error, the seed-to-seed sd, the sd of the paired per-seed difference, "
                              "its standard error at the campaign's seed count, the smallest detectable "
                              "difference (95% two-sided, 80% power), DPO's effect over SFT and the ratio of "
                              "the paired 95% half-width to it. --out writes the JSON a campaign reads "
                              "(fitness.calibration).")
    p.add_argument("--objectives", nargs="+", default=list(DEFAULT_OBJECTIVES), metavar="NAME_OR_FILE",
                   help="objectives to train; the first two are paired (default: dpo ipo)")
    p.add_argument("--task", default=None, help="inner-loop task (default: the default campaign's)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(CALIBRATION_SEEDS),
                   help="training seeds, at least 2 (default: 0 1 2 3 4)")
    p.add_argument("--beta", type=float, default=None, help="KL strength (default: the campaign's, else the task's)")
    p.add_argument("--metric", default=None, help="metric (default: the default campaign's fitness.metric)")
    p.add_argument("--campaign-seeds", type=int, default=None, metavar="N",
                   help="the campaign's seed count the standard error is given for (default: the default "
                        "campaign's len(training.seeds))")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the labelled lines")
    p.add_argument("--out", default=None, metavar="FILE.json", help="write the JSON (for fitness.calibration)")
    _finish(p, cmd_calibrate, seeds=False, boot=False)

    p = subparsers.add_parser("sweep", help="beta sweep: the reward-versus-KL frontier (DiscoPOP Fig. 5)",
                              description="Train every objective at every beta and seed; plot mean gold reward "
                              "against mean KL to the reference, one curve per objective, points labelled by beta. "
                              "Writes DIR/frontier.png and DIR/sweep.json.")
    _objectives_and_task(p, default=("dpo", "ipo", "lrml"))
    p.add_argument("--betas", type=float, nargs="+", default=list(DEFAULT_BETAS),
                   help=f"KL strengths, each > 0 (default: {' '.join(f'{b:g}' for b in DEFAULT_BETAS)})")
    p.add_argument("--x", default="kl", metavar="METRIC",
                   help="x axis: kl (KL(pi||ref) per completion, default), kl_per_token, or kl_ref_pi_per_token "
                   "(KL(ref||pi) per token, the paper's Fig. 5 direction)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (a campaign DIR puts it in the report)")
    _finish(p, cmd_sweep)

    p = subparsers.add_parser("report", help="one self-contained HTML page for a campaign",
                              description="Write an HTML report (images inlined, no external resources): "
                              "leaderboard, fitness over the campaign, each candidate's plots and symbolic form, "
                              "the reward/KL frontier (DIR/frontier.png) and the comparison tables "
                              "(DIR/heldout.json, DIR/comparison.json).")
    p.add_argument("dir", metavar="DIR", help="campaign directory")
    p.add_argument("--out", default=None, metavar="FILE", help="where to write the page (default: DIR/report.html)")
    p.set_defaults(func=cmd_report)
