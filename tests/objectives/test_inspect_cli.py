"""`disco inspect NAME_OR_FILE --out DIR`: files written, summary printed, refusals typed."""

import argparse
import json

import pytest

from objectives import commands

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _disco(argv):
    """The objectives' subcommands on their own parser (the real ``disco`` adds other packages')."""
    parser = argparse.ArgumentParser(prog="disco")
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_inspect_registry_name_writes_plot_and_summaries(tmp_path, capsys):
    assert _disco(["inspect", "lrml", "--out", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (tmp_path / "lrml_inspect.png").read_bytes()[:8] == PNG_MAGIC
    saved = json.loads((tmp_path / "lrml_summary.json").read_text())
    assert saved == printed
    assert saved["extrema"]["minima"][0]["z"] == pytest.approx(-0.119, abs=2e-3)
    assert saved["code_ran"].startswith("in-process")
    md = (tmp_path / "lrml_summary.md").read_text()
    assert "$$f(z) =" in md and "lrml_inspect.png" in md and "local maxima" in md


def test_inspect_file_runs_in_the_sandbox_and_prints_text(tmp_path, capsys):
    path = tmp_path / "my_loss.py"
    path.write_text("import torch\n\ndef my_loss(rho, beta):\n    return torch.relu(1 - beta * rho)\n")
    assert _disco(["inspect", str(path), "--out", str(tmp_path / "out"), "--beta", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "my_loss (beta = 0.1" in out and "f'(0) = -1" in out
    summary = json.loads((tmp_path / "out" / "my_loss_summary.json").read_text())
    assert summary["closed_form"]["expression"] == "Max(0, 1 - z)"
    assert not summary["code_ran"].startswith("in-process (registry")


def test_inspect_names_a_file_after_its_function_with_validates_default_beta(tmp_path, capsys):
    """As `disco validate` does: the function's name (not the file's) and beta 0.1 by default."""
    path = tmp_path / "attempt_3.py"
    path.write_text("import torch\n\ndef wide_hinge(rho, beta):\n    return torch.relu(2 - beta * rho)\n")
    assert _disco(["inspect", str(path), "--out", str(tmp_path / "out"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["name"] == "wide_hinge" and summary["beta"] == 0.1
    assert (tmp_path / "out" / "wide_hinge_inspect.png").is_file()
    assert not list((tmp_path / "out").glob("attempt_3*"))


def test_refused_file_and_unknown_name_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\ndef f(rho, beta):\n    return rho\n")
    assert _disco(["inspect", str(bad), "--out", str(tmp_path)]) == 2
    assert "not allowed" in capsys.readouterr().out
    assert _disco(["inspect", "lrlm", "--out", str(tmp_path), "--json"]) == 2
    assert "did you mean" in json.loads(capsys.readouterr().out)["error"]
    assert not list(tmp_path.glob("*.png"))
