"""A paper recipe as an inner-loop task: train an SFT chat model on dpo-mix-style pairs and keep it.

A recipe (``inner_loop/recipe_files/<name>.yaml``, data only: :class:`Recipe`) names a model, a dataset
and the paper's DPO-stage hyper-parameters. Task ``recipe:<name>`` (:class:`RecipeTask`; :mod:`inner_loop.recipe_task` picks a recipe file's kind) tokenises
the conversational pairs once (no reference log-probs: TRL precomputes them with the initial policy,
so no live reference model trains alongside), takes the recipe's hyper-parameters as its training
defaults, and its :meth:`~RecipeTask.score`, instead of a gold reward (a recipe has none), saves the
trained policy to ``out_dir/model`` (``from_pretrained``-loadable: safetensors, config, tokenizer
with its chat template). Its metrics hold ``model_dir`` and the training-loss summary; the score
comes later, from a judge (:mod:`evaluation.fitness`: MT-Bench or AlpacaEval)::

    run_candidate(objective, task="recipe:zephyr-gemma", model=PATH, dataset=PATH, ...)

Dataset rows follow argilla/dpo-mix-7k: ``chosen`` and ``rejected`` are lists of
``{"role", "content"}`` messages that both start with the same conversation (the prompt: a user
turn, sometimes preceded by a system turn or earlier turns) and end with the differing assistant
reply. :func:`split_prompt` takes their longest common message prefix as the prompt.

TRL 1.16's DPOConfig has no ``max_prompt_length``; :func:`tokenize_pairs` truncates the prompt
itself, keeping its last ``max_prompt_length`` tokens (the end of the conversation, next to the
reply, as older TRL's ``keep_end`` prompt truncation did); ``max_length`` then cuts
prompt + reply with TRL's collator (``keep_start``).

Overrides: ``model``, ``dataset``, ``split``, ``chat_template``, ``max_prompt_length`` and ``beta``
go to the recipe (its other fields are :class:`~inner_loop.train_config.TrainConfig` fields and
reach training through the runner: ``max_steps``, ``learning_rate``, ``batch_size`` ...). The
recipe's own ``seed`` is ignored: the run's seed is the campaign's.

Isolation is the runner's, unchanged: a registry name trains in this process; source code trains
in the sandbox (or a plain child process) from a world-readable copy of the model, tokenizer and
tokenised pairs, and the trusted parent loads only the job's tensors, strictly, into the recipe's
own model (see :mod:`inner_loop.runner`'s threat model) before saving it. So isolated runs need a
*local* model folder (it is copied once per process: budget the disk for a 7B model), and on a
GPU the sandbox's address-space limit (``memory_mb``) must be large or the mode ``"process"``.
Not protected against, beyond the runner's list: a policy trained to please the judge, which is
the search working, and what a held-out benchmark is for.

The task runs in one process on one device; ``accelerate launch -m inner_loop.recipes``
(:mod:`inner_loop.recipes`) runs the same task on several GPUs, for the final, reviewed candidates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from functools import cached_property
from pathlib import Path


from inner_loop.task import Task
from inner_loop.train_config import TrainConfig

RECIPE_DIR = Path(__file__).resolve().parent / "recipe_files"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One recipe file; training fields mirror :class:`inner_loop.trainer.TrainConfig`."""

    name: str
    description: str
    model: str                       # hub id or local path (overridden by run_recipe(model=...))
    dataset: str
    kind: str = "chat"               # chat (this module), tldr (inner_loop.tldr), imdb (inner_loop.imdb)
    split: str = "train"
    chat_template: str = "zephyr"    # fallback template file (recipe_files/<name>.jinja) for tokenizers without one
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


def train_defaults(recipe: Recipe) -> dict:
    """The recipe's training hyper-parameters as TrainConfig fields (beta and seed aside: the run's)."""
    train = dataclasses.asdict(recipe.train_config())
    return {k: v for k, v in train.items() if k not in ("beta", "seed")}


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml") if not p.stem.startswith("accelerate"))


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


