"""validate(): the three code forms of DPO pass, LRML and a sign-flipped DPO get told apart, and
``disco validate`` answers with exit codes and one JSON object."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from objectives import sandbox
from objectives.validate import ValidationReport, validate
from tests.objectives.sources import DPO_LOGPS, DPO_METHOD, DPO_RHO, FLIPPED_DPO, LRML_METHOD

REPO = Path(__file__).resolve().parents[2]



@pytest.fixture(scope="module", autouse=True)
def warm_pool():
    return sandbox.layers()


@pytest.mark.parametrize("source,form", [(DPO_METHOD, "method"), (DPO_LOGPS, "logps"), (DPO_RHO, "rho")])
def test_three_forms_of_dpo_are_valid(source, form):
    report = validate(source)
    assert report.valid, report.reason
    assert (report.form, report.kind, report.warnings) == (form, "pointwise", [])
    names = [c.name for c in report.checks]
    for name in ("screen", "output", "finite", "gradient", "deterministic", "inputs_unchanged", "kind",
                 "permutation", "direction"):
        assert name in names
    assert all(c.passed for c in report.checks)
    assert "process" in report.layers


@pytest.mark.parametrize("source", [LRML_METHOD, "lrml"])
def test_lrml_is_valid_with_a_local_direction_warning(source):
    report = validate(source, beta=0.1)
    assert report.valid, report.reason
    assert len(report.warnings) == 1
    warning = report.warnings[0]
    assert "locally near 0 only" in warning and "every margin" not in warning
    direction = next(c for c in report.checks if c.name == "direction")
    lo, hi = direction.details["interval"]
    assert -0.125 < lo < -0.11 and 0.065 < hi < 0.08  # LRML's local minimum and maximum in beta*rho
    assert direction.details["fraction_pushing_down"] < 0.01


def test_sign_flipped_dpo_is_valid_but_warned_everywhere():
    report = validate(FLIPPED_DPO)
    assert report.valid
    assert len(report.warnings) == 1
    assert "at every margin tested" in report.warnings[0] and "opposite preference" in report.warnings[0]


def test_registry_objectives_of_every_kind_validate():
    for name, kind in (("dpo", "pointwise"), ("bco_pair", "logratio"), ("kto_pair", "batch")):
        report = validate(name)
        assert report.valid, (name, report.reason)
        assert (report.name, report.kind, report.form) == (name, kind, "registry")


def test_screen_refusal_needs_no_sandbox_and_names_the_line():
    report = validate("import torch\n\ndef f(rho, beta):\n    return torch.os.system('id')\n")
    assert not report.valid
    assert "line 4" in report.reason and ".os" in report.reason
    assert report.layers == [] and [c.name for c in report.checks] == ["screen"]


def test_report_is_json_with_the_promised_keys():
    report = validate(DPO_RHO)
    data = json.loads(json.dumps(report.to_dict()))
    assert {"valid", "reason", "checks", "warnings", "kind", "form", "name", "layers"} <= set(data)
    assert {"name", "passed", "reason", "details"} <= set(data["checks"][0])
    assert isinstance(report, ValidationReport)


def _disco(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "discovery.cli", "validate", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_exit_codes_and_json(tmp_path):
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text(DPO_RHO)
    bad.write_text("def f(rho, beta):\n    return eval('rho')\n")
    ok = _disco(str(good), "--json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)  # exactly one JSON object on stdout
    assert data["valid"] is True and data["reason"] is None and data["warnings"] == []
    assert len(data["checks"]) >= 8
    refused = _disco(str(bad), "--json")
    assert refused.returncode == 1
    data = json.loads(refused.stdout)
    assert data["valid"] is False and "line 2" in data["reason"]


def test_human_output(tmp_path, capsys):
    from argparse import Namespace

    from objectives.validate import main_validate
    path = tmp_path / "lrml.py"
    path.write_text(LRML_METHOD)
    assert main_validate(Namespace(file=str(path), beta=0.1, json=False)) == 0
    out = capsys.readouterr().out
    assert out.startswith("VALID") and "warning: direction" in out and "isolation: process" in out
    assert main_validate(Namespace(file=str(tmp_path / "missing.py"), beta=0.1, json=False)) == 1
    assert capsys.readouterr().out.startswith("INVALID: no such file")
