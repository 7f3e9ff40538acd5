"""Subcommands of ``disco`` for held-out evaluation, comparison and reports (registered by discovery.cli)."""


def register(subparsers) -> None:
    """Add this module's subcommands to the ``disco`` parser."""
