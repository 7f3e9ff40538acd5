"""Train a paper recipe outside a campaign: ``python -m inner_loop.recipes`` and :func:`run_recipe`.

Both train task ``recipe:<name>`` (:class:`inner_loop.recipe_task.RecipeTask`: the recipe files in
``inner_loop/recipe_files/``, its data handling and its defaults) through
:func:`inner_loop.runner.run_candidate` in this process (``isolation="none"``), and keep the
trained model (safetensors, config, tokenizer) in the output folder itself, beside
``result.json``. Multi-GPU (what ``accelerate launch`` runs on each GPU)::

    accelerate launch --config_file inner_loop/recipe_files/accelerate_deepspeed_zero3_8gpu.yaml \\
        -m inner_loop.recipes --recipe zephyr-gemma --model PATH --dataset PATH --objective lrml --out DIR

Recipes train trusted objectives in this process (they are for the final, reviewed candidates on
real models, not for screening LLM output; use :func:`inner_loop.runner.run_candidate` with its
default isolation for that).
"""

from __future__ import annotations

import json
import sys

from inner_loop.overrides import parse_sets
from inner_loop.recipe_task import load_recipe, recipe_names, task_fields
from inner_loop.runner import run_candidate
from inner_loop.train_config import TrainResult


def run_recipe(name: str, *, model: str | None = None, dataset: str | None = None, objective="lrml",
               beta: float | None = None, seed: int | None = None, out_dir: str | None = None,
               progress: bool = False, **overrides) -> TrainResult:
    """Train ``model`` on ``dataset`` with ``objective`` as recipe ``name`` says, in this process;
    the model is kept in ``out_dir`` (``metrics["model_dir"]``). ``seed`` defaults to the recipe's;
    ``overrides``: recipe and TrainConfig fields (an unknown one raises ``TypeError``)."""
    task_over = {k: v for k, v in (("model", model), ("dataset", dataset)) if v is not None}
    if seed is None:
        seed = load_recipe(name, **task_fields({**overrides, **task_over}, name)).seed
    result = run_candidate(objective, task=f"recipe:{name}", beta=beta, seed=seed, out_dir=out_dir,
                           isolation="none", progress=progress,
                           eval_kwargs={"model_dir": out_dir} if out_dir else None, **task_over, **overrides)
    if result.metrics:
        result.config["pairs"] = result.metrics.get("pairs")
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m inner_loop.recipes`` (what ``accelerate launch`` runs on each GPU)."""
    import argparse

    p = argparse.ArgumentParser(description="train a paper recipe with an objective")
    p.add_argument("--recipe", required=True, choices=recipe_names())
    p.add_argument("--model", default=None, help="hub id or local path (default: the recipe's)")
    p.add_argument("--dataset", default=None, help="hub id, JSONL file or dataset folder (default: the recipe's)")
    p.add_argument("--objective", default="lrml", help="registry name or .py file (default lrml)")
    p.add_argument("--out", default=None, help="folder for the trained model and result.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe or training field")
    args = p.parse_args(argv)
    result = run_recipe(args.recipe, model=args.model, dataset=args.dataset, objective=args.objective,
                        out_dir=args.out, progress=True, **parse_sets(args.set))
    print(json.dumps({k: v for k, v in result.to_dict().items() if k != "config"}, default=str))
    return 0 if result.status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
