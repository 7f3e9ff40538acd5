"""The ``disco`` console script: one entry point, thin subcommands.

Each package contributes its own subcommands through a ``commands`` module with a
``register(subparsers)`` function; the heavy imports happen inside the command handlers so that
``disco --help`` stays fast.

Errors are handled here, once: a mistake in what the user asked for (:class:`~inner_loop.overrides.UserError`,
an unknown name, a missing file, a campaign folder that is not one, ...; see :func:`user_error`)
prints one line, ``disco: error: <message>``, and exits 2; Ctrl-C prints one line and exits 130
(with ``disco resume DIR`` for a campaign that has started). ``disco --debug COMMAND`` shows the
traceback instead. Anything else is a bug and keeps its traceback.
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
    parser.add_argument("--debug", action="store_true",
                        help="on an error or Ctrl-C, show the Python traceback instead of one line")
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


# (module, class) of the errors that report a user's mistake rather than a bug; a class counts only
# once its module is imported (it must be, for one of its errors to have been raised)
USER_ERRORS = (
    ("inner_loop.overrides", "UserError"),         # discovery.config re-exports it
    ("objectives.registry", "UnknownNameError"),   # unknown objective, task, proposer: "did you mean"
    ("objectives.base", "ObjectiveError"),         # a loss file that defines no usable loss
    ("discovery.archive", "ArchiveError"),         # not a campaign folder, already one, locked
    ("discovery.proposal", "ProposerError"),       # no API key, endpoint down
    ("evaluation.campaign", "CampaignError"),
    ("evaluation.heldout", "HeldoutError"),
    ("evaluation.judge", "JudgeError"),
)
USER_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def user_error(err: BaseException) -> bool:
    """Whether ``err`` reports a mistake in what the user asked for (printed as one line)."""
    if isinstance(err, USER_OS_ERRORS):
        return True
    for module, name in USER_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(err, cls):
            return True
    return False


def one_line(err: BaseException) -> str:
    from discovery.text import shown
    text = str(err) or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.strerror}: {err.filename}"
    return shown(" ".join(text.split()), multiline=False)


def interrupted(args) -> str:
    """The line printed on Ctrl-C: for a campaign that has started, how to continue it."""
    from pathlib import Path
    directory = getattr(args, "out", None) if args.command == "run" else getattr(args, "dir", None)
    if args.command in ("run", "resume") and directory and (Path(directory) / "archive.sqlite").exists():
        return f"disco: interrupted; what is done is saved: continue with `disco resume {directory}`"
    return "disco: interrupted" + ("; nothing was saved" if args.command == "run" else "")


# Library warnings that say nothing about the user's run, silenced by their exact text and origin
# (never a blanket ignore): (category, message regex, module regex). Also exported through
# PYTHONWARNINGS (exact message prefixes) to the training jobs this process starts.
QUIET_WARNINGS = (
    # TrainingArguments renamed gradient_checkpointing to activation_checkpointing (transformers 5.x);
    # inner_loop.trainer still passes the old name, which keeps working until v6
    (FutureWarning, "`gradient_checkpointing` is deprecated and will be removed in v6", r"transformers\."),
)


def quiet_library_warnings() -> None:
    """Install :data:`QUIET_WARNINGS` in this process and in the environment of its children."""
    import re
    import warnings
    for category, message, module in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category, module=module)
    exported = [f"ignore:{message}:{category.__name__}" for category, message, _ in QUIET_WARNINGS]
    current = [w for w in os.environ.get("PYTHONWARNINGS", "").split(",") if w]
    os.environ["PYTHONWARNINGS"] = ",".join(current + [w for w in exported if w not in current])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_library_warnings()
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `disco status DIR | head`: the reader left; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(interrupted(args), file=sys.stderr, flush=True)
        return 130
    except Exception as err:  # noqa: BLE001 - only a user's mistake is caught; a bug re-raises
        if args.debug or not user_error(err):
            raise
        print(f"disco: error: {one_line(err)}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
