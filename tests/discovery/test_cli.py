"""The console script's own behaviour: --version, and a --help that imports no heavy library."""

import subprocess
import sys
from importlib.metadata import version

import pytest

from discovery.cli import main


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"disco {version('disco-pop')}"


def test_help_builds_every_subcommand_without_importing_torch():
    # `disco --help` was 3.7 s on a loaded machine: the objectives package imported torch eagerly
    code = ("import sys\nfrom discovery.cli import build_parser\n"
            "parser = build_parser()\nparser.format_help()\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules)\n"
            "print(','.join(heavy))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"`disco --help` imported {done.stdout.strip()}"
    usage = subprocess.run([sys.executable, "-m", "discovery.cli", "--help"], capture_output=True, text=True,
                           timeout=120).stdout
    for command in ("validate", "inspect", "train", "run", "resume", "status", "show", "compare", "report"):
        assert command in usage
