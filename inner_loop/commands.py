"""Subcommands of ``disco`` that belong to inner_loop/: ``disco train``.

    disco train --objective dpo --task synthetic [--beta B] [--seed S] [--json]
    disco train --objective my_loss.py --set learning_rate=1e-3 --set max_steps=20
    disco train --recipe zephyr-gemma --model PATH --dataset PATH --objective lrml --out runs/z
"""

from __future__ import annotations

import json
import sys


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
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        out[key.replace("-", "_")] = _value(value)
    return out


def _train(args) -> int:
    overrides = parse_sets(args.set)
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
