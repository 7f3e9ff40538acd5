"""Subcommands of ``disco`` that belong to inner_loop/: ``disco train``.

    disco train --objective dpo --task synthetic [--beta B] [--seed S] [--json]
    disco train --objective my_loss.py --set learning_rate=1e-3 --set max_steps=20
    disco train --recipe zephyr-gemma --model PATH --dataset PATH --objective lrml --out runs/z

What is asked is checked before anything is built (the objective and task names, every ``--set``
key against the fields it can reach, the ranges of ``--beta`` and ``--timeout``): a mistake is a
:class:`~inner_loop.overrides.UserError`, one line from ``disco``, exit 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import os
import sys
from pathlib import Path

from inner_loop.overrides import UserError, check, parse_sets


def register(subparsers) -> None:
    """Add this package's subcommands to the ``disco`` parser."""
    p = subparsers.add_parser("train", help="train one objective on a task (or a paper recipe) and score it")
    p.add_argument("--objective", default="dpo", help="registry name, .py file or source (default dpo)")
    p.add_argument("--task", default="synthetic", help="inner-loop task (default synthetic)")
    p.add_argument("--beta", type=float, default=None, help="KL strength (default: the task's or recipe's)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"),
                   help="where to train and score (default auto: the task's choice; the embedded tasks run on "
                        "the CPU even beside a GPU, recipes on the GPU when one is visible)")
    p.add_argument("--isolation", default="auto", choices=("auto", "none", "process", "sandbox"),
                   help="where the training job runs (default auto: sandbox for source code)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before the job is killed (default 600)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training, task or recipe field (repeatable), e.g. --set max_steps=20")
    p.add_argument("--out", default=None, help="folder for result.json, the trained policy (policy.safetensors; "
                   "recipes: model/), loss_curve.png and train.log")
    p.add_argument("--recipe", default=None, help="a paper recipe instead of a task: zephyr-gemma, gemma-2b, tldr, imdb "
                   "(inner_loop/recipe_files/)")
    p.add_argument("--model", default=None, help="recipe: hub id or local path of the SFT model")
    p.add_argument("--dataset", default=None, help="recipe: hub id, local dataset folder or JSONL file")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar, no training logs or library warnings on the terminal "
                        "(with --out they go to DIR/train.log)")
    p.set_defaults(func=_train)


# keys a flag sets: `--set beta=...` would clash with --beta (the synthetic task's own default beta
# is its field `beta`, which --set may change)
FLAG_KEYS = {"seed": "--seed", "model": "--model", "dataset": "--dataset", "objective": "--objective",
             "task": "--task", "out_dir": "--out", "isolation": "--isolation", "timeout": "--timeout",
             "progress": "--quiet"}


def _fields(cls, drop=()) -> dict:
    return {f.name: (f.default if f.default is not dataclasses.MISSING else None)
            for f in dataclasses.fields(cls) if f.name not in drop}


def override_fields(task: str | None, recipe: str | None = None) -> dict[str, dict] | None:
    """The keys ``--set`` may name, by where they go (``{"training": {field: default}, ...}``), for
    ``task`` (run_candidate) or ``recipe`` (run_recipe); None for a task whose fields are unknown."""
    from inner_loop.recipe_task import config_class, recipe_names
    if recipe:
        return {f"recipe {recipe}": _fields(config_class(recipe), ("name", "description", "kind", "model", "dataset",
                                                                  "beta", "seed"))}
    from inner_loop.train_config import RUNNER_OPTIONS, TrainConfig
    groups = {"training": _fields(TrainConfig, ("beta", "seed")), "runner": dict.fromkeys(RUNNER_OPTIONS)}
    if task == "synthetic":
        from inner_loop.synthetic import SyntheticConfig
        groups[f"task {task}"] = {**_fields(SyntheticConfig), "cache_dir": None}
    elif task and task.startswith("recipe:") and task[len("recipe:"):] in recipe_names():
        groups[f"task {task}"] = {**_fields(config_class(task[len("recipe:"):]), ("name", "description", "kind",
                                                                                   "seed")), "cache_dir": None}
    else:
        return None
    return groups


