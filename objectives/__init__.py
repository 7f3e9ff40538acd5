"""Objectives: the loss functions of rho that a campaign searches over.

``objectives.load(x)`` gives a callable :class:`Objective` from a registry name, a ``.py`` file or
source text; ``objectives.REGISTRY`` holds the built-in baselines.
"""

from objectives.base import Objective, ObjectiveError, margin
from objectives.baselines import REGISTRY
from objectives.loader import get, load, names, probe_kind

__all__ = ["Objective", "ObjectiveError", "REGISTRY", "get", "load", "margin", "names", "probe_kind"]
