"""validate(): the three code forms of DPO pass, LRML and a sign-flipped DPO get told apart, and
``disco validate`` answers with exit codes and one JSON object."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from objectives import sandbox
from objectives.validate import ValidationReport, render, validate
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


MISSPELT = "import torch.nn.functional as F\n\ndef typo(rho, beta):\n    return -F.logsigmod(beta * rho)\n"
RAISES_ON_LARGE_BATCHES = '''
import torch.nn.functional as F

def picky(rho, beta):
    if rho.numel() > 500:
        raise ValueError("too many pairs")
    return -F.logsigmoid(beta * rho)
'''


def test_a_loss_that_cannot_run_fails_once_and_the_other_checks_are_skipped_not_ok():
    report = validate(MISSPELT)
    assert not report.valid
    assert report.reason == ("output: raised AttributeError: module 'torch.nn.functional' has no attribute "
                             "'logsigmod' (at line 4 of the loss)")
    failed = [c.name for c in report.checks if not c.passed]
    skipped = [c.name for c in report.checks if c.skipped]
    assert failed == ["output"]
    assert skipped == ["finite", "gradient", "deterministic", "inputs_unchanged", "kind", "permutation",
                       "direction"]
    assert all(c.reason == "not run: the output check failed" for c in report.checks if c.skipped)
    out = render(report)
    assert out.count("logsigmod") == 2  # the headline and the one failed check
    assert "[skip] direction: the output check failed" in out and "[ok  ] direction" not in out


def test_a_later_check_raising_the_same_error_is_skipped_and_direction_does_not_claim_ok():
    report = validate(RAISES_ON_LARGE_BATCHES)
    by_name = {c.name: c for c in report.checks}
    assert not by_name["finite"].passed and "raised ValueError: too many pairs" in by_name["finite"].reason
    assert by_name["gradient"].skipped
    assert by_name["gradient"].reason == "not run: raises the same ValueError as the finite check"
    assert by_name["deterministic"].passed and not by_name["deterministic"].skipped
    assert by_name["direction"].skipped
    assert by_name["direction"].reason == "not run: the gradient check did not run"


def test_permutation_of_a_batch_objective_is_skipped_as_not_applicable():
    report = validate("kto_pair")
    assert report.valid
    permutation = next(c for c in report.checks if c.name == "permutation")
    assert permutation.skipped and permutation.reason == "not run: does not apply to a batch objective"
    assert report.to_dict()["checks"][-2]["skipped"] is True


def test_module_level_constants_load_and_validate():
    source = ("import torch.nn.functional as F\n\nEPS = 0.1\nSCALE = -2.0 * 0.5\nNAME = 'smoothed'\n\n"
              "def eps_loss(rho, beta):\n    return -F.logsigmoid(beta * rho) * (1 - EPS) * -SCALE\n")
    report = validate(source)
    assert report.valid, report.reason
    assert report.name == "eps_loss" and report.warnings == []
