"""objectives.fingerprint: the same function written differently is a duplicate; others are not."""

import json

import pytest

from objectives.fingerprint import Fingerprint, find_duplicate, fingerprint

DPO_METHOD = '''
def dpo_method(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
               reference_rejected_logps):
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = reference_chosen_logps - reference_rejected_logps
    return -F.logsigmoid(self.beta * (pi_logratios - ref_logratios))
'''
DPO_LOGPS = '''
import torch.nn.functional as F

def dpo_logps(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))
'''
DPO_RHO = '''
import torch.nn.functional as F

def dpo_rho(rho, beta):
    return F.softplus(-beta * rho)
'''
LRML_GATE_RHO = '''
def lrml_gate_rho(rho, beta):
    z = beta * rho
    gate = torch.sigmoid(rho)
    return -F.logsigmoid(z) * (1 - gate) + torch.exp(-z) * gate
'''
LRML_GATE_Z = '''
def lrml_gate_z(rho, beta):
    z = beta * rho
    gate = torch.sigmoid(beta * rho / 0.05)
    return -F.logsigmoid(z) * (1 - gate) + torch.exp(-z) * gate
'''


@pytest.fixture(scope="module")
def dpo_three_ways():
    return [fingerprint(src) for src in (DPO_METHOD, DPO_LOGPS, DPO_RHO)]


def test_dpo_written_three_ways_is_one_function(dpo_three_ways):
    """softplus(-z) = -logsigmoid(z) exactly, and the three forms see the same rho."""
    registry = fingerprint("dpo")
    for fp in dpo_three_ways:
        assert fp.same_function(registry)
        assert fp.key == registry.key


def test_lrml_gates_agree_only_at_beta_005():
    """sigmoid(beta * rho / 0.05) = sigmoid(rho) when beta = 0.05, and not at beta = 0.1
    (there the gate is sigmoid(2 rho)); beta is a parameter of the comparison."""
    a, b = fingerprint(LRML_GATE_RHO, betas=(0.05,)), fingerprint(LRML_GATE_Z, betas=(0.05,))
    assert a.same_function(b)
    assert b.same_function(fingerprint("lrml", betas=(0.05,)))
    a2, b2 = fingerprint(LRML_GATE_RHO, betas=(0.05, 0.1)), fingerprint(LRML_GATE_Z, betas=(0.05, 0.1))
    assert not a2.same_function(b2)
    assert a2.same_function(b)  # compared on the one beta they share


def test_dpo_ipo_and_hinge_are_different_functions():
    fps = {name: fingerprint(name) for name in ("dpo", "ipo", "hinge")}
    for x in fps:
        for y in fps:
            assert fps[x].same_function(fps[y]) == (x == y)
    assert len({fp.key for fp in fps.values()}) == 3


def test_the_batch_part_separates_losses_that_agree_on_the_margin_slice():
    """bco_pair at pc = rho, pr = rc = rr = 0 is -logsig(z) - logsig(0) = DPO + log 2, so the
    margin grid alone cannot tell it from that pointwise loss; the fixed batch can."""
    shifted = fingerprint("def f(rho, beta):\n    return F.softplus(-beta * rho) + math.log(2)\n")
    bco = fingerprint("bco_pair")
    assert shifted.per_beta["0.05"]["margin_f"] == pytest.approx(bco.per_beta["0.05"]["margin_f"])
    assert not shifted.same_function(bco)


def test_detach_changes_the_gradient_so_the_function_differs():
    """Same values as DPO, but no gradient flows."""
    detached = fingerprint("def f(rho, beta):\n    return F.softplus(-beta * rho).detach()\n")
    assert not detached.same_function(fingerprint("dpo"))


def test_round_trips_through_json_and_finds_the_duplicate(dpo_three_ways):
    stored = [(7, fingerprint("ipo").to_dict()),
              (8, json.loads(json.dumps(dpo_three_ways[0].to_dict())))]
    back = Fingerprint.from_dict(stored[1][1])
    assert back.key == dpo_three_ways[0].key and back.same_function(dpo_three_ways[0])
    assert find_duplicate(dpo_three_ways[2], stored) == 8
    assert find_duplicate(fingerprint("hinge"), stored) is None


def test_no_shared_beta_is_not_a_comparison():
    a, b = fingerprint("dpo", betas=(0.05,)), fingerprint("dpo", betas=(0.1,))
    with pytest.raises(ValueError, match="no beta in common"):
        a.same_function(b)
    assert find_duplicate(a, [("x", b)]) is None


def test_shifted_and_scaled_losses_train_the_same_but_are_other_functions():
    """3 * DPO + 1 has gradients 3x DPO's: same training under Adam, a different function."""
    scaled = "import torch.nn.functional as F\ndef f(rho, beta):\n    return 3.0 * F.softplus(-beta * rho) + 1.0\n"
    dpo, other = fingerprint("dpo"), fingerprint(scaled)
    assert not dpo.same_function(other)
    assert dpo.same_training(other) and dpo.relation(other) == "same training"
    assert dpo.key == other.key
    assert find_duplicate(other, [(1, dpo)]) is None
    assert find_duplicate(other, [(1, dpo)], up_to="training") == 1


def test_negated_loss_is_not_the_same_training():
    """-DPO has gradients -1x DPO's: the factor is negative, so it trains the opposite way."""
    flipped = "import torch.nn.functional as F\ndef f(rho, beta):\n    return -F.softplus(-beta * rho)\n"
    dpo, other = fingerprint("dpo"), fingerprint(flipped)
    assert not dpo.same_training(other) and dpo.relation(other) is None
    assert fingerprint("ipo").relation(dpo) is None
