"""Subcommands of ``disco`` that belong to inner_loop/: ``disco train``.

    disco train --objective dpo --task synthetic [--beta B] [--seed S] [--json]
    disco train --objective my_loss.py --set learning_rate=1e-3 --set max_steps=20
    disco train --recipe zephyr-gemma --model PATH --dataset PATH --objective lrml --out runs/z

What is asked is checked before anything is built (the objective and task names, every ``--set``
key against the fields it can reach, the ranges of ``--beta`` and ``--timeout``): a mistake is a
:class:`~discovery.config.UserError`, one line from ``disco``, exit 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys

from discovery.config import UserError, check


def register(subparsers) -> None:
    """Add this package's subcommands to the ``disco`` parser."""
    p = subparsers.add_parser("train", help="train one objective on a task (or a paper recipe) and score it")
    p.add_argument("--objective", default="dpo", help="registry name, .py file or source (default dpo)")
    p.add_argument("--task", default="synthetic", help="inner-loop task (default synthetic)")
    p.add_argument("--beta", type=float, default=None, help="KL strength (default: the task's or recipe's)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--isolation", default="auto", choices=("auto", "none", "process", "sandbox"),
                   help="where the training job runs (default auto: sandbox for source code)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before the job is killed (default 600)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training, task or recipe field (repeatable), e.g. --set max_steps=20")
    p.add_argument("--out", default=None, help="folder for result.json (recipes: the trained model)")
    p.add_argument("--recipe", default=None, help="a paper recipe instead of a task: zephyr-gemma, gemma-2b")
    p.add_argument("--model", default=None, help="recipe: hub id or local path of the SFT model")
    p.add_argument("--dataset", default=None, help="recipe: hub id, local dataset folder or JSONL file")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.replace("-", "_")] = _value(value)
    return out


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
    from inner_loop.recipes import Recipe
    if recipe:
        return {f"recipe {recipe}": _fields(Recipe, ("name", "description", "model", "dataset", "beta", "seed"))}
    from inner_loop.runner import RUNNER_OPTIONS
    from inner_loop.trainer import TrainConfig
    groups = {"training": _fields(TrainConfig, ("beta", "seed")), "runner": dict.fromkeys(RUNNER_OPTIONS)}
    if task == "synthetic":
        from inner_loop.synthetic import SyntheticConfig
        groups[f"task {task}"] = {**_fields(SyntheticConfig), "cache_dir": None}
    elif task and task.startswith("recipe:"):
        groups[f"task {task}"] = {**_fields(Recipe, ("name", "description", "seed")), "cache_dir": None}
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
        from inner_loop.recipes import recipe_names
        if args.recipe not in recipe_names():
            close = difflib.get_close_matches(args.recipe, recipe_names(), n=1)
            raise UserError(f"unknown recipe {args.recipe!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                            + f" (known: {', '.join(recipe_names())})")
    else:
        from inner_loop.tasks import TASKS
        TASKS.get(args.task)  # an unknown task raises with a "did you mean"
    check_objective(args.objective)
    check_overrides(overrides, args.task, args.recipe)
    return overrides


def _train(args) -> int:
    overrides = check_train_args(args)
    progress = not args.quiet
    if args.recipe:
        from inner_loop.recipes import run_recipe
        result = run_recipe(args.recipe, model=args.model, dataset=args.dataset, objective=args.objective,
                            beta=args.beta, seed=args.seed, out_dir=args.out, progress=progress, **overrides)
    else:
        from inner_loop.runner import run_candidate
        result = run_candidate(args.objective, task=args.task, beta=args.beta, seed=args.seed, out_dir=args.out,
                               isolation=args.isolation, timeout=args.timeout, progress=progress, **overrides)
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
    else:
        _print_human(result)
    return 0 if result.status == "done" else 1


def _print_human(result) -> None:
    print(f"status   {result.status}" + (f"  ({result.reason})" if result.reason else ""))
    print(f"steps    {result.steps}   seconds " +
          "  ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    if result.losses:
        print(f"loss     {result.losses[0]:.4f} -> {result.losses[-1]:.4f}")
    for key, value in (result.metrics or {}).items():
        print(f"{key:<8} {value:.4f}" if isinstance(value, float) else f"{key:<8} {value}")
    sys.stdout.flush()
