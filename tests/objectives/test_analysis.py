"""objectives.analysis: f'(0), extrema, convexity and limits in z = beta * rho, symbolic or numeric."""

import math

import numpy as np
import pytest

from objectives import ObjectiveError
from objectives.analysis import analyse, grid, numeric_limit, untrusted_runs_in


def test_dpo_is_convex_with_slope_minus_half_at_zero():
    """f(z) = log(1 + e^{-z}); f'(z) = -1/(1 + e^{z}) so f'(0) = -1/2; f''(z) = s(z)(1 - s(z)) > 0;
    f -> 0 as z -> +inf and f ~ -z -> +inf as z -> -inf; f(0) = log 2 = 0.693147."""
    s = analyse("dpo", beta=0.05).summary
    assert s["fprime0"]["value"] == -0.5 and s["fprime0"]["exact"] == "-1/2"
    assert s["fprime0"]["method"] == "symbolic"
    assert s["f0"] == pytest.approx(math.log(2), abs=1e-6)
    assert s["convexity"]["convex"] is True
    assert s["extrema"] == {**s["extrema"], "minima": [], "maxima": []}
    assert s["limits"]["rho->+inf"]["value"] == 0.0
    assert s["limits"]["rho->-inf"]["value"] == "+inf"
    assert s["closed_form"]["beta_only_through_z"] is True


def test_lrml_has_its_published_local_minimum_and_maximum():
    """LRML (tau = 0.05): f = log(1+e^{-z})(1 - s(20z)) + e^{-z} s(20z).
    f'(0) = -1/4 - 20 log2 / 4 - 1/2 + 20/4 = 17/4 - 5 log 2 = 0.784264 (s(0) = 1/2, s'(0) = 1/4).
    DiscoPOP reports a local minimum near z = -0.119 and a local maximum near z = +0.072, so the
    loss is not convex; f -> 0 as z -> +inf (e^{-z} gate -> 1) and -> +inf as z -> -inf."""
    s = analyse("lrml", beta=0.05).summary
    (minimum,), (maximum,) = s["extrema"]["minima"], s["extrema"]["maxima"]
    assert minimum["z"] == pytest.approx(-0.119, abs=2e-3)
    assert maximum["z"] == pytest.approx(0.072, abs=2e-3)
    assert minimum["f"] < maximum["f"]
    assert s["convexity"]["convex"] is False
    assert s["fprime0"]["value"] == pytest.approx(17 / 4 - 5 * math.log(2), abs=1e-6)
    assert s["limits"]["rho->+inf"]["value"] == 0.0
    assert s["limits"]["rho->-inf"]["value"] == "+inf"


def test_ipo_minimum_sits_at_half():
    """IPO: (z/beta - 1/(2 beta))^2 is 0 at z = 1/2; at beta = 0.05, f'(0) = 2(0 - 10)(20) = -400."""
    s = analyse("ipo", beta=0.05).summary
    assert [p["z"] for p in s["extrema"]["minima"]] == [pytest.approx(0.5, abs=1e-6)]
    assert s["fprime0"]["value"] == -400.0
    assert s["convexity"]["convex"] is True


LOOPED_DPO = '''
import torch.nn.functional as F

def looped(rho, beta):
    out = 0.0
    for _ in range(1):
        out = out + F.softplus(-beta * rho)
    return out
'''


def test_untranslatable_code_falls_back_to_numbers_and_says_so():
    """DPO written with a loop: no closed form, same numbers as DPO, every method numeric."""
    s = analyse(LOOPED_DPO, beta=0.1).summary
    assert s["closed_form"]["method"] == "none" and "For" in s["closed_form"]["reason"]
    assert s["fprime0"] == {"value": -0.5, "method": "numeric: autograd at z = 0"}
    assert s["limits"]["rho->+inf"]["value"] == 0.0
    assert s["limits"]["rho->-inf"]["value"] == "+inf"
    assert all(v["method"].startswith("numeric") for v in s["limits"].values())
    assert s["code_ran"] == untrusted_runs_in()


def test_batch_coupled_loss_is_a_labelled_slice():
    s = analyse("kto_pair", beta=0.1).summary
    assert s["kind"] == "batch" and "slice" in s["note"]
    assert "batch" in s["closed_form"]["reason"]


def test_a_candidate_that_fails_is_a_typed_error():
    with pytest.raises(ObjectiveError):
        analyse("def broken(rho, beta):\n    return rho.no_such_method()\n")


def test_numeric_limits_tell_growth_from_convergence():
    """f = 1 - 1/|z| converges (to ~0.995 at |z| = 200, flagged approximate); f = log|z| keeps growing
    by log 2 per doubling; f = e^{-|z|} is 0 to machine precision."""
    z = np.array([-200.0, -100.0, -50.0, -25.0, 25.0, 50.0, 100.0, 200.0])
    assert "slowly" in numeric_limit(z, 1 - 1 / np.abs(z), +1)["method"]
    assert numeric_limit(z, np.log(np.abs(z)), -1)["value"] == "+inf"
    assert numeric_limit(z, np.exp(-np.abs(z)), +1)["value"] == 0.0


def test_grid_has_zero_and_both_ranges():
    g = grid()
    assert 0.0 in g and g[0] == -10.0 and g[-1] == 10.0 and g == sorted(set(g))
