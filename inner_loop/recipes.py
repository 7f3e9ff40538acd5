"""Train a paper recipe outside a campaign: ``python -m inner_loop.recipes`` and :func:`run_recipe`.

Both train task ``recipe:<name>`` (:class:`inner_loop.recipe_task.RecipeTask`: the recipe files in
``inner_loop/recipe_files/``, its data handling and its defaults) through
:func:`inner_loop.runner.run_candidate` in this process (``isolation="none"``), and keep the
trained model (safetensors, config, tokenizer) in the output folder itself, beside
``result.json``. Several processes (GPUs, or CPU processes over gloo) run the same command once
per rank, started by :func:`inner_loop.distributed.run_distributed` (``python -m
inner_loop.distributed --nproc N ...``), which sizes the per-device batch and reads the result::

    accelerate launch --config_file inner_loop/recipe_files/accelerate_deepspeed_zero3_8gpu.yaml \\
        -m inner_loop.recipes --recipe zephyr-gemma --model PATH --dataset PATH --objective lrml --out DIR

Under such a launcher (``WORLD_SIZE`` > 1) every rank trains its share of each step; rank 0 alone
keeps the model, writes ``result.json`` and prints the result line (:mod:`inner_loop.runner`
returns before scoring on the other ranks); another rank whose training failed writes its result to
``rank-<r>.json`` in the output folder, so that the launcher's caller can say why the job died.
Each rank dies with the launcher (``PR_SET_PDEATHSIG``, set before the heavy imports): torchrun's
agent starts every rank in a session of its own, so killing the launcher's process group (a
deadline, a cancelled job) would otherwise leave the ranks running.

Recipes train trusted objectives in this process (they are for the final, reviewed candidates on
real models, not for screening LLM output; use :func:`inner_loop.runner.run_candidate` with its
default isolation for that).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _die_with_launcher() -> None:
    """SIGKILL this rank when its launcher (torchrun's agent, ``accelerate launch``) dies (Linux)."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal
    launcher = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != launcher:  # it died before the signal was armed
        os._exit(1)


if __name__ == "__main__" and os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
    _die_with_launcher()

from inner_loop.overrides import parse_sets  # noqa: E402 - after the rank is tied to its launcher
from inner_loop.recipe_task import load_recipe, recipe_names, task_fields  # noqa: E402
from inner_loop.runner import run_candidate  # noqa: E402
from inner_loop.train_config import TrainResult  # noqa: E402


def run_recipe(name: str, *, model: str | None = None, dataset: str | None = None, objective="lrml",
               beta: float | None = None, seed: int | None = None, out_dir: str | None = None,
               progress: bool = False, timeout: float = 600.0, objective_kind: str | None = None,
               **overrides) -> TrainResult:
    """Train ``model`` on ``dataset`` with ``objective`` as recipe ``name`` says, in this process;
    the model is kept in ``out_dir`` (``metrics["model_dir"]``). ``seed`` defaults to the recipe's;
    ``timeout``: seconds of training (checked between steps); ``objective_kind``: the objective's
    kind when already measured (not probed again); ``overrides``: recipe and TrainConfig fields (an
    unknown one raises ``TypeError``)."""
    task_over = {k: v for k, v in (("model", model), ("dataset", dataset)) if v is not None}
    if seed is None:
        seed = load_recipe(name, **task_fields({**overrides, **task_over}, name)).seed
    result = run_candidate(objective, task=f"recipe:{name}", beta=beta, seed=seed, out_dir=out_dir,
                           isolation="none", progress=progress, timeout=timeout, kind=objective_kind,
                           eval_kwargs={"model_dir": out_dir} if out_dir else None, **task_over, **overrides)
    if result.metrics:
        result.config["pairs"] = result.metrics.get("pairs")
    return result


RANK_RESULT = "rank-{rank}.json"  # a failed rank other than 0 writes its result here (in --out)


def launched_rank() -> tuple[int, int]:
    """(rank, world size) that ``torchrun`` / ``accelerate launch`` gave this process; (0, 1) alone."""
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        return 0, 1


def main(argv: list[str] | None = None) -> int:
    """``python -m inner_loop.recipes`` (what ``torchrun`` / ``accelerate launch`` runs on each rank)."""
    import argparse

    p = argparse.ArgumentParser(description="train a paper recipe with an objective")
    p.add_argument("--recipe", required=True, choices=recipe_names())
    p.add_argument("--model", default=None, help="hub id or local path (default: the recipe's)")
    p.add_argument("--dataset", default=None, help="hub id, JSONL file or dataset folder (default: the recipe's)")
    p.add_argument("--objective", default="lrml", help="registry name or .py file (default lrml)")
    p.add_argument("--objective-kind", default=None, help="the objective's kind, when already measured")
    p.add_argument("--seed", type=int, default=None, help="training seed (default: the recipe's)")
    p.add_argument("--beta", type=float, default=None, help="beta (default: the recipe's)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds of training (default 600)")
    p.add_argument("--out", default=None, help="folder for the trained model and result.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe or training field")
    args = p.parse_args(argv)
    result = run_recipe(args.recipe, model=args.model, dataset=args.dataset, objective=args.objective,
                        out_dir=args.out, progress=True, seed=args.seed, beta=args.beta, timeout=args.timeout,
                        objective_kind=args.objective_kind, **parse_sets(args.set))
    rank = launched_rank()[0]
    if rank == 0:
        print(json.dumps({k: v for k, v in result.to_dict().items() if k != "config"}, default=str))
    elif result.status != "done" and args.out:  # rank 0 may hang in a collective: say here why this one stopped
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / RANK_RESULT.format(rank=rank)).write_text(json.dumps(result.to_dict(), default=str))
    return 0 if result.status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
