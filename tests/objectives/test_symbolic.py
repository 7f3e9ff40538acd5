"""objectives.symbolic: code -> sympy by walking the AST, in z = beta * rho, never running the code."""

import builtins

import pytest
import sympy

from objectives import ObjectiveError
from objectives.symbolic import BETA, Z, translate
from tests.objectives.sources import LRML_METHOD as METHOD_LRML

LOG1PEXP = sympy.log(1 + sympy.exp(-Z))  # -logsigmoid(z)


def _same(a, b) -> bool:
    return sympy.simplify(a - b) == 0


def test_registry_dpo_is_softplus_of_minus_z():
    """DPO Eq. 7: -log sigmoid(beta*rho) = log(1 + e^{-z}), a function of z alone."""
    t = translate("dpo")
    assert t.pointwise and t.beta_free
    assert _same(t.expr, LOG1PEXP)
    assert t.latex == r"\log{\left(1 + e^{- z} \right)}"


def test_registry_lrml_inlines_margin_and_tau():
    """LRML with tau = 0.05: gate s(z/0.05) = 1/(1 + e^{-20 z});
    f = log(1 + e^{-z}) (1 - gate) + e^{-z} gate. margin() and LRML_TAU come from trusted modules."""
    t = translate("lrml")
    gate = 1 / (1 + sympy.exp(-20 * Z))
    assert t.beta_free
    assert _same(t.expr, LOG1PEXP * (1 - gate) + sympy.exp(-Z) * gate)


def test_ipo_keeps_beta_as_a_parameter():
    """IPO: (rho - 1/(2 beta))^2 = (z/beta - 1/(2 beta))^2 depends on beta beyond z."""
    t = translate("ipo")
    assert t.pointwise and not t.beta_free
    assert _same(t.expr, (Z / BETA - 1 / (2 * BETA)) ** 2)
    assert _same(t.at_beta(0.5), (2 * Z - 1) ** 2)  # (2z - 1)^2 at beta = 1/2




def test_method_form_with_self_beta_matches_the_registry():
    assert _same(translate(METHOD_LRML).expr, translate("lrml").expr)


def test_five_argument_form_reduces_to_rho_when_only_rho_appears():
    """beta*(pc - rc) - beta*(pr - rr) = beta*rho = z: products must be distributed to see it."""
    t = translate("def f(pc, pr, rc, rr, beta):\n    return beta * (pc - rc) - beta * (pr - rr)\n")
    assert t.pointwise and t.expr == Z


def test_logratio_loss_is_translated_but_not_pointwise():
    t = translate("bco_pair")
    assert t.variable == "logps" and not t.pointwise
    assert "not pointwise" in t.reason


@pytest.mark.parametrize("body,expected", [
    ("F.softplus(-beta * rho)", LOG1PEXP),
    ("torch.relu(1 - beta * rho)", sympy.Max(0, 1 - Z)),
    ("(beta * rho).clamp(min=-1, max=2)", sympy.Min(2, sympy.Max(-1, Z))),
    ("torch.where(beta * rho > 0, torch.exp(-beta * rho), 1 - beta * rho)",
     sympy.Piecewise((sympy.exp(-Z), Z > 0), (1 - Z, True))),
    ("torch.log1p(torch.exp(-beta * rho)) + math.pi", LOG1PEXP + sympy.pi),
    ("torch.maximum(beta * rho, (beta * rho) ** 2).abs()", sympy.Abs(sympy.Max(Z, Z ** 2))),
    ("torch.tanh(beta * rho).pow(2)", sympy.tanh(Z) ** 2),
])
def test_torch_operations_map_to_sympy(body, expected):
    t = translate(f"def f(rho, beta):\n    return {body}\n")
    assert t.pointwise, t.reason
    assert t.expr == expected


def test_imported_aliases_are_followed():
    src = ("import torch.nn.functional as G\nfrom math import log\n"
           "def f(rho, beta):\n    z = beta * rho\n    return -G.logsigmoid(z) + log(2)\n")
    assert _same(translate(src).expr, LOG1PEXP + sympy.log(2))


@pytest.mark.parametrize("body,reason,line", [
    ("    out = rho\n    for i in range(3):\n        out = out + 1\n    return out", "For", 3),
    ("    return (beta * rho).detach()", "detach", 2),
    ("    return (beta * rho).mean() - beta * rho", "batch", 2),
    ("    return rho ** 10 ** 10", "exponent", 2),
    ("    return rho[0]", "Subscript", 2),
])
def test_untranslatable_code_says_why_and_where(body, reason, line):
    t = translate(f"def f(rho, beta):\n{body}\n")
    assert t.expr is None and t.variable == ""
    assert reason in t.reason and t.line == line


def test_refused_code_raises_before_translation():
    with pytest.raises(ObjectiveError, match="not allowed"):
        translate("import os\ndef f(rho, beta):\n    return rho\n")


def test_translation_never_executes_the_candidate(monkeypatch):
    """exec, eval and the loader's compile_function are made to fail: translation needs none of them
    (compile() itself stays: ast.parse uses it to build the tree, which runs nothing)."""
    def refuse(*a, **k):
        raise AssertionError("translate() executed code")
    for name in ("exec", "eval"):
        monkeypatch.setattr(builtins, name, refuse)
    monkeypatch.setattr("objectives.execution.compile_function", refuse)
    assert translate(METHOD_LRML).pointwise


def test_torch_square_translates_like_power_of_two():
    """torch.square(1 - z) is (1 - z)^2: f'(0) = -2 in z; a plain int exponent once crashed _pow."""
    t = translate("import torch\ndef f(rho, beta):\n    return torch.square(1 - beta * rho)\n")
    assert t.expr is not None, t.reason
    assert sympy.simplify(t.expr - (1 - Z) ** 2) == 0


def test_module_level_constants_are_inlined_exactly():
    source = ("import torch.nn.functional as F\n\nEPS = 0.1\nSCALE = -2.0 * 0.5\n\n"
              "def eps_loss(rho, beta):\n    return -F.logsigmoid(beta * rho) * (1 - EPS) * -SCALE\n")
    t = translate(source)
    assert t.pointwise, t.reason
    assert sympy.simplify(t.expr - sympy.Rational(9, 10) * sympy.log(1 + sympy.exp(-Z))) == 0
