"""Subcommands of ``disco`` that belong to objectives/: validate, inspect, objectives list."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    """Add this package's subcommands to the ``disco`` parser."""
    p = subparsers.add_parser("validate", help="screen and check a loss file in the sandbox")
    p.add_argument("file", help="a .py file with one loss function (any of the three forms) "
                                "or a registry name")
    p.add_argument("--beta", type=float, default=0.1, help="beta used by the checks (default 0.1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_validate)

    p = subparsers.add_parser("inspect", help="plot a loss and its gradient, summarise it symbolically")
    p.add_argument("objective", help="a registry name or a .py file")
    p.add_argument("--out", required=True, help="folder for the PNG and the JSON/Markdown summary")
    p.add_argument("--beta", type=float, default=0.1,
                   help="beta for the plots (default 0.1, as validate and the campaign)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_inspect)

    p = subparsers.add_parser("objectives", help="the registry of built-in objectives")
    sub = p.add_subparsers(dest="objectives_command", metavar="ACTION")
    sub.required = True
    q = sub.add_parser("list", help="print every registered objective with its form and source")
    q.add_argument("--json", action="store_true", help="print a JSON list")
    q.add_argument("--source", action="store_true", help="also print each objective's code")
    q.set_defaults(func=_list)


def _validate(args) -> int:
    from objectives.validate import main_validate
    return main_validate(args)


def _inspect(args) -> int:
    from objectives.inspection import main_inspect
    return main_inspect(args)


def _list(args) -> int:
    from objectives.baselines import REGISTRY
    rows = [REGISTRY.get(name) for name in REGISTRY]
    if args.json:
        print(json.dumps([dict(o.describe(), source=o.source) for o in rows], indent=2))
        return 0
    width = max(len(o.name) for o in rows)
    print(f"{'name':<{width}}  {'kind':<9}  {'form':<8}  source")
    for o in rows:
        print(f"{o.name:<{width}}  {o.kind:<9}  {o.form:<8}  {o.citation}")
        if args.source:
            print("\n".join("    " + line for line in o.source.rstrip().splitlines()) + "\n")
    return 0
