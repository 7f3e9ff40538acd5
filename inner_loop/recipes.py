"""The paper's LLM recipes: DPO-stage training of an SFT chat model with any objective.

``run_recipe("zephyr-gemma", model=PATH_OR_HUB_ID, dataset=PATH_OR_HUB_ID, objective="lrml")``
loads a recipe (``inner_loop/recipes/<name>.yaml``, data only), tokenises the conversational
pairs once, lets TRL precompute the reference log-probs with the initial policy (no live
reference model during training), trains with :func:`inner_loop.trainer.train_objective` and
saves the policy (safetensors) to ``out_dir``. Multi-GPU::

    accelerate launch --config_file inner_loop/recipes/accelerate_deepspeed_zero3_8gpu.yaml \\
        -m inner_loop.recipes --recipe zephyr-gemma --model PATH --dataset PATH --objective lrml --out DIR

Dataset rows follow argilla/dpo-mix-7k: ``chosen`` and ``rejected`` are lists of
``{"role", "content"}`` messages that both start with the same conversation (the prompt: a user
turn, sometimes preceded by a system turn or earlier turns) and end with the differing assistant
reply. :func:`split_prompt` takes their longest common message prefix as the prompt.

TRL 1.16's DPOConfig has no ``max_prompt_length``; :func:`tokenize_pairs` truncates the prompt
itself, keeping its last ``max_prompt_length`` tokens (the end of the conversation, next to the
reply, as older TRL's ``keep_end`` prompt truncation did); ``max_length`` then cuts
prompt + reply with TRL's collator (``keep_start``).

Recipes train trusted objectives in this process (they are for the final, reviewed candidates on
real models, not for screening LLM output; use :func:`inner_loop.runner.run_candidate` for that).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import yaml

from inner_loop.train_config import TrainConfig

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One recipe file; training fields mirror :class:`inner_loop.trainer.TrainConfig`."""

    name: str
    description: str
    model: str                       # hub id or local path (overridden by run_recipe(model=...))
    dataset: str
    split: str = "train"
    chat_template: str = "zephyr"    # fallback template file (recipes/<name>.jinja) for tokenizers without one
    beta: float = 0.05
    learning_rate: float = 5e-7
    num_epochs: float = 2
    batch_size: int = 2
    grad_accum: int = 8
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    max_length: int = 1024
    max_prompt_length: int = 512
    precision: str = "bf16"
    gradient_checkpointing: bool = True
    seed: int = 42
    max_steps: int = -1
    accelerate_config: str | None = None

    def train_config(self, **overrides) -> TrainConfig:
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        values = {k: v for k, v in dataclasses.asdict(self).items() if k in fields}
        return TrainConfig(**{**values, **overrides})


RECIPE_FIELDS = frozenset(f.name for f in dataclasses.fields(Recipe))


def task_fields(overrides: dict) -> dict:
    """The ``overrides`` that are recipe fields (a run's other keys are not the recipe's)."""
    return {k: v for k, v in overrides.items() if k in RECIPE_FIELDS}


def train_defaults(recipe: Recipe) -> dict:
    """The recipe's training hyper-parameters as TrainConfig fields (beta and seed aside: the run's)."""
    train = dataclasses.asdict(recipe.train_config())
    return {k: v for k, v in train.items() if k not in ("beta", "seed")}


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml") if not p.stem.startswith("accelerate"))


def load_recipe(name: str, **overrides) -> Recipe:
    path = RECIPE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(recipe_names())}")
    data = {"name": name, **yaml.safe_load(path.read_text()), **overrides}
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TypeError(f"unknown recipe field(s) {unknown}; known: {sorted(known)}")
    return Recipe(**data)


def chat_template(name: str) -> str:
    return (RECIPE_DIR / f"{name}.jinja").read_text()


# -- data ----------------------------------------------------------------------------------------

def split_prompt(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt messages, chosen reply messages, rejected reply messages) of one dpo-mix-7k row."""
    n = 0
    while (n < min(len(chosen), len(rejected)) - 1 and chosen[n]["role"] == rejected[n]["role"]
           and chosen[n]["content"] == rejected[n]["content"]):
        n += 1
    prompt, chosen_reply, rejected_reply = chosen[:n], chosen[n:], rejected[n:]
    if not prompt or not chosen_reply or not rejected_reply:
        raise ValueError("a row needs a shared prompt and a reply on each side")
    if chosen_reply[0]["role"] != "assistant" or rejected_reply[0]["role"] != "assistant":
        raise ValueError("the replies must start with an assistant turn")
    return prompt, chosen_reply, rejected_reply


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]  # the template writes bos itself


def tokenize_pairs(rows, tokenizer, max_prompt_length: int | None):
    """Conversational rows -> a Dataset with TRL's ``prompt_ids``/``chosen_ids``/``rejected_ids``."""
    from datasets import Dataset
    out = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    for row in rows:
        prompt, chosen, rejected = split_prompt(row["chosen"], row["rejected"])
        prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        prompt_ids = _ids(tokenizer, prompt_text)
        replies = []
        for reply in (chosen, rejected):
            full = _ids(tokenizer, tokenizer.apply_chat_template(prompt + reply, tokenize=False))
            shared = 0
            while shared < min(len(full), len(prompt_ids)) and full[shared] == prompt_ids[shared]:
                shared += 1
            replies.append(full[shared:])
            if shared < len(prompt_ids):  # the template rendered the prompt differently: cut it there
                prompt_ids = prompt_ids[:shared]
        if max_prompt_length and len(prompt_ids) > max_prompt_length:
            prompt_ids = prompt_ids[-max_prompt_length:]  # keep the end of the conversation
        out["prompt_ids"].append(prompt_ids)
        out["chosen_ids"].append(replies[0])
        out["rejected_ids"].append(replies[1])
    return Dataset.from_dict(out)


