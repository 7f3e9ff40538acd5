"""The direction check classifies where gradient descent raises the margin, over every margin tested,
and says so in beta*rho units: everywhere, near 0 only, above a target margin, below a margin (the loss
keeps falling as rho -> -inf: a loud warning), on bands elsewhere, or nowhere."""

import pytest

from objectives import sandbox
from objectives.baselines import REGISTRY
from objectives.checks import check_direction
from objectives.candidate import load
from objectives.validate import render, validate
from tests.objectives.sources import DPO_RHO, FLIPPED_DPO, LRML_METHOD

# The user study's two losses (beta = 0.1, so 0.001 * rho^2 = 0.1 * z^2).
SIN_WIGGLE = '''
import torch
import torch.nn.functional as F

def sin_wiggle(rho, beta):
    z = beta * rho
    return F.softplus(-z) + 0.3 * torch.sin(4 * z) + 0.001 * rho ** 2
'''
QUAD_LOGSIG = '''
import torch.nn.functional as F

def quad_logsig(rho, beta):
    z = beta * rho
    return -F.logsigmoid(z + 0.5 * z ** 2)
'''
NEGATIVE_TARGET = "def f(rho, beta):\n    return (beta * rho + 3.0) ** 2\n"
BUMP_AT_4 = "import torch\n\ndef f(rho, beta):\n    z = beta * rho\n    return -z + 2 * torch.exp(-(z - 5) ** 2)\n"


def _direction(source, beta=0.1):
    check, warnings = check_direction(load(source) if "\n" in source else REGISTRY.get(source), beta)
    return check, warnings


@pytest.fixture(scope="module")
def warm_pool():
    return sandbox.layers()


def test_sin_wiggle_is_pushed_down_above_a_target_margin_and_on_bands_not_locally(warm_pool):
    """Was: "locally near 0 only (fraction 0.4833 ...); elsewhere it raises the margin" (false)."""
    report = validate(SIN_WIGGLE, beta=0.1)
    assert report.valid, report.reason
    direction = next(c for c in report.checks if c.name == "direction")
    assert direction.details["pattern"] == "large_positive"
    assert direction.details["target_margin"] == pytest.approx(5.59, abs=0.02)
    (warning,) = report.warnings
    assert warning.startswith("direction: gradient descent lowers the margin (dL/drho > 0) for all beta*rho "
                              "above 5.59, and also on beta*rho in [-1.63, -1.47], [-0.258, 0.317], ")
    assert "including at rho = 0" in warning and "locally near 0 only" not in warning
    assert direction.reason.startswith("lowers the margin for all beta*rho above 5.59 and on 5 band(s) below it")


def test_quadratic_logsigmoid_warns_loudly_that_the_loss_falls_as_rho_goes_to_minus_inf(warm_pool):
    """Was: `direction: ok` with no warning although fraction_pushing_down was 0.4997."""
    report = validate(QUAD_LOGSIG, beta=0.1)
    assert report.valid, report.reason
    direction = next(c for c in report.checks if c.name == "direction")
    assert direction.details["pattern"] == "large_negative"
    (warning,) = report.warnings
    assert warning.startswith("direction: COLLAPSE RISK: the loss keeps decreasing as rho -> -inf. For every "
                              "beta*rho below -1 (down to -50, the end of the range tested) dL/drho > 0")
    assert "making the chosen answer less likely" in warning and "above -1 it raises the margin" in warning
    out = render(report)
    assert "[ok  ] direction: lowers the margin for beta*rho below -1: the loss keeps decreasing" in out
    assert "warning: direction: COLLAPSE RISK" in out


@pytest.mark.parametrize("source", [DPO_RHO, "dpo", "hinge", "robust", "bco_pair", "apo_zero", "kto_pair"])
def test_everywhere(source):
    check, warnings = _direction(source)
    assert check.details["pattern"] == "everywhere" and warnings == []
    assert check.reason == "raises the margin at every margin tested (beta*rho in [-50, 50])"


@pytest.mark.parametrize("name,target", [("ipo", 0.5), ("ipo_norm", 0.5), ("exo_pair", 6.91)])
def test_large_positive_only_reads_as_a_target_margin_not_an_alarm(name, target):
    check, warnings = _direction(name)
    assert check.details["pattern"] == "large_positive" and warnings == []
    assert check.details["target_margin"] == pytest.approx(target, abs=0.01)
    assert check.reason.startswith("raises the margin up to beta*rho = ")
    assert check.reason.endswith(", lowers it above: a target margin")


def test_ipo_reason_names_its_target_at_half():
    check, _ = _direction("ipo")
    assert check.reason == "raises the margin up to beta*rho = 0.500, lowers it above: a target margin"


def test_a_target_margin_below_zero_is_warned():
    check, (warning,) = _direction(NEGATIVE_TARGET)
    assert check.details["pattern"] == "large_positive"
    assert warning.startswith("direction: dL/drho > 0 for all beta*rho above -3: gradient descent lowers the "
                              "margin already at rho = 0")


@pytest.mark.parametrize("source", [LRML_METHOD, "lrml"])
def test_near_zero_only_is_lrml_and_a_mild_note(source):
    check, (warning,) = _direction(source)
    assert check.details["pattern"] == "near_zero"
    assert check.reason == "raises the margin except near 0 (it lowers it on beta*rho in [-0.119, 0.072])"
    assert warning.startswith("direction: dL/drho > 0 at rho = 0, locally near 0 only (fraction 0.002")
    assert "beta*rho in [-0.119, 0.072]); elsewhere it raises the margin" in warning
    assert "COLLAPSE" not in warning


def test_large_negative_only():
    check, (warning,) = _direction(QUAD_LOGSIG)
    assert check.details["pattern"] == "large_negative"
    assert check.details["regions_pushing_down"][0][1] == pytest.approx(-1.0, abs=1e-3)
    assert "It reaches 0 at beta*rho = -50, no more than its lowest at any positive margin tested." in warning


def test_bands_away_from_zero():
    check, (warning,) = _direction(BUMP_AT_4)
    assert check.details["pattern"] == "bands"
    assert check.reason == "lowers the margin on beta*rho in [3.72, 4.73], raises it elsewhere"
    assert warning.startswith("direction: dL/drho > 0 on beta*rho in [3.72, 4.73]")


def test_nowhere_is_the_opposite_preference():
    check, (warning,) = _direction(FLIPPED_DPO)
    assert check.details["pattern"] == "nowhere"
    assert check.reason == "lowers the margin at every margin tested: learns the opposite preference"
    assert "at every margin tested" in warning and "opposite preference" in warning
    assert "keeps decreasing as rho -> -inf" in warning


def test_every_registry_objective_reads_sensibly():
    for name in REGISTRY:
        check, warnings = _direction(name)
        pattern = check.details["pattern"]
        if name == "lrml":
            assert pattern == "near_zero", name
        else:
            assert pattern in ("everywhere", "large_positive") and warnings == [], (name, check.reason)
            assert check.details.get("target_margin", 1.0) > 0, name
