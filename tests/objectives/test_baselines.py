"""Built-in objectives against values worked out by hand."""

import math

import pytest
import torch

import objectives
from objectives import REGISTRY


def at(name, z, beta=1.0):
    """Loss at margin rho = z / beta, with rho on the chosen policy log-prob."""
    rho = torch.tensor([z / beta], dtype=torch.float64)
    return objectives.get(name).of_rho(rho, beta).item()


def test_dpo_hand_values():
    """-log sigmoid(0) = log 2; -log sigmoid(2) = log(1 + e^-2) = 0.126928."""
    assert at("dpo", 0.0) == pytest.approx(math.log(2))
    assert at("dpo", 2.0, beta=0.1) == pytest.approx(math.log1p(math.exp(-2)))


def test_ipo_is_squared_distance_to_half_inverse_beta():
    """beta = 0.1: target margin 5, so (0 - 5)^2 = 25 and (5 - 5)^2 = 0."""
    assert at("ipo", 0.0, beta=0.1) == pytest.approx(25.0)
    assert at("ipo", 0.5, beta=0.1) == pytest.approx(0.0)  # z = 0.5 -> rho = 5


def test_hinge_hand_values():
    """relu(1 - z): 0.5 at z = 0.5, 0 beyond z = 1."""
    assert at("hinge", 0.5) == pytest.approx(0.5)
    assert at("hinge", 2.0) == 0.0


def test_lrml_at_zero_is_even_blend():
    """At z = 0 the gate is 1/2: 0.5 * log 2 + 0.5 * exp(0) = 0.846574."""
    assert at("lrml", 0.0, beta=0.05) == pytest.approx(0.5 * math.log(2) + 0.5)


def test_lrml_tends_to_exponential_and_logistic_branches():
    """Far right the gate is 1 (exp(-z)); far left it is 0 (softplus(-z))."""
    assert at("lrml", 3.0) == pytest.approx(math.exp(-3.0), rel=1e-6)
    assert at("lrml", -3.0) == pytest.approx(math.log1p(math.exp(3.0)), rel=1e-6)


def test_kto_pair_at_reference_is_one_half():
    """All log-ratios 0: batch KLs 0, each half 1 - sigmoid(0) = 0.5, mean 0.5."""
    zeros = torch.zeros(4, dtype=torch.float64)
    assert torch.allclose(objectives.get("kto_pair")(zeros, zeros, zeros, zeros, 0.1),
                          torch.full((4,), 0.5, dtype=torch.float64))


def test_kto_pair_is_batch_coupled():
    """Moving another pair's chosen log-ratio changes the batch KL, hence this pair's loss."""
    pc, pr, rc, rr = (torch.zeros(3, dtype=torch.float64) for _ in range(4))
    before = objectives.get("kto_pair")(pc, pr, rc, rr, 1.0)[0]
    pc2 = pc.clone()
    pc2[2] = 5.0
    after = objectives.get("kto_pair")(pc2, pr, rc, rr, 1.0)[0]
    assert after != before


def test_sppo_hard_hand_value():
    """beta = 0.5, both log-ratios 0: (0 - 1)^2 + (0 + 1)^2 = 2."""
    zeros = torch.zeros(1, dtype=torch.float64)
    assert objectives.get("sppo_hard")(zeros, zeros, zeros, zeros, 0.5).item() == pytest.approx(2.0)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_baseline_returns_per_pair_losses_with_gradient(name):
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(7, generator=g) - 10 for _ in range(4))
    pc.requires_grad_(True)
    loss = objectives.get(name)(pc, pr, rc, rr, 0.1)
    assert loss.shape == (7,) and loss.dtype == torch.float32
    loss.mean().backward()
    assert torch.isfinite(pc.grad).all() and pc.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(REGISTRY))
def test_declared_kind_matches_measured_kind(name):
    obj = objectives.get(name)
    assert objectives.probe_kind(obj.fn) == obj.kind


def test_every_baseline_cites_its_equation_at_the_implementing_line():
    for name in REGISTRY:
        obj = objectives.get(name)
        assert "Eq." in obj.citation, name
        assert "# " in obj.source or name in {"ipo", "ipo_norm"}, name


def test_every_registry_source_holds_its_whole_formula():
    """`disco objectives list --source` and the campaign's seeded archive show each objective's source:
    no private helper may hide the formula (IPO's used to read `return _ipo(...)`)."""
    for name in REGISTRY:
        source = objectives.get(name).source
        assert "_ipo" not in source and "return _" not in source, name
    for name in ("ipo", "ipo_norm"):
        assert "(margin(pc, pr, rc, rr) - 1.0 / (2.0 * beta)) ** 2" in objectives.get(name).source
