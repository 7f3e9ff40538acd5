"""The settings a comparison trains on, as a person writes them: ``--set KEY=VALUE`` items and
task variants ``NAME:key=value,key=value``.

Both are read with :mod:`inner_loop.overrides` (the project's one ``KEY=VALUE`` parser) into
sorted ``(key, value)`` pairs, the form :attr:`evaluation.compare.Setting.overrides` holds, and
refused when a key would collide with one of run_candidate's own arguments. Used by
:mod:`evaluation.heldout` and the command module :mod:`evaluation.analysis_commands`.
"""

from __future__ import annotations

from inner_loop.overrides import check_reserved, parse_pairs, parse_sets


def sorted_overrides(values: dict, where: str) -> tuple:
    """``values`` as sorted ``(key, value)`` pairs; a :class:`~inner_loop.overrides.UserError`
    (naming ``where``) for a key that is one of run_candidate's own arguments."""
    check_reserved(values, where)
    return tuple(sorted(values.items()))


def parse_overrides(items) -> tuple:
    """``["max_steps=20", "lr=1e-5"]`` -> sorted ``(("lr", 1e-05), ("max_steps", 20))``."""
    return sorted_overrides(parse_sets(items, "--set"), "--set")


def parse_task_variant(text: str) -> tuple[str, tuple]:
    """``"synthetic:max_completion_len=32,data_seed=7"`` -> (name, sorted overrides)."""
    name, _, rest = text.partition(":")
    where = f"task variant {text!r}"
    return name.strip(), sorted_overrides(parse_pairs(rest, where), where)
