"""The registry of inner-loop tasks: what a candidate objective is trained and scored on.

``TASKS`` maps a task name to a builder ``(cache_dir=None, progress=True, **overrides) -> Task``
(:class:`inner_loop.task.Task`) whose ``defaults(task_overrides) -> TaskDefaults`` attribute reads
the task's defaults; :func:`get_task` calls the builder. :func:`task_defaults` reads a task's
default beta and training defaults without building it (no model, no SFT training). Tasks:
``synthetic`` (the embedded sentiment task, scored by its gold reward), ``keypoints`` (a second
embedded task of another kind and a larger model: key-item coverage minus a length penalty) and ``recipe:<name>`` per
paper recipe (a chat model trained and kept for an LLM judge).

Builders are registered as thin functions that import their module on first use, so importing
this module (to list tasks, or to parse a command line) costs no torch or transformers import.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from inner_loop.task import Task
from objectives.registry import Registry

TaskBuilder = Callable[..., Task]
TASKS: Registry[TaskBuilder] = Registry("task")


@dataclasses.dataclass(frozen=True)
class TaskDefaults:
    """A task's ``default_beta`` and ``train_defaults``, as :func:`task_defaults` reads them, with
    ``card`` (what the task is, in words, for a proposer's prompt) and ``pairs`` (training pairs, when
    known without loading data: the number of optimizer steps follows from it)."""

    beta: float
    train: dict
    card: str = ""
    pairs: int | None = None


def _local(name: str, module: str, language: str, config_class: str) -> TaskBuilder:
    """The builder of a locally built task: ``module.build(config)``, its defaults read from
    ``language`` (which imports no torch) without building anything."""
    import importlib

    def build(cache_dir=None, progress: bool = True, **overrides) -> Task:
        config = getattr(importlib.import_module(language), config_class).with_overrides(**overrides)
        return importlib.import_module(module).build(config, cache_dir=cache_dir, progress=progress)

    def defaults(overrides: dict) -> TaskDefaults:
        lang = importlib.import_module(language)
        cls = getattr(lang, config_class)
        fields = {f.name for f in dataclasses.fields(cls)}
        config = cls.with_overrides(**{k: v for k, v in overrides.items() if k in fields})
        return TaskDefaults(beta=config.beta, train=dict(lang.TRAIN_DEFAULTS), card=lang.describe(config),
                            pairs=config.n_train_pairs)

    build.defaults = defaults
    return build


TASKS.register("synthetic", _local("synthetic", "inner_loop.synthetic", "inner_loop.synthetic_language",
                                   "SyntheticConfig"))
TASKS.register("keypoints", _local("keypoints", "inner_loop.keypoints", "inner_loop.keypoints_language",
                                   "KeypointsConfig"))


def _recipe_builder(recipe: str) -> TaskBuilder:
    def build(cache_dir=None, progress: bool = True, **overrides) -> Task:
        from inner_loop import recipe_task

        return recipe_task.build(recipe, cache_dir=cache_dir, progress=progress, **overrides)
    build.defaults = lambda overrides: _recipe_defaults(recipe, overrides)
    return build


def _recipe_defaults(recipe: str, overrides: dict) -> TaskDefaults:
    from inner_loop import recipe_task

    config = recipe_task.load_recipe(recipe, **recipe_task.task_fields(overrides, recipe))
    return TaskDefaults(beta=config.beta, train=recipe_task.train_defaults(config),
                        card=f"{config.description} (model {config.model}, data {config.dataset}); the trained "
                             "model is kept and scored later (a judge or the recipe's own evaluation).")


def _register_recipes() -> None:
    """``recipe:<name>`` for each paper recipe (inner_loop/recipe_files/*.yaml): trains a chat model and
    keeps it for a judge (see :mod:`inner_loop.recipe_task`)."""
    from inner_loop.recipe_task import recipe_names

    for recipe in recipe_names():
        TASKS.register(f"recipe:{recipe}", _recipe_builder(recipe))


_register_recipes()


def get_task(name: str, **overrides) -> Task:
    """Build (or load from cache) task ``name``; ``overrides`` go to its builder (config fields,
    ``cache_dir``, ``progress``). An unknown name raises with a "did you mean"."""
    return TASKS.get(name)(**overrides)


def task_defaults(name: str, overrides: dict | None = None) -> TaskDefaults:
    """Task ``name``'s default beta and training defaults, with ``overrides`` of the task's own
    fields applied (a run's other keys, training and runner options, are ignored), without building
    the task. An unknown name raises with a "did you mean"; a bad task field as the builder would."""
    from inner_loop.train_config import split_overrides

    builder = TASKS.get(name)  # the registry's "did you mean"
    _, task_overrides, _ = split_overrides(dict(overrides or {}))
    return builder.defaults(task_overrides)
