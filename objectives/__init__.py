"""Objectives: the loss functions of rho that a campaign searches over.

``objectives.resolve(x)`` gives a :class:`~objectives.candidate.Candidate` (source, name, trusted,
kind) from a registry name, a ``.py`` file or source text; ``objectives.load(x)`` gives the callable
:class:`Objective` for the same references; ``objectives.REGISTRY`` holds the built-in baselines.
The names are imported on first use (PEP 562), so that importing a light submodule
(``objectives.commands`` for ``disco --help``) does not import torch.
"""

import importlib

_EXPORTS = {"Objective": "objectives.base", "ObjectiveError": "objectives.base", "margin": "objectives.base",
            "REGISTRY": "objectives.baselines", "get": "objectives.loader", "load": "objectives.candidate",
            "names": "objectives.loader", "probe_kind": "objectives.loader",
            "Candidate": "objectives.candidate", "resolve": "objectives.candidate"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'objectives' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
