"""Our built-in objectives agree with TRL 1.16's built-in losses, values and gradients."""

import zlib

import pytest
import torch

import objectives
from objectives import baselines
from tests.objectives.trl_reference import trl_loss

# (our name, TRL loss_type, TRL label_smoothing)
PAIRS = [
    ("dpo", "sigmoid", 0.0),
    ("hinge", "hinge", 0.0),
    ("lrml", "discopop", 0.0),
    ("bco_pair", "bco_pair", 0.0),
    ("nca_pair", "nca_pair", 0.0),
    ("sppo_hard", "sppo_hard", 0.0),
    ("apo_zero", "apo_zero", 0.0),
    ("robust", "robust", baselines.ROBUST_LABEL_SMOOTHING),
    ("exo_pair", "exo_pair", baselines.EXO_EPSILON),
]


def _batch(seed, n=16, spread=4.0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, generator=g, dtype=torch.float64) * spread - 30.0) for _ in range(4)]


def _ours(name, pc, pr, rc, rr, beta):
    pc, pr = pc.clone().requires_grad_(True), pr.clone().requires_grad_(True)
    loss = objectives.get(name)(pc, pr, rc, rr, beta).mean()
    loss.backward()
    return loss.detach(), pc.grad, pr.grad


@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5])
@pytest.mark.parametrize("ours,trl_type,smoothing", PAIRS)
def test_matches_trl_value_and_gradient(ours, trl_type, smoothing, beta):
    pc, pr, rc, rr = _batch(seed=zlib.crc32(f"{ours}-{beta}".encode()))
    expected = trl_loss(trl_type, pc, pr, rc, rr, beta, label_smoothing=smoothing)
    got = _ours(ours, pc, pr, rc, rr, beta)
    # TRL builds EXO's epsilon as a float32 tensor, so its log(eps) carries float32 rounding.
    tol = 1e-6 if trl_type == "exo_pair" else 1e-10
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=tol, atol=tol)


def test_per_pair_values_match_trl_one_pair_at_a_time():
    """TRL only returns the batch mean; a batch of one pins every per-pair value."""
    pc, pr, rc, rr = _batch(seed=3, n=6)
    ours = objectives.get("lrml")(pc, pr, rc, rr, 0.1)
    for i in range(6):
        one = [t[i:i + 1] for t in (pc, pr, rc, rr)]
        torch.testing.assert_close(ours[i:i + 1], trl_loss("discopop", *one, 0.1)[0].reshape(1))


def test_ipo_norm_matches_trl_length_normalised_ipo():
    """TRL's ipo divides each log-ratio by its completion length; ipo_norm gets per-token means."""
    pc, pr, rc, rr = _batch(seed=5, n=8)
    g = torch.Generator().manual_seed(0)
    lc, lr = torch.randint(1, 9, (8,), generator=g), torch.randint(1, 9, (8,), generator=g)
    trl_value = trl_loss("ipo", pc, pr, rc, rr, 0.1, lengths=(lc, lr))[0]
    ours = objectives.get("ipo_norm")(pc / lc, pr / lr, rc / lc, rr / lr, 0.1).mean()
    torch.testing.assert_close(ours, trl_value)
    assert objectives.get("ipo_norm").length_normalized and not objectives.get("ipo").length_normalized


def test_paper_ipo_differs_from_trl_ipo_when_lengths_differ():
    pc, pr, rc, rr = _batch(seed=5, n=8)
    lengths = (torch.full((8,), 3), torch.full((8,), 7))
    trl_value = trl_loss("ipo", pc, pr, rc, rr, 0.1, lengths=lengths)[0]
    assert not torch.allclose(objectives.get("ipo")(pc, pr, rc, rr, 0.1).mean(), trl_value)


def test_trl_still_has_the_losses_we_compare_against():
    """Breaks loudly if TRL drops or renames a loss_type that parity relies on."""
    import inspect

    from trl import DPOTrainer
    source = inspect.getsource(DPOTrainer._compute_loss)
    for _, trl_type, _ in PAIRS + [("ipo_norm", "ipo", 0.0)]:
        assert f'loss_type == "{trl_type}"' in source
