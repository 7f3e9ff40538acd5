"""The README's Metrics section is inner_loop.glossary's list, word for word."""

import re
from pathlib import Path

from inner_loop.glossary import GLOSSARY, markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_metrics_section_is_the_glossary():
    text = README.read_text(encoding="utf-8")
    m = re.search(r"^## Metrics\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert m, "README.md has no '## Metrics' section"
    bullets = "".join(line + "\n" for line in m.group(1).splitlines() if line.startswith("- "))
    assert bullets == markdown()
    assert markdown() in text and len(bullets.splitlines()) == len(GLOSSARY) + 1
