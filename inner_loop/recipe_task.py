"""A paper recipe as an inner-loop task: train an SFT chat model on dpo-mix-style pairs and keep it.

``run_candidate(objective, task="recipe:zephyr-gemma", model=PATH, dataset=PATH, ...)`` trains the
recipe's model (:mod:`inner_loop.recipes`: chat template, prompt split and truncation, the recipe's
hyper-parameters as training defaults) with the candidate objective through the runner's usual
path, then, instead of scoring against a gold reward (a recipe has none), saves the trained policy
to ``out_dir/model`` (``from_pretrained``-loadable: safetensors, config, tokenizer with its chat
template). Its metrics hold ``model_dir`` and the training-loss summary; the score comes later,
from a judge (:mod:`evaluation.fitness`: MT-Bench or AlpacaEval).

Overrides: ``model``, ``dataset``, ``split``, ``chat_template``, ``max_prompt_length`` and ``beta``
go to the recipe (its other fields are :class:`~inner_loop.trainer.TrainConfig` fields and reach
training through the runner: ``max_steps``, ``learning_rate``, ``batch_size`` ...). The recipe's
own ``seed`` is ignored: the run's seed is the campaign's.

Isolation is the runner's, unchanged: a registry name trains in this process; source code trains
in the sandbox (or a plain child process) from a world-readable copy of the model, tokenizer and
tokenised pairs, and the trusted parent loads only the job's tensors, strictly, into the recipe's
own model (see :mod:`inner_loop.runner`'s threat model) before saving it. So isolated runs need a
*local* model folder (it is copied once per process: budget the disk for a 7B model), and on a
GPU the sandbox's address-space limit (``memory_mb``) must be large or the mode ``"process"``.
Not protected against, beyond the runner's list: a policy trained to please the judge, which is
the search working, and what a held-out benchmark is for.

The recipe runs in one process on one device; the 8-GPU DeepSpeed launch of
:mod:`inner_loop.recipes` is for the final, reviewed candidates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from functools import cached_property
from pathlib import Path

from inner_loop import recipes
from inner_loop.task import Task

MODEL_SUBDIR = "model"
_BUILT: dict[str, "RecipeTask"] = {}  # resolved recipe -> task: tokenise the pairs once per process


class RecipeTask(Task):
    """Recipe ``config`` as a task; the tokenizer and the pairs are built on first use."""

    keeps_policy = True  # score() saves the model folder: the runner writes no policy.safetensors

    def __init__(self, config: recipes.Recipe):
        self.config = config
        self.name = f"recipe:{config.name}"
        self.default_beta = config.beta
        self.train_defaults = recipes.train_defaults(config)
        self.max_completion_len = config.max_length
        digest = hashlib.sha256(json.dumps(dataclasses.asdict(config), sort_keys=True).encode()).hexdigest()
        self.path = Path(tempfile.gettempdir()) / f"disco-recipe-{digest[:16]}"  # a key, never written

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(self.config.model)
        if not tokenizer.chat_template:
            tokenizer.chat_template = recipes.chat_template(self.config.chat_template)
        return tokenizer

    @cached_property
    def train_pairs(self):
        rows = recipes.load_rows(self.config.dataset, self.config.split)
        return recipes.tokenize_pairs(rows, self.tokenizer, self.config.max_prompt_length)

    @property
    def sft_path(self) -> Path:
        """The model folder an isolated job copies; a hub id has none to copy."""
        path = Path(self.config.model)
        if not path.is_dir():
            raise ValueError(f"isolated training of a recipe needs a local model folder, not {self.config.model!r}"
                             " (download it once and pass model=PATH)")
        return path

    def load_sft(self):
        import torch
        from transformers import AutoModelForCausalLM
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float32
        return AutoModelForCausalLM.from_pretrained(self.config.model, dtype=dtype)

    def score(self, policy, *, seed: int, out_dir: str | None, losses: list[float], **eval_kwargs) -> dict:
        """Keep the policy (a recipe has no gold reward: a judge scores the kept model later,
        evaluation.fitness' mt_bench / alpaca_eval): save it with the tokenizer to ``out_dir/model``
        (a fresh temporary folder without ``out_dir``); the metrics are its folder and a summary of
        the training loss."""
        folder = Path(out_dir) / MODEL_SUBDIR if out_dir else Path(tempfile.mkdtemp(prefix="disco-policy-"))
        policy.config.use_cache = True  # gradient checkpointing turns it off; generation wants it
        policy.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
        tail = losses[-max(1, len(losses) // 10):] if losses else []
        return {"model_dir": str(folder.resolve()), "pairs": len(self.train_pairs),
                "train_loss_first": losses[0] if losses else None,
                "train_loss_last": losses[-1] if losses else None,
                "train_loss_tail_mean": sum(tail) / len(tail) if tail else None}


def build(name: str, cache_dir=None, progress: bool = True, **overrides) -> RecipeTask:
    """Task ``recipe:<name>`` with recipe-field ``overrides`` (unknown fields raise)."""
    config = recipes.load_recipe(name, **overrides)
    key = json.dumps(dataclasses.asdict(config), sort_keys=True)
    if key not in _BUILT:
        _BUILT[key] = RecipeTask(config)
    return _BUILT[key]