def check_overrides(overrides: dict, task: str | None, recipe: str | None = None, flag: str = "--set") -> None:
    """Refuse (:class:`UserError`) a key no field of the training, the runner or the task has
    (with a "did you mean"), and a value of the wrong type for a numeric or boolean field."""
    groups = override_fields(task, recipe)
    if groups is None:
        return
    known = {k: d for fields in groups.values() for k, d in fields.items()}
    for key, value in overrides.items():
        if key in FLAG_KEYS and key not in known:
            raise UserError(f"{flag} {key}=...: use {FLAG_KEYS[key]} instead"
                            + (" (the synthetic task's data seed is data_seed)" if key == "seed" else ""))
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            valid = "; ".join(f"{where}: {', '.join(sorted(fields))}" for where, fields in groups.items())
            raise UserError(f"unknown {flag} key {key!r}{hint} (valid keys: {valid})")
        default = known[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise UserError(f"{flag} {key} must be true or false, not {value!r}")
        elif isinstance(default, int):
            check(f"{flag} {key}", value, "int")
        elif isinstance(default, float):
            check(f"{flag} {key}", value, ">= 0" if default >= 0 else "number")
    if task == "synthetic" and not recipe:  # its own cross-field checks, before anything is built
        from inner_loop.synthetic import SyntheticConfig
        task_keys = {k: v for k, v in overrides.items() if k in groups["task synthetic"] and k != "cache_dir"}
        try:
            SyntheticConfig.with_overrides(**task_keys)
        except (TypeError, ValueError) as err:
            raise UserError(f"{flag}: synthetic task: {err}") from None


def check_objective(objective: str) -> None:
    """A registry name must be registered (an unknown one raises with a "did you mean"); a .py path
    must exist. Source code is left to the runner's screen."""
    from pathlib import Path
    if "def " in objective:
        return
    if objective.endswith(".py") or "/" in objective:
        if not Path(objective).is_file():
            raise UserError(f"no such objective file: {objective}")
        return
    import objectives
    objectives.get(objective)


def check_train_args(args) -> dict:
    """Everything ``disco train`` was asked, checked; returns the ``--set`` overrides."""
    overrides = parse_sets(args.set)
    if args.beta is not None:
        check("--beta", args.beta, "> 0")
    check("--timeout", args.timeout, "> 0")
    if args.recipe:
        from inner_loop.recipe_task import recipe_names
        if args.recipe not in recipe_names():
            close = difflib.get_close_matches(args.recipe, recipe_names(), n=1)
            raise UserError(f"unknown recipe {args.recipe!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                            + f" (known: {', '.join(recipe_names())})")
    else:
        from inner_loop.tasks import TASKS
        TASKS.get(args.task)  # an unknown task raises with a "did you mean"
    check_objective(args.objective)
    check_overrides(overrides, args.task, args.recipe)
    if args.device is not None:
        if args.device == "cuda":
            import torch
            if not torch.cuda.is_available():
                raise UserError("--device cuda: no CUDA device is visible (use --device cpu or auto)")
        overrides["device"] = args.device
    return overrides


@contextlib.contextmanager
def quiet_output(quiet: bool, folder: str | None = None):
    """``--quiet``: for the block, the libraries' progress bars and warnings are off and whatever
    the run prints (Trainer's log lines, warnings) goes to ``folder/train.log``, or nowhere without
    a folder. Not quiet: nothing changes."""
    if not quiet:
        yield
        return
    from pathlib import Path

    from inner_loop.synthetic import quiet_libraries
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        sink = open(Path(folder) / "train.log", "a")
    else:
        sink = open(os.devnull, "w")
    with sink, quiet_libraries(True), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def _train(args) -> int:
    overrides = check_train_args(args)
    progress = not args.quiet
    with quiet_output(args.quiet, args.out):
        if args.recipe:
            from inner_loop.recipes import run_recipe
            result = run_recipe(args.recipe, model=args.model, dataset=args.dataset, objective=args.objective,
                                beta=args.beta, seed=args.seed, out_dir=args.out, progress=progress, **overrides)
        else:
            from inner_loop.runner import run_candidate
            result = run_candidate(args.objective, task=args.task, beta=args.beta, seed=args.seed,
                                   out_dir=args.out, isolation=args.isolation, timeout=args.timeout,
                                   progress=progress, **overrides)
    if args.out and result.losses:
        plot_losses(result.losses, Path(args.out) / "loss_curve.png", title=f"{args.objective} (seed {args.seed})")
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
    else:
        _print_human(result, args.out)
    return 0 if result.status == "done" else 1


def plot_losses(losses: list[float], path: Path, title: str = "") -> Path:
    """The objective's training loss per optimizer step as a PNG (the job's own log: a claim, not a score)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(range(1, len(losses) + 1), losses, marker=".", lw=1)
    ax.set(xlabel="optimizer step", ylabel="objective loss (batch mean)", title=title[:80])
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# what describes an evaluation rather than scores the policy (inner_loop.metrics' dict): never
# averaged or listed as a metric (``disco show``), shown once as a line of context (``disco train``)
RUN_INFO_KEYS = ("n", "n_prompts", "n_samples_per_prompt", "seed", "max_completion_len", "seconds",
                 "kl_direction", "per_prompt")
# TRL's / transformers' Trainer log keys without a "/" (those with one, rewards/chosen, logps/...,
# are TRL's too): the metrics of a recipe's result.json written before recipes trained through RecipeTask
# were its last training-log row
TRL_PLAIN_KEYS = ("loss", "grad_norm", "learning_rate", "epoch", "train_loss", "train_runtime",
                  "train_samples_per_second", "train_steps_per_second", "total_flos", "step")
SE_NOTE = "± is the standard error over held-out prompts (one seed's evaluation noise only)"
README_POINTER = 'full definitions: README.md, section "Metrics" (and the docstring of inner_loop/metrics.py)'


def trl_key(key: str) -> str | None:
    """``key`` as shown when it is one of TRL's training-log keys (``trl/rewards/chosen``), else None."""
    if key.startswith("trl/"):
        return key
    if "/" in key or key in TRL_PLAIN_KEYS:
        return f"trl/{key}"
    return None


def metric_keys(metrics: dict) -> list[str]:
    """The keys of ``metrics`` that are numbers scoring the run: no run information (seed, n, ...),
    no per-prompt arrays, no strings; the glossary's order first."""
    from inner_loop.glossary import GLOSSARY
    keys = [k for k, v in metrics.items() if k not in RUN_INFO_KEYS and isinstance(v, (int, float))
            and not isinstance(v, bool)]
    order = {k: i for i, k in enumerate(GLOSSARY)}
    return sorted(keys, key=lambda k: (trl_key(k) is not None, order.get(k, len(order))))


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def metric_lines(metrics: dict, *, indent: str = "", width: int | None = None) -> list[str]:
    """Each metric of ``metrics`` on a line with its one-line definition from
    :mod:`inner_loop.glossary` (a standard error folded in as ``± se``), TRL's log keys under
    ``trl/`` with :data:`~inner_loop.glossary.TRL_NOTE`, and a pointer to the README."""
    import shutil
    import textwrap

    from inner_loop.glossary import TRL_NOTE, define
    width = width or max(60, min(shutil.get_terminal_size((120, 24)).columns, 160))
    keys = metric_keys(metrics)
    folded = {k for k in keys if k.endswith("_se") and k[:-3] in keys}
    rows = []
    for key in keys:
        if key in folded:
            continue
        shown = trl_key(key) or key
        value = _number(metrics[key])
        if f"{key}_se" in folded:
            value += f" ± {_number(metrics[key + '_se'])}"
        rows.append((shown, value, "" if shown.startswith("trl/") else define(key)))
    if not rows:
        return []
    kw = max(len(r[0]) for r in rows)
    vw = max(len(r[1]) for r in rows)
    lead = len(indent) + kw + vw + 4
    lines = []
    for shown, value, definition in rows:
        head = f"{indent}{shown:<{kw}}  {value:<{vw}}"
        if not definition:
            lines.append(head.rstrip())
            continue
        wrapped = textwrap.wrap(definition, max(40, width - lead)) or [""]
        lines.append(f"{head}  {wrapped[0]}")
        lines.extend(" " * lead + more for more in wrapped[1:])
    notes = []
    if folded:
        notes.append(SE_NOTE)
    if any(r[0].startswith("trl/") for r in rows):
        notes.append(TRL_NOTE)
    notes.append(README_POINTER)
    for note in notes:
        lines.extend(textwrap.wrap(note, max(40, width - len(indent)), initial_indent=indent,
                                   subsequent_indent=indent + "  "))
    return lines


def _evaluation_line(metrics: dict) -> str | None:
    m = metrics
    if not all(isinstance(m.get(k), int) for k in ("n_prompts", "n_samples_per_prompt")):
        return None
    line = f"scored on {m['n_prompts']} held-out prompts x {m['n_samples_per_prompt']} samples"
    if isinstance(m.get("max_completion_len"), int):
        line += f" of at most {m['max_completion_len']} tokens"
    if isinstance(m.get("seed"), int):
        line += f", sampling seed {m['seed']}"
    return line


def _print_human(result, out_dir: str | None = None) -> None:
    print(f"status   {result.status}" + (f"  ({result.reason})" if result.reason else ""))
    print(f"steps    {result.steps}   seconds " +
          "  ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    if result.losses:
        print(f"loss     {result.losses[0]:.4f} -> {result.losses[-1]:.4f}   "
              "(the objective's training loss, first and last step)")
    metrics = result.metrics or {}
    if metrics:
        print(f"\n{_evaluation_line(metrics) or 'metrics'}:")
        for text in metric_lines(metrics):
            print(text)
        others = {k: v for k, v in metrics.items() if k not in RUN_INFO_KEYS and k not in metric_keys(metrics)}
        for key, value in others.items():  # a recipe's model_dir, say
            print(f"{key}  {value}")
        if isinstance(metrics.get("per_prompt"), dict):
            where = f"{out_dir}/result.json" if out_dir else "--out DIR (DIR/result.json)"
            print(f"per-prompt values: --json, or {where}")
    sys.stdout.flush()
