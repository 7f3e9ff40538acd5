"""Inner-loop tasks: what a candidate objective is trained and scored on.

A task supplies a tokenizer, an SFT checkpoint (the reference policy), pre-tokenised preference
pairs with reference log-probs, held-out prompts and a gold reward. ``TASKS`` maps a task name
to a builder ``(cache_dir=None, progress=True, **overrides) -> Task``; ``get_task`` calls it.
Tasks: ``synthetic`` (the embedded sentiment task, scored by its gold reward) and
``recipe:<name>`` per paper recipe (a chat model trained and kept for an LLM judge).

Builders are registered as thin functions that import their module on first use, so importing
this module (to list tasks, or to parse a command line) costs no torch or transformers import.
"""

from __future__ import annotations

import abc
from typing import Callable

import torch

from objectives.registry import Registry


class Task(abc.ABC):
    """What the trainer and :func:`inner_loop.metrics.evaluate_policy` need from a task.

    Attributes every task sets: ``name``, ``config`` (a frozen dataclass), ``path`` (its cache
    directory), ``tokenizer`` (a transformers tokenizer with pad/eos/bos), ``sft_path``,
    ``train_pairs`` (a ``datasets.Dataset``, columns documented by the task), ``heldout_prompts``
    (list of token-id lists, disjoint from the training prompts), ``beta`` (the task's default).
    """

    name: str
    max_completion_len: int

    @abc.abstractmethod
    def load_sft(self):
        """A fresh copy of the SFT model (float32); the reference policy and the policy's start."""

    @abc.abstractmethod
    def gold_reward(self, completions) -> torch.Tensor:
        """Gold reward of each completion (token ids, completion only), float32 [N]."""


TaskBuilder = Callable[..., Task]
TASKS: Registry[TaskBuilder] = Registry("task")


def _synthetic(cache_dir=None, progress: bool = True, **overrides) -> Task:
    from inner_loop import synthetic

    return synthetic.build(synthetic.SyntheticConfig.with_overrides(**overrides), cache_dir=cache_dir,
                           progress=progress)


TASKS.register("synthetic", _synthetic)


def _recipe_builder(recipe: str) -> TaskBuilder:
    def build(cache_dir=None, progress: bool = True, **overrides) -> Task:
        from inner_loop import recipe_task

        return recipe_task.build(recipe, cache_dir=cache_dir, progress=progress, **overrides)
    return build


def _register_recipes() -> None:
    """``recipe:<name>`` for each paper recipe (inner_loop/recipes/*.yaml): trains a chat model and
    keeps it for a judge (see :mod:`inner_loop.recipe_task`)."""
    from inner_loop.recipes import recipe_names

    for recipe in recipe_names():
        TASKS.register(f"recipe:{recipe}", _recipe_builder(recipe))


_register_recipes()


def get_task(name: str, **overrides) -> Task:
    """Build (or load from cache) task ``name``; ``overrides`` go to its builder (config fields,
    ``cache_dir``, ``progress``). An unknown name raises with a "did you mean"."""
    return TASKS.get(name)(**overrides)
