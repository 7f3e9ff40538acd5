"""Load candidate source without the AST screen, as code that slipped past it would run.

``screen_off()`` patches the screen out of :mod:`objectives.loader` and :mod:`objectives.execution`
for the block; ``train_job`` is :func:`inner_loop.trainer.train_job` with the screen off, a target
for ``objectives.sandbox.call`` (the forked child's patch dies with it)."""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

from objectives import execution, loader
from objectives.screen import Screened

HERE = Path(__file__).resolve().parent


def source(name: str) -> str:
    return (HERE / f"{name}.py").read_text()


def _no_screen(text: str) -> Screened:
    fn = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef))
    return Screened(fn.name, tuple(a.arg for a in fn.args.args), fn.lineno)


@contextlib.contextmanager
def screen_off():
    saved = loader.screen, execution.screen
    loader.screen = execution.screen = _no_screen
    try:
        yield
    finally:
        loader.screen, execution.screen = saved


def train_job(spec: dict) -> dict:
    from inner_loop.trainer import train_job as job
    with screen_off():
        return job(spec)