def load_rows(dataset: str, split: str = "train"):
    """A JSONL/JSON file, a ``save_to_disk`` folder, a folder of data files, or a hub id."""
    import datasets
    path = Path(dataset)
    if path.is_file():
        return datasets.load_dataset("json", data_files=str(path), split="train")
    if path.is_dir() and (path / "dataset_info.json").exists():
        loaded = datasets.load_from_disk(str(path))
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    return datasets.load_dataset(dataset, split=split)


# -- training ------------------------------------------------------------------------------------

def run_recipe(name: str, *, model: str | None = None, dataset: str | None = None, objective="lrml",
               beta: float | None = None, seed: int | None = None, out_dir: str | None = None,
               progress: bool = False, **overrides):
    """Train ``model`` on ``dataset`` with ``objective`` as recipe ``name`` says; returns a
    :class:`inner_loop.runner.TrainResult` (``metrics`` holds the training summary: downstream
    evaluation of the saved model is evaluation/'s job)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import objectives
    from inner_loop.runner import TrainResult
    from inner_loop.trainer import train_objective

    recipe_fields = {f.name for f in dataclasses.fields(Recipe)}
    recipe = load_recipe(name, **{k: v for k, v in overrides.items() if k in recipe_fields})
    extra = {k: v for k, v in overrides.items() if k not in recipe_fields}
    if extra:
        raise TypeError(f"unknown override(s) {sorted(extra)} for a recipe")
    recipe = dataclasses.replace(recipe, model=model or recipe.model, dataset=dataset or recipe.dataset,
                                 beta=recipe.beta if beta is None else beta,
                                 seed=recipe.seed if seed is None else seed)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(recipe.model)
    if not tokenizer.chat_template:
        tokenizer.chat_template = chat_template(recipe.chat_template)
    rows = load_rows(recipe.dataset, recipe.split)
    pairs = tokenize_pairs(rows, tokenizer, recipe.max_prompt_length)
    dtype = torch.bfloat16 if recipe.precision == "bf16" else torch.float32
    policy = AutoModelForCausalLM.from_pretrained(recipe.model, dtype=dtype)
    obj = objectives.load(objective)
    config = recipe.train_config()
    outcome = train_objective(policy, tokenizer, pairs, obj, config, output_dir=out_dir, progress=progress)
    resolved = {"recipe": dataclasses.asdict(recipe), "objective": obj.name, "train": dataclasses.asdict(config),
                "pairs": len(pairs)}
    if outcome.status == "done" and out_dir:
        policy.save_pretrained(out_dir)  # safetensors
        tokenizer.save_pretrained(out_dir)
    train_logs = [row for row in outcome.log_history if "loss" in row]
    summary = {k: v for k, v in (train_logs[-1] if train_logs else {}).items() if isinstance(v, (int, float))}
    result = TrainResult(status=outcome.status, reason=outcome.reason, metrics=summary or None,
                         losses=outcome.losses, steps=outcome.steps,
                         seconds={"train": outcome.seconds, "total": time.perf_counter() - start},
                         config=resolved, step=outcome.step)
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "result.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m inner_loop.recipes`` (what ``accelerate launch`` runs on each GPU)."""
    import argparse

    from inner_loop.commands import parse_sets
    p = argparse.ArgumentParser(description="train a paper recipe with an objective")
    p.add_argument("--recipe", required=True, choices=recipe_names())
    p.add_argument("--model", default=None, help="hub id or local path (default: the recipe's)")
    p.add_argument("--dataset", default=None, help="hub id, JSONL file or dataset folder (default: the recipe's)")
    p.add_argument("--objective", default="lrml", help="registry name or .py file (default lrml)")
    p.add_argument("--out", default=None, help="folder for the trained model and result.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    args = p.parse_args(argv)
    result = run_recipe(args.recipe, model=args.model, dataset=args.dataset, objective=args.objective,
                        out_dir=args.out, progress=True, **parse_sets(args.set))
    print(json.dumps({k: v for k, v in result.to_dict().items() if k != "config"}, default=str))
    return 0 if result.status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
