"""Subcommands of ``disco`` that belong to discovery/: run, resume, status, show.

Thin wrappers: they parse flags, build a :class:`~discovery.config.CampaignConfig` (defaults <
``--config`` YAML < flags < ``--set section.key=VALUE``, parsed by
:func:`inner_loop.overrides.parse_sets`, the one ``KEY=VALUE`` parser) and call
:mod:`discovery.campaign`, or read the archive. Heavy imports
happen inside the handlers so ``disco --help`` stays fast. Everything printed for a person goes
through :func:`say`: the archive holds text a model or a candidate wrote, and none of its control
characters (ANSI escapes) reaches the terminal raw; ``--json`` output escapes them anyway.
"""

from __future__ import annotations

import json
import sys

from discovery.text import shown

# flag -> the setting it sets (dotted for nested ones)
RUN_FLAGS = {"proposer": "proposer.name", "base_url": "proposer.base_url", "model": "proposer.model",
             "api_key_env": "proposer.api_key_env", "candidates": "candidates", "task": "training.task",
             "seeds": "training.seeds", "beta": "training.beta", "workers": "execution.workers",
             "seed": "proposer.seed", "executor": "execution.executor", "ray_address": "execution.ray_address"}
RESUME_FLAGS = {"candidates": "candidates", "workers": "execution.workers",
                "base_url": "proposer.base_url", "model": "proposer.model",
                "executor": "execution.executor", "ray_address": "execution.ray_address"}
# what `disco resume --set` may change: whole sections (ending in ".") and settings that leave the rows
# already trained comparable (not the task, seeds, fitness, ...: those need a new campaign)
RESUME_SETTABLE = ("budget.", "prompt.", "candidates", "execution.workers", "execution.validate_timeout",
                   "execution.executor", "execution.ray_address", "execution.storage",
                   "execution.max_seed_attempts", "execution.num_cpus", "execution.num_gpus",
                   "proposer.base_url", "proposer.model", "proposer.api_key_env", "proposer.temperature",
                   "proposer.max_tokens", "proposer.request_timeout", "proposer.max_retries",
                   "proposer.retry_base_delay", "proposer.retry_max_delay")


def register(subparsers) -> None:
    """Add this package's subcommands to the ``disco`` parser."""
    p = subparsers.add_parser("run", help="run a discovery campaign (propose, validate, train, record)")
    p.add_argument("--out", required=True, metavar="DIR", help="campaign folder (must not hold a campaign)")
    p.add_argument("--config", metavar="FILE", help="YAML file of CampaignConfig fields; flags win over it")
    p.add_argument("--proposer", help="evolve (offline, the default) or openai")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM)")
    p.add_argument("--model", help="model name at the endpoint (default gpt-4o-mini)")
    p.add_argument("--api-key-env", metavar="VAR",
                   help="NAME of the environment variable holding the API key (default OPENAI_API_KEY;"
                        " unset is fine for a local endpoint)")
    p.add_argument("--candidates", type=int, metavar="N", help="proposals to take to a final state (default 6)")
    p.add_argument("--task", help="inner-loop task (default synthetic)")
    p.add_argument("--seeds", type=int, nargs="+", help="training seeds per candidate (default 0)")
    p.add_argument("--beta", type=float, help="KL strength (default: the task's)")
    p.add_argument("--workers", type=int, metavar="N", help="candidates trained at once (default 1)")
    p.add_argument("--seed", type=int, help="the proposer's random seed (default 0)")
    _executor_flags(p)
    p.add_argument("--max-steps", type=int, metavar="N",
                   help="optimizer steps per training run (default: the task's, one epoch); "
                        "sets training.overrides.max_steps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any campaign setting, dotted for nested ones (training.max_attempts=3, "
                        "fitness.judge.model=gpt-4o, training.overrides.learning_rate=1e-5, budget caps: "
                        "budget.max_tokens=200000, budget.max_cost=5, budget.max_wall_seconds=7200, "
                        "budget.max_train_seconds=3600, budget.prices='{\"MODEL\": [USD per 1M prompt, "
                        "per 1M completion tokens]}'); repeatable, wins over --config and the other flags")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines on stderr")
    p.set_defaults(func=_run)

    p = subparsers.add_parser("resume", help="continue a campaign that stopped or was killed")
    p.add_argument("dir", metavar="DIR", help="campaign folder")
    p.add_argument("--candidates", type=int, metavar="N", help="raise the number of candidates")
    p.add_argument("--workers", type=int, metavar="N", help="change the number of workers")
    p.add_argument("--base-url", help="the endpoint moved: use this one from now on")
    p.add_argument("--model", help="continue with another model name")
    _executor_flags(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a budget cap or another setting that leaves the rows trained so far "
                        "comparable: budget.* (budget.max_tokens=200000, budget.max_cost=5, "
                        "budget.max_wall_seconds=7200, budget.max_train_seconds=3600, null: no cap; "
                        "budget.prices='{\"MODEL\": [USD per 1M prompt, per 1M completion tokens]}'), "
                        "prompt.*, candidates, execution.workers, the executor's settings (execution.executor, "
                        "ray_address, storage, max_seed_attempts, num_cpus, num_gpus), proposer endpoint "
                        "settings; repeatable")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines on stderr")
    p.set_defaults(func=_resume)

    p = subparsers.add_parser("status", help="leaderboard, counts per status, best against the baselines")
    p.add_argument("dir", metavar="DIR", help="campaign folder")
    p.add_argument("--top", type=int, default=10, help="rows of the leaderboard (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_status)

    p = subparsers.add_parser("show", help="one candidate: hypothesis, code, checks, plots, metrics")
    p.add_argument("dir", metavar="DIR", help="campaign folder")
    p.add_argument("candidate", help="candidate id (as in `disco status`) or name")
    p.add_argument("--json", action="store_true", help="print the archive row as JSON")
    p.set_defaults(func=_show)


def _executor_flags(p) -> None:
    p.add_argument("--executor", choices=("local", "ray"),
                   help="where training runs: local worker processes (the default) or a Ray cluster, each "
                        "candidate-seed a Ray task (pip install 'disco-pop[ray]')")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="the Ray cluster to join (auto, HOST:PORT, ray://HOST:PORT); implies --executor ray; "
                        "without it --executor ray starts Ray on this machine")


