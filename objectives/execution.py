"""Turning screened candidate source into a function: the one place in the project that exec()s code.

The code has passed :func:`objectives.screen.screen` first, so exec() only runs import statements
of allow-listed modules, assignments of constants to names (``EPS = 0.1``: numbers and strings,
arithmetic of literal numbers, nothing that calls anything) and one ``def`` with constant defaults:
none of the candidate's own logic runs here; the constants are globals of the function. That logic
runs when the returned function is called, in a namespace that holds ``torch``, ``F``
(torch.nn.functional), ``math`` and a short list of harmless builtins, with an ``__import__`` that
only hands out the allow-listed modules.

A restricted namespace is not a security boundary (see the threat model in
:mod:`objectives.sandbox`): untrusted candidates are called only inside the sandbox process.
"""

from __future__ import annotations

import builtins
import math
import types

import torch
import torch.nn.functional as F

from objectives.base import ObjectiveError
from objectives.screen import ALLOWED_IMPORTS, screen

SAFE_BUILTINS = (
    "abs", "all", "any", "bool", "dict", "enumerate", "filter", "float", "int", "isinstance",
    "len", "list", "map", "max", "min", "pow", "range", "reversed", "round", "sorted", "sum",
    "tuple", "zip", "print", "ArithmeticError", "Exception", "RuntimeError", "TypeError",
    "ValueError", "ZeroDivisionError", "True", "False", "None",
)


def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level or name not in ALLOWED_IMPORTS | {"torch.nn"}:
        raise ImportError(f"import of {name!r} is not allowed")
    return builtins.__import__(name, globals, locals, fromlist, level)


def namespace() -> dict:
    """The globals a candidate sees: torch, F and math, as DiscoPOP's prompts promise."""
    safe = {name: getattr(builtins, name) for name in SAFE_BUILTINS}
    safe["__import__"] = _guarded_import
    return {"__builtins__": safe, "__name__": "candidate", "torch": torch, "F": F, "math": math}


def compile_function(source: str, filename: str = "<candidate>") -> types.FunctionType:
    """Screen ``source`` and return its one function (not yet called)."""
    screened = screen(source)
    scope = namespace()
    try:
        code = compile(source, filename, "exec")
        exec(code, scope)  # noqa: S102 - screened: imports, constants and one def only
    except ObjectiveError:
        raise
    except Exception as err:  # an import that the guard refused, a bad default, EPS = 1 / 0
        raise ObjectiveError(f"could not define the function: {type(err).__name__}: {err}") from None
    fn = scope.get(screened.function_name)
    if not isinstance(fn, types.FunctionType):
        raise ObjectiveError(f"{screened.function_name!r} is not a function", screened.line)
    return fn
