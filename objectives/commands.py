"""Subcommands of `disco` that belong to objectives/ (registered by discovery.cli)."""


def register(subparsers) -> None:
    """Add this package's subcommands to the `disco` parser."""
