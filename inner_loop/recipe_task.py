"""Recipe files and their kinds: which config and task class a recipe ``recipe:<name>`` builds.

A recipe file (``inner_loop/recipe_files/<name>.yaml``) may say ``kind:``: ``chat`` (the default;
:mod:`inner_loop.recipe_base`, dpo-mix-style chat pairs for an LLM judge), ``tldr``
(:mod:`inner_loop.tldr`) or ``imdb`` (:mod:`inner_loop.imdb`). :func:`load_recipe` reads a file as
its kind's config class (a subclass of :class:`~inner_loop.recipe_base.Recipe`), :func:`build` makes
its kind's task (a subclass of :class:`~inner_loop.recipe_base.RecipeTask`), once per process per
resolved recipe. The kinds' modules import :mod:`inner_loop.recipe_base`, never this module, and
this one names them by string, so no import goes in a circle. What recipe_base defines is
re-exported here.
"""

from __future__ import annotations

import dataclasses
import json

import yaml

from inner_loop.recipe_base import (  # noqa: F401 - re-exported
    MODEL_SUBDIR, RECIPE_DIR, Recipe, RecipeTask, chat_template, load_rows, recipe_names, split_prompt,
    tokenize_pairs, tokenize_text_pairs, train_defaults)

__all__ = ["MODEL_SUBDIR", "RECIPE_DIR", "RECIPE_KINDS", "Recipe", "RecipeTask", "build", "chat_template",
           "config_class", "load_recipe", "load_rows", "recipe_kind", "recipe_names", "split_prompt",
           "task_fields", "tokenize_pairs", "tokenize_text_pairs", "train_defaults"]

# kind -> (module, config class, task class): a recipe file's ``kind`` picks them (default chat)
RECIPE_KINDS = {
    "chat": ("inner_loop.recipe_base", "Recipe", "RecipeTask"),
    "tldr": ("inner_loop.tldr", "TldrRecipe", "TldrTask"),
    "imdb": ("inner_loop.imdb", "ImdbRecipe", "ImdbTask"),
}


def _kind(kind: str, part: int):
    import importlib
    if kind not in RECIPE_KINDS:
        raise TypeError(f"unknown recipe kind {kind!r}; known: {', '.join(RECIPE_KINDS)}")
    module, *names = RECIPE_KINDS[kind]
    return getattr(importlib.import_module(module), names[part])


def recipe_kind(name: str) -> str:
    """The ``kind`` recipe file ``name`` declares (chat when it names none)."""
    path = RECIPE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(recipe_names())}")
    return (yaml.safe_load(path.read_text()) or {}).get("kind", "chat")


def config_class(name: str) -> type:
    """The config dataclass of recipe ``name`` (:class:`Recipe` or a kind's subclass of it)."""
    return _kind(recipe_kind(name), 0)


def task_fields(overrides: dict, name: str | None = None) -> dict:
    """The ``overrides`` that are fields of recipe ``name`` (any kind's, without a name)."""
    if name is None:
        fields = {f.name for kind in RECIPE_KINDS for f in dataclasses.fields(_kind(kind, 0))}
    else:
        fields = {f.name for f in dataclasses.fields(config_class(name))}
    return {k: v for k, v in overrides.items() if k in fields}


def load_recipe(name: str, **overrides) -> Recipe:
    """Recipe file ``name`` with ``overrides``, as its kind's config class (unknown fields raise)."""
    cls = config_class(name)
    data = {"name": name, **yaml.safe_load((RECIPE_DIR / f"{name}.yaml").read_text()), **overrides}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TypeError(f"unknown recipe field(s) {unknown}; known: {sorted(known)}")
    return cls(**data)


_BUILT: dict[str, "RecipeTask"] = {}  # resolved recipe -> task: tokenise the pairs once per process


def build(name: str, cache_dir=None, progress: bool = True, **overrides) -> RecipeTask:
    """Task ``recipe:<name>`` (its kind's task class) with recipe-field ``overrides`` (unknown fields raise)."""
    config = load_recipe(name, **overrides)
    key = json.dumps(dataclasses.asdict(config), sort_keys=True)
    if key not in _BUILT:
        _BUILT[key] = _kind(config.kind, 1)(config)
    return _BUILT[key]
