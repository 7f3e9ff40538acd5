"""objectives.load: registry names, files, and the three code forms."""

import pytest
import torch

import objectives
from objectives import ObjectiveError
from objectives.screen import screen
from tests.objectives.sources import DPO_METHOD as METHOD_FORM


PLAIN_FORM = '''
import torch
import torch.nn.functional as F

def plain(pc, pr, rc, rr, beta):
    """DPO on the four tensors."""
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))
'''

RHO_FORM = '''
import torch

def of_margin(rho, beta):
    return torch.nn.functional.softplus(-beta * rho)
'''


def _batch():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(5, generator=g) * 2 - 8 for _ in range(4)]


@pytest.mark.parametrize("source,form", [(METHOD_FORM, "method"), (PLAIN_FORM, "logps"), (RHO_FORM, "rho")])
def test_three_forms_load_and_compute_dpo(source, form):
    obj = objectives.load(source)
    batch = _batch()
    assert obj.form == form and obj.kind == "pointwise" and obj.source == source
    torch.testing.assert_close(obj(*batch, 0.1), objectives.get("dpo")(*batch, 0.1))


def test_names_come_from_the_function_or_argument():
    assert objectives.load(PLAIN_FORM).name == "plain"
    assert objectives.load(PLAIN_FORM).description == "DPO on the four tensors."
    assert objectives.load(PLAIN_FORM, name="mine").name == "mine"


def test_file_path_loads_named_after_its_function_not_the_file(tmp_path):
    path = tmp_path / "my_loss.py"
    path.write_text(RHO_FORM)
    obj = objectives.load(str(path))
    assert obj.name == screen(RHO_FORM).function_name == "of_margin" and obj.form == "rho"


def test_registry_name_returns_the_baseline():
    assert objectives.load("lrml") is objectives.get("lrml")


def test_unknown_name_suggests_close_match():
    with pytest.raises(KeyError, match="did you mean 'lrml'"):
        objectives.load("lrlm")


def test_kind_is_measured_for_logratio_and_batch_code():
    logratio = "def f(pc, pr, rc, rr, beta):\n    return -F.logsigmoid(beta * (pc - rc)) + torch.sigmoid(beta * (pr - rr))\n"
    batch = "def f(rho, beta):\n    return -F.logsigmoid(beta * (rho - rho.mean()))\n"
    assert objectives.load(logratio).kind == "logratio"
    assert objectives.load(batch).kind == "batch"
    assert objectives.load(batch, kind="pointwise", probe=False).kind == "pointwise"


def test_wrong_parameter_count_is_a_clear_error():
    with pytest.raises(ObjectiveError, match="cannot tell the form"):
        objectives.load("def f(a, b, c):\n    return a\n")


def test_method_form_needs_all_four_tensors():
    with pytest.raises(ObjectiveError, match="method form"):
        objectives.load("def f(self, pc, pr):\n    return pc\n")


def test_module_level_constants_are_globals_of_the_loaded_function():
    obj = objectives.load("import torch.nn.functional as F\n\nEPS = 0.1\nSHIFT = -2 * 0.25\n\n"
                          "def f(rho, beta):\n    return F.softplus(-beta * rho + SHIFT) * (1 - EPS)\n")
    rho = torch.tensor([0.0, 10.0], dtype=torch.float64)
    expected = torch.nn.functional.softplus(-0.1 * rho - 0.5) * 0.9
    assert torch.allclose(obj.of_rho(rho, 0.1), expected)


def test_a_constant_that_fails_at_load_time_is_an_objective_error():
    with pytest.raises(ObjectiveError, match="could not define the function: ZeroDivisionError"):
        objectives.load("EPS = 1 / 0\n\ndef f(rho, beta):\n    return rho * EPS\n")
