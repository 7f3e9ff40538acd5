"""The one loader for prompt files: ``discovery/prompts/*.md``, filled with ``string.Template``.

Prompts are data, so they can be read, diffed and versioned apart from the code. ``$name``
placeholders (not ``{name}``) keep the JSON braces in the prompts literal. A missing field raises,
so a template and its caller cannot drift apart silently.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path

PROMPT_DIR = Path(__file__).with_name("prompts")


@functools.lru_cache(maxsize=None)
def template(name: str) -> string.Template:
    path = PROMPT_DIR / f"{name}.md"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROMPT_DIR.glob("*.md")))
        raise FileNotFoundError(f"no prompt {name!r} in {PROMPT_DIR} (known: {known})")
    return string.Template(path.read_text())


def render(name: str, **fields) -> str:
    """Fill prompt ``name`` with ``fields``; every placeholder must be given."""
    return template(name).substitute({k: str(v) for k, v in fields.items()}).strip() + "\n"
