"""What a person sets: the one ``KEY=VALUE`` parser and the checks of the values given.

Every command that takes ``--set KEY=VALUE`` (``disco train``, ``disco run``, ``disco compare``,
``disco heldout``, ``python -m inner_loop.recipes``) and every task variant written as
``NAME:key=value,key=value`` parses its values here, the same way: JSON where the text is JSON
(``3``, ``1e-3``, ``true``, ``[1, 2]``, ``"x"``), ``True``/``False`` in any case, else the text.
A mistake is a :class:`UserError`: ``disco`` prints it as one line and exits 2.

This module imports nothing of the project, so any package may use it.
"""

from __future__ import annotations

import json
import math


class UserError(ValueError):
    """A mistake in what a person asked for (a flag, a name, a file): ``disco`` prints it as one
    line, ``disco: error: <message>``, and exits 2 (``disco --debug`` shows the traceback)."""


KINDS = {
    "number": (lambda v: True, "a number"),
    "> 0": (lambda v: v > 0, "a number > 0"),
    ">= 0": (lambda v: v >= 0, "a number >= 0"),
    "int": (lambda v: True, "an integer"),
    "int >= 0": (lambda v: v >= 0, "an integer >= 0"),
    "int >= 1": (lambda v: v >= 1, "an integer >= 1"),
}


def check(name: str, value, kind: str, wording: str | None = None) -> None:
    """Raise :class:`UserError` unless ``value`` is of ``kind``, one of ``KINDS`` (e.g. ``"> 0"``
    for a number above zero, ``"int >= 1"`` for a positive integer); the message names the range."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_number = (is_int or isinstance(value, float)) and not (isinstance(value, float) and math.isnan(value))
    ok, words = KINDS[kind]
    if not ((is_int if kind.startswith("int") else is_number) and ok(value)):  # NaN is no number
        raise UserError(f"{name} must be {wording or words}, not {value!r}")


def check_seeds(seeds, name: str = "seeds") -> tuple[int, ...]:
    """``seeds`` as a tuple of distinct integers, at least one; else a :class:`UserError`."""
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise UserError(f"{name} must be a list of integers, not {seeds!r}")
    seeds = tuple(seeds)
    for s in seeds:
        check(f"each of {name}", s, "int")
    if not seeds:
        raise UserError(f"{name} must hold at least one integer seed")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{name} must be distinct (a repeated seed counts one run twice), not {list(seeds)}")
    return seeds


def parse_value(text: str):
    """``"3"`` -> 3, ``"1e-3"`` -> 0.001, ``"true"``/``"True"`` -> True, ``"[1, 2]"`` -> [1, 2],
    anything else stays the string (stripped)."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse_sets(items, flag: str = "--set") -> dict:
    """``["max_steps=20", "learning-rate=1e-5"]`` -> ``{"max_steps": 20, "learning_rate": 1e-05}``.

    Dashes in a key become underscores; a dotted key (``training.max_attempts``) stays dotted
    (:func:`nest` turns those into mappings). A later item wins over an earlier one."""
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key] = parse_value(value)
    return out


def parse_pairs(text: str, what: str) -> dict:
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}`` (a task variant's settings); ``what`` names the
    text in the error."""
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{what}: expected key=value,key=value, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def nest(flat: dict) -> dict:
    """``{"training.timeout": 60, "candidates": 3}`` -> ``{"training": {"timeout": 60}, "candidates": 3}``."""
    out: dict = {}
    for key, value in flat.items():
        *path, last = key.split(".")
        node = out
        for part in path:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"{key}: {part} is a value, not a section")
            node = child
        if isinstance(node.get(last), dict) and isinstance(value, dict):
            node[last] = {**node[last], **value}
        else:
            node[last] = value
    return out


# run_candidate's own arguments: an override by these names would collide with them. "seed" is the
# training seed; a task's data seed is a task field (the synthetic task's is data_seed).
RUNNER_ARGUMENTS = ("objective", "task", "beta", "seed", "out_dir", "isolation", "timeout", "progress")


def reserved_hint(keys) -> str:
    """Why ``keys`` cannot be overrides, and what to use instead."""
    hint = f"{', '.join(keys)}: run_candidate's own argument; use --seeds / --beta(s) / --task(s)"
    return hint + (" (the synthetic task's data seed is data_seed=N)" if "seed" in keys else "")


def check_reserved(keys, where: str) -> None:
    """Refuse overrides named like one of :data:`RUNNER_ARGUMENTS`."""
    clash = [k for k in keys if k in RUNNER_ARGUMENTS]
    if clash:
        raise UserError(f"{where}: cannot override {reserved_hint(clash)}")
