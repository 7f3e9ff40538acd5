"""Subcommands of `disco` that belong to inner_loop/ (registered by discovery.cli)."""


def register(subparsers) -> None:
    """Add this package's subcommands to the `disco` parser."""
