"""Trusted targets for :func:`objectives.isolation.run` in tests/objectives/test_candidate.py.

Each takes the Objective first (as every target of ``isolation.run`` does) and reports what it saw
and where it ran; imported in this process for a built-in, in the sandbox's zygote for source.
"""

from __future__ import annotations

import os

import torch


def seen(obj, *args, **kwargs) -> dict:
    """The objective's name, form and kind as the target got them, this process's pid, the arguments."""
    return {"pid": os.getpid(), "name": obj.name, "form": obj.form, "kind": obj.kind,
            "args": list(args), "kwargs": kwargs}


def mean_loss(obj, beta: float) -> float:
    """Call the loss on a fixed batch: its own code runs here."""
    g = torch.Generator().manual_seed(0)
    batch = [torch.randn(4, generator=g, dtype=torch.float64) - 20 for _ in range(4)]
    return float(obj(*batch, beta).mean())
