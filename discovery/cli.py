"""The ``disco`` console script: one entry point, thin subcommands.

Each package contributes its own subcommands through a ``commands`` module with a
``register(subparsers)`` function; the heavy imports happen inside the command handlers so that
``disco --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMAND_MODULES = (
    "objectives.commands",   # validate, inspect, objectives list
    "inner_loop.commands",   # train
    "discovery.commands",    # run, resume, status, show
    "evaluation.commands",   # eval mt-bench, eval alpaca
    "evaluation.analysis_commands",  # heldout, compare, sweep, report
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="disco", description="LLM-driven discovery of preference-optimisation objectives.")
    parser.add_argument("--version", action="version", version=f"disco {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("disco-pop")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `disco status DIR | head`: the reader left; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
