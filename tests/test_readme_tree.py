"""The README's "What is where" tree names every module of the packages and benchmarks, and names
no module that does not exist."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("objectives", "inner_loop", "discovery", "evaluation", "benchmarks")


def _tree() -> str:
    text = (REPO / "README.md").read_text()
    return text[text.index("## What is where"):text.index("## Using it")]


def test_every_module_is_in_the_readme_tree():
    tree = _tree()
    missing = [f"{p}/{f.name}" for p in PACKAGES for f in sorted((REPO / p).glob("*.py"))
               if f.name != "__init__.py" and not re.search(rf"(?<![\w/]){re.escape(f.name)}\b", tree)]
    assert not missing, f"modules missing from the README tree: {missing}"


def test_the_readme_tree_names_no_module_that_is_gone():
    tree = _tree()
    named = set(re.findall(r"(?<![\w/.])([a-z_]+\.py)\b", tree))
    existing = {f.name for p in PACKAGES for f in (REPO / p).glob("*.py")}
    assert named - existing == set(), f"the README tree names modules that do not exist: {sorted(named - existing)}"