def tokenize_text_pairs(rows, tokenizer, max_prompt_length: int | None, max_length: int | None = None):
    """Plain-text pairs (``{"prompt", "chosen", "rejected"}`` strings, a base language model, no chat
    template) -> TRL's ``prompt_ids``/``chosen_ids``/``rejected_ids``: the prompt as the tokenizer
    writes it (its bos, if it adds one), each reply followed by eos, the prompt cut to its last
    ``max_prompt_length`` tokens and each reply to ``max_length`` minus the prompt's (keeping its start).
    """
    from datasets import Dataset
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token: replies need one to end")
    out = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    for row in rows:
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        if max_prompt_length and len(prompt_ids) > max_prompt_length:
            prompt_ids = prompt_ids[-max_prompt_length:]
        room = max(1, max_length - len(prompt_ids)) if max_length else None
        replies = [(_ids(tokenizer, row[side]) + [eos])[:room] for side in ("chosen", "rejected")]
        out["prompt_ids"].append(prompt_ids)
        out["chosen_ids"].append(replies[0])
        out["rejected_ids"].append(replies[1])
    return Dataset.from_dict(out)


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


# -- the task ------------------------------------------------------------------------------------

MODEL_SUBDIR = "model"
class RecipeTask(Task):
    """Recipe ``config`` as a task; the tokenizer and the pairs are built on first use."""

    keeps_policy = True  # score() saves the model folder: the runner writes no policy.safetensors
    device = "cuda"      # a recipe's model trains on the GPU when one is visible (else the CPU)

    def __init__(self, config: Recipe):
        self.config = config
        self.name = f"recipe:{config.name}"
        self.default_beta = config.beta
        self.train_defaults = train_defaults(config)
        self.max_completion_len = config.max_length
        digest = hashlib.sha256(json.dumps(dataclasses.asdict(config), sort_keys=True).encode()).hexdigest()
        self.path = Path(tempfile.gettempdir()) / f"disco-recipe-{digest[:16]}"  # a key, never written

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(self.config.model)
        if not tokenizer.chat_template:
            tokenizer.chat_template = chat_template(self.config.chat_template)
        return tokenizer

    @cached_property
    def train_pairs(self):
        rows = load_rows(self.config.dataset, self.config.split)
        return tokenize_pairs(rows, self.tokenizer, self.config.max_prompt_length)

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

    def score(self, policy, *, seed: int, out_dir: str | None, losses: list[float],
              model_dir: str | None = None) -> dict:
        """Keep the policy (a recipe has no gold reward: a judge scores the kept model later,
        evaluation.fitness' mt_bench / alpaca_eval): save it with the tokenizer to ``model_dir``,
        by default ``out_dir/model`` (a fresh temporary folder without ``out_dir``); the metrics
        are its folder and a summary of the training loss."""
        if model_dir:
            folder = Path(model_dir)
        else:
            folder = Path(out_dir) / MODEL_SUBDIR if out_dir else Path(tempfile.mkdtemp(prefix="disco-policy-"))
        policy.config.use_cache = True  # gradient checkpointing turns it off; generation wants it
        # after a multi-process run that sharded the weights, rank 0's policy carries the whole trained
        # state dict (inner_loop.trainer.FULL_STATE_ATTR); otherwise the policy's own state is whole
        policy.save_pretrained(str(folder), state_dict=getattr(policy, "disco_full_state_dict", None))
        self.tokenizer.save_pretrained(str(folder))
        tail = losses[-max(1, len(losses) // 10):] if losses else []
        return {"model_dir": str(folder.resolve()), "pairs": len(self.train_pairs),
                "train_loss_first": losses[0] if losses else None,
                "train_loss_last": losses[-1] if losses else None,
                "train_loss_tail_mean": sum(tail) / len(tail) if tail else None}