def executor_settings(args) -> dict:
    """``--executor`` / ``--ray-address`` as settings: an address implies ``ray``; with ``local`` it
    is a :class:`UserError`."""
    from inner_loop.overrides import UserError
    out = {}
    if args.ray_address is not None:
        if args.executor == "local":
            raise UserError("--ray-address is the address of a Ray cluster: it goes with --executor ray, "
                            "not --executor local")
        out["execution.executor"] = "ray"
        out["execution.ray_address"] = args.ray_address
    if args.executor is not None:
        out["execution.executor"] = args.executor
    return out


def say(text: str = "", file=None) -> None:
    """Print ``text`` with its control characters made visible (see :func:`discovery.text.shown`)."""
    print(shown(text), file=file)


def _fail(message: str) -> int:
    say(f"disco: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def _where_to_look(directory: str) -> str:
    return (f"\nResults are in {directory}/ (archive.sqlite, campaign.log, candidates/<id>-<name>/).\n"
            f"  disco status {directory}           leaderboard against DPO/IPO/LRML\n"
            f"  disco show {directory} <id>        one candidate: hypothesis, code, checks, plots\n"
            f"  disco report {directory}           an HTML page of the whole campaign\n"
            f"  disco resume {directory}           continue it (after a crash, or with --candidates N)")


def _run(args) -> int:
    from pathlib import Path

    from discovery.archive import ArchiveError
    from discovery.campaign import run_campaign
    from discovery.config import CampaignConfig, load_yaml, merge, nested_settings
    from discovery.proposal import ProposerError
    from inner_loop.overrides import parse_sets
    from objectives.registry import UnknownNameError
    try:
        settings = nested_settings(load_yaml(args.config)) if args.config else {}
        flags = {key: getattr(args, flag) for flag, key in RUN_FLAGS.items() if getattr(args, flag) is not None}
        flags.update(executor_settings(args))
        if args.max_steps is not None:
            flags["training.overrides.max_steps"] = args.max_steps
        flags.update(parse_sets(args.set))
        config = CampaignConfig.from_dict(merge(settings, nested_settings(flags)))
        # the runner's task and overrides must exist before anything is made
        from inner_loop.commands import check_overrides
        from inner_loop.tasks import TASKS
        TASKS.get(config.training.task)
        check_overrides(config.training.overrides, config.training.task, flag="training.overrides:")
        result = run_campaign(args.out, config, progress=not args.quiet)
    except ProposerError as err:
        hint = f" (what is done is saved: continue with `disco resume {args.out}`)" \
            if (Path(args.out) / "archive.sqlite").exists() else ""
        return _fail(f"{err}{hint}")
    except (ArchiveError, UnknownNameError, ValueError, OSError) as err:
        return _fail(str(err))
    _print_summary(result)
    say(_where_to_look(args.out))
    return 0


def resume_changes(items) -> dict:
    """``disco resume --set`` items as settings; a setting outside :data:`RESUME_SETTABLE` is a
    :class:`UserError` (it would make the new rows incomparable with the old)."""
    from inner_loop.overrides import UserError, parse_sets
    changes = parse_sets(items)
    for key in changes:
        if not any(key == s or key == s.rstrip(".") or (s.endswith(".") and key.startswith(s))
                   for s in RESUME_SETTABLE):
            raise UserError(f"disco resume --set cannot change {key!r}: the rows trained so far would not be "
                            f"comparable with new ones (start a new campaign with `disco run` for that); it "
                            f"changes budget.*, prompt.*, candidates, execution.workers, the executor's settings "
                            f"(execution.executor, ray_address, storage, max_seed_attempts, num_cpus, num_gpus) and "
                            f"the proposer's endpoint settings")
    return changes


def _resume(args) -> int:
    from discovery.archive import ArchiveError
    from discovery.campaign import resume_campaign
    from discovery.proposal import ProposerError
    changes = {key: getattr(args, flag) for flag, key in RESUME_FLAGS.items()
               if getattr(args, flag) is not None}
    try:
        changes.update(executor_settings(args))
        changes.update(resume_changes(args.set))
        result = resume_campaign(args.dir, progress=not args.quiet, **changes)
    except ProposerError as err:
        return _fail(f"{err} (what is done is saved: run `disco resume {args.dir}` again)")
    except (ArchiveError, ValueError, OSError) as err:
        return _fail(str(err))
    _print_summary(result)
    say(_where_to_look(args.dir))
    return 0


def _fmt(fitness, se) -> str:
    if fitness is None:
        return "-"
    return f"{fitness:.4f}" + (f" ± {se:.4f}" if se is not None else "")


def _se_cell(r: dict) -> str:
    """The leaderboard's ± column: the se over seeds; a one-seed row has no seed-level ±, its
    within-seed evaluation se is shown as such ("eval ...")."""
    se = r.get("fitness_se")
    if not isinstance(se, (int, float)):
        return "-"
    return f"{se:.4f}" if r.get("n_seeds", 0) >= 2 or not r["fitness_se_is"].startswith("one seed") \
        else f"eval {se:.4f}"


def _paired_line(p: dict | None) -> str:
    """``paired difference +0.0120 [-0.0300, +0.0540] (95% CI over 3 seeds ...) ~ inside the noise floor``."""
    from discovery.noise import interval_text
    if p is None:
        return "paired difference: no shared finished seed"
    mark = {True: "  ~ inside the noise floor", None: "  ? cannot tell (no interval, no noise floor)",
            False: ""}[p.get("within_noise")]
    return f"paired difference {interval_text(p)} ({p['what']}){mark}"


def _header(s: dict) -> list[str]:
    """The lines that say which fitness the campaign used and how noisy it is."""
    cfg = s.get("config") or {}
    training = cfg.get("training") or {}
    lines = [f"fitness: {s['fitness']['described']}"]
    extra = []
    screen = training.get("screen_seeds") or 0
    if 0 < screen < len(training.get("seeds") or []):
        extra.append(f"candidates screened on the first {screen} seed(s), promoted to all unless their "
                     "paired difference to DPO is clearly negative")
    if training.get("best_extra_seeds"):
        extra.append(f"a would-be best trains {training['best_extra_seeds']} extra seed(s)")
    if extra:
        lines.append("seeds: " + "; ".join(extra))
    lines.append(s["noise_floor"])
    return lines


def _print_summary(result: dict) -> None:
    counts = ", ".join(f"{v} {k}" for k, v in result["counts"].items() if v)
    say(f"\ncandidates: {counts or 'none'}")
    say(f"fitness: {result['fitness']['described']}")
    say(result["noise_floor"])
    for name, b in result["baselines"].items():
        say(f"  baseline {name:<8} {b['fitness_text'] if b['status'] == 'done' else b['status']}")
    best = result["best"]
    if best:
        say(f"  best     #{best['id']} {best['name']}  {best['fitness_text']}")
        say(f"           vs dpo: {_paired_line(best['vs_dpo'])}")
    stopped = result.get("stopped")
    if stopped:
        say(f"\nstopped: {stopped['reason']}")
        say(f"  continue with a higher cap: {stopped['continue']}")


def status(directory: str, top: int = 10) -> dict:
    """The status of a campaign as one JSON-able dict (what ``disco status --json`` prints): the
    summary (fitness used, noise floor, baselines, best), the leaderboard with each row's paired
    difference to DPO (``vs_dpo``) and to every baseline (``vs_baselines``), each with its interval,
    what the interval is, and whether it is inside the noise floor."""
    from discovery.archive import Archive
    from discovery.campaign import summary, tags
    from discovery.noise import fitness_text, n_seeds, paired_to, se_words
    with Archive.open(directory) as archive:
        out = summary(archive)
        board = archive.leaderboard()
        metric, function, record = out["fitness"]["metric"], out["fitness"]["function"], out["noise"]
        base_rows = {r["name"]: r for r in archive.rows(kind="baseline") if r["status"] == "done"}
        out["leaderboard"] = [
            {k: r[k] for k in ("id", "kind", "name", "fitness", "fitness_se", "proposer", "reason")}
            | {"n_seeds": n_seeds(r), "fitness_se_is": se_words(r, function, metric),
               "fitness_text": fitness_text(r, function), "tags": tags(r),
               "vs_dpo": out["baselines"].get("dpo", {}).get("vs_dpo") if r["name"] == "dpo" and r["kind"] == "baseline"
               else paired_to(r, base_rows.get("dpo"), metric, record),
               "vs_baselines": {n: None if b["id"] == r["id"] else paired_to(r, b, metric, record)
                                for n, b in base_rows.items()},
               "kl": (r["metrics"] or {}).get("mean", {}).get("kl")}
            for r in board[:top]]
        out["in_progress"] = [{"id": r["id"], "name": r["name"], "status": r["status"],
                               "stage": ((r["metrics"] or {}).get("stage") or {}).get("name")}
                              for r in archive.rows(status=("proposed", "training"))]
        out["tokens"] = {k: sum(r[k] or 0 for r in archive.rows()) for k in
                         ("prompt_tokens", "completion_tokens")}
        out["config"] = settings_of(archive.config)
        out["state"], out["pid"] = run_state(directory, archive)
        out["budget"] = budget_of(archive, out["config"])
    return out


def budget_of(archive, settings: dict) -> dict | None:
    """What the campaign spent against each cap (:mod:`discovery.budget`): ``spent``, ``caps``
    (None: no cap) and ``line``, the same in words; None for an archive whose config is not valid."""
    from discovery import budget
    from discovery.config import CampaignConfig, UserError
    try:
        config = CampaignConfig.from_dict(settings or {}, warn=False)
    except (UserError, TypeError):
        return None
    spent = budget.spent(archive, config)
    return {"spent": spent.to_dict(), "caps": {k: getattr(config.budget, k) for k in budget.CAPS},
            "line": budget.words(spent, config.budget)}


def settings_of(config: dict) -> dict:
    """An archive's config as nested settings (an archive written before they were nested holds
    flat ones); as stored when it is not a valid config at all."""
    from discovery.config import CampaignConfig, UserError
    try:
        return CampaignConfig.from_dict(config or {}, warn=False).to_dict()
    except (UserError, TypeError):
        return config


def run_state(directory: str, archive) -> tuple[str, str | None]:
    """("running", pid) while a live process holds ``DIR/campaign.lock``; else "finished" when every
    row is final and the campaign has all its candidates, "stopped" when not (a crash, Ctrl-C, an
    endpoint that went down: ``disco resume DIR`` continues it)."""
    from discovery.lock import lock_state
    held, pid = lock_state(directory)
    if held:
        return "running", pid
    wanted = (archive.config or {}).get("candidates") or 0
    unfinished = archive.count(status=("proposed", "training"))
    done = not unfinished and archive.count(kind="candidate") >= wanted
    return ("finished" if done else "stopped"), None


def state_line(s: dict) -> str:
    if s["state"] == "running":
        return f"running (pid {s['pid'] or '?'})"
    if s["state"] == "stopped" and s.get("stopped"):
        return f"stopped at a budget cap: {s['stopped']['reason']} (continue with a higher cap: " \
               f"{s['stopped']['continue']})"
    if s["state"] == "stopped":
        return f"stopped (not finished; resume with: disco resume {s['dir']})"
    return "finished"


def _status(args) -> int:
    from discovery.archive import ArchiveError
    from discovery.noise import interval_text, noise_mark
    try:
        s = status(args.dir, args.top)
    except ArchiveError as err:
        return _fail(str(err))
    if args.json:
        print(json.dumps(s, indent=2, default=str))
        return 0
    cfg = s["config"]
    training = cfg.get("training") or {}
    say(f"campaign {s['dir']}: proposer {(cfg.get('proposer') or {}).get('name')}, task {training.get('task')}, "
        f"seeds {training.get('seeds')}, beta {training.get('beta')}")
    for line in _header(s):
        say(line)
    say(f"state: {state_line(s)}")
    say("counts: " + ", ".join(f"{k} {v}" for k, v in s["counts"].items()) +
          f"  (of {cfg.get('candidates')} candidates)")
    if any(s["tokens"].values()):
        say(f"tokens: {s['tokens']['prompt_tokens']} prompt, {s['tokens']['completion_tokens']} completion")
    if s.get("budget"):
        say(f"budget: {s['budget']['line']}")
    many = any(r["n_seeds"] >= 2 for r in s["leaderboard"])
    say(f"\n{'rank':>4} {'id':>4}  {'name':<30} {'fitness':>7} {'± se' if many else 'eval se':>11} {'seeds':>5}  "
        f"{'vs dpo, paired [95% interval]':<30} {'kl':>7}")
    whats = []
    for i, r in enumerate(s["leaderboard"], 1):
        kl = f"{r['kl']:.3f}" if isinstance(r["kl"], (int, float)) else "-"
        tag = " (baseline)" if r["kind"] == "baseline" else ""
        notes = "  " + ", ".join(r["tags"]) if r["tags"] else ""
        p = r["vs_dpo"]
        vs = "(reference)" if r["kind"] == "baseline" and r["name"] == "dpo" else \
            f"{interval_text(p)} {noise_mark(p)}".rstrip()
        if p is not None and p["what"] not in whats:
            whats.append(p["what"])
        say(f"{i:>4} {r['id']:>4}  {(r['name'] + tag)[:30]:<30} {r['fitness']:>7.4f} {_se_cell(r):>11} "
            f"{r['n_seeds']:>5}  {vs:<30} {kl:>7}{notes}")
    if s["leaderboard"]:
        say(("± se: standard error of the fitness over the row's seeds; a one-seed row has no seed-level ±"
             " (\"eval\": its within-seed evaluation se, training noise not included)") if many else
            "eval se: one seed, so no seed-level ±: the within-seed evaluation se (training noise not included)")
        say("vs dpo: " + ("; ".join(whats) or "no interval") +
            "; ~ inside the noise floor (the interval contains 0 or the difference is below the smallest "
            "detectable), ? cannot tell")
    best = s["best"]
    if best:
        say(f"\nbest candidate: #{best['id']} {best['name']}  {best['fitness_text']}")
        for name, b in s["baselines"].items():
            if b["fitness"] is not None:
                pair = next((r["vs_baselines"].get(name) for r in s["leaderboard"] if r["id"] == best["id"]),
                            None)
                say(f"  vs {name:<6} {b['fitness_text']}")
                say(f"         {_paired_line(pair)}")
            else:
                say(f"  vs {name:<6} ({b['status']})")
    for r in s["in_progress"]:
        stage = f", stage {r['stage']}" if r.get("stage") else ""
        say(f"in progress: #{r['id']} {r['name']} ({r['status']}{stage})")
    return 0


def _show(args) -> int:
    from pathlib import Path

    from discovery.archive import Archive, ArchiveError
    from discovery.campaign import summary, tags
    from discovery.noise import fitness_text, paired_to, reference_row, se_words
    try:
        with Archive.open(args.dir) as archive:
            row = archive.find(args.candidate)
            s = summary(archive)
            ref = reference_row(archive.rows(kind="baseline"))
    except ArchiveError as err:
        return _fail(str(err))
    f = s["fitness"]
    context = {"noise": s["noise"], "floor": s["noise_floor"], "function": f["function"],
               "described": f["described"], "tags": tags(row), "se_is": se_words(row, f["function"], f["metric"]),
               "vs_dpo": None if ref is None or ref["id"] == row["id"] else paired_to(row, ref, f["metric"], s["noise"])}
    if args.json:
        print(json.dumps(row | {"noise": context["noise"], "vs_dpo": context["vs_dpo"],
                                "fitness_se_is": context["se_is"], "tags": context["tags"]},
                         indent=2, default=str))
        return 0
    folder = Path(args.dir) / row["folder"]
    say(f"#{row['id']} {row['name']}  [{row['kind']}, {row['status']}, proposer {row['proposer']}]"
        + "".join(f" ({t})" for t in context["tags"]))
    if row["fitness"] is not None:
        say(f"fitness: {fitness_text(row, context['function'])}  [{context['described']}]")
        if not (row["kind"] == "baseline" and row["name"] == "dpo"):
            say(f"vs dpo: {_paired_line(context['vs_dpo'])}")
        say(context["floor"])
    stage = (row["metrics"] or {}).get("stage") or {}
    if stage.get("screen"):
        decision = stage["screen"]
        say(f"screening on seed(s) {decision.get('seeds')}: "
            + ("promoted" if decision.get("promoted") else "screened out")
            + (f", {_paired_line(decision.get('paired'))}" if decision.get("paired") else ", no DPO result"))
    if row["reason"]:
        say(f"reason: {row['reason']}")
    say(f"\nhypothesis:\n  {row['thought'] or '(none)'}")
    say(f"\ncode:\n{row['code']}")
    checks = row["checks"] or {}
    if checks:
        say("checks: " + ("valid" if checks.get("valid") else f"invalid ({checks.get('reason')})"))
        listed = checks.get("checks") or {}
        if isinstance(listed, dict):  # {name: outcome} or [{"name", "passed", "reason"}, ...]
            listed = [{"name": k, "passed": v} for k, v in listed.items()]
        for c in listed:
            mark = ("skipped" if c.get("skipped") else "ok" if c.get("passed") in (True, None)
                    else "FAILED")
            say(f"  {c.get('name')}: {mark}" + (f" ({c['reason']})" if c.get("reason") else ""))
        if checks.get("layers"):
            say(f"  sandbox layers: {', '.join(checks['layers'])}")
        for w in checks.get("warnings") or []:
            say(f"  warning: {w}")
    inspection = row["inspection"] or {}
    summaries = sorted(folder.glob("inspection/*_summary.md"))
    if summaries:
        say("\nsymbolic summary:\n" + "\n".join(
            "  " + line for line in summaries[0].read_text(errors="replace").strip().splitlines()))
    elif inspection.get("closed_form"):
        say(f"\nsymbolic summary:\n  {json.dumps(inspection['closed_form'], default=str)}")
    if inspection.get("skipped") or inspection.get("error"):
        say(f"\ninspection: {inspection.get('skipped') or inspection.get('error')}")
    plots = sorted(str(p) for p in folder.rglob("*.png"))
    if plots:
        say("\nplots:\n" + "\n".join(f"  {p}" for p in plots))
    metrics = row["metrics"] or {}
    if metrics.get("mean"):
        # the means are over every numeric key (discovery.training.summarise), the seed and the
        # evaluation's sizes included: only the metrics are shown, each with its definition
        from inner_loop.commands import metric_lines
        seeds = [p.get("seed") for p in metrics.get("per_seed") or [] if p.get("status") == "done"]
        lines = metric_lines(metrics["mean"], indent="  ")
        if lines:
            say(f"\nmetrics (mean over {len(seeds) or '?'} seed(s){': ' + ', '.join(map(str, seeds)) if seeds else ''}):")
            for line in lines:
                say(line)
    if row["prompt_tokens"] is not None:
        say(f"\ntokens: {row['prompt_tokens']} prompt, {row['completion_tokens']} completion")
    timings = row["timings"] or {}
    if timings:
        say("timings: " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    say(f"\nfolder: {folder}")
    return 0
