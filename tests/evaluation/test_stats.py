"""evaluation.stats: paired and two-level bootstrap intervals on data whose answer is known."""

import math

import numpy as np
import pytest

from evaluation.stats import hierarchical_bootstrap, mean_se, paired_bootstrap


def test_identical_arrays_give_the_zero_interval():
    a = [0.61, 0.55, 0.70, 0.58]
    est = paired_bootstrap(a, a)
    assert (est.mean, est.lo, est.hi, est.se) == (0.0, 0.0, 0.0, 0.0)
    assert est.pairing == "setting" and est.n_units == 4 and not est.excludes_zero


def test_a_constant_shift_gives_a_point_interval_at_the_shift():
    b = np.array([0.2, 0.9, 0.4, 0.7, 0.1])  # large seed-to-seed spread, shared by both
    est = paired_bootstrap(b + 0.05, b)
    assert est.mean == pytest.approx(0.05)
    assert est.lo == pytest.approx(0.05) and est.hi == pytest.approx(0.05)
    assert est.excludes_zero


def test_pairing_removes_the_shared_seed_variance():
    rng = np.random.default_rng(3)
    seed_effect = rng.normal(0, 1.0, size=20)   # shared by both objectives
    a = seed_effect + 0.3 + rng.normal(0, 0.05, size=20)
    b = seed_effect + rng.normal(0, 0.05, size=20)
    est = paired_bootstrap(a, b)
    assert 0.2 < est.lo < 0.3 < est.hi < 0.4  # an unpaired interval would be ~ +-0.6 wide


def test_mean_se_by_hand():
    # mean 2, sample sd = sqrt(((1)^2 + 0 + 1^2) / 2) = 1, se = 1 / sqrt(3)
    assert mean_se([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1 / math.sqrt(3)))
    m, se = mean_se([4.0])
    assert m == 4.0 and math.isnan(se)


def test_coverage_on_a_simulated_normal_is_near_nominal():
    rng = np.random.default_rng(0)
    true, hits, trials = 0.3, 0, 200
    for t in range(trials):
        d = rng.normal(true, 1.0, size=40)
        est = paired_bootstrap(d, np.zeros_like(d), n_boot=1000, seed=t)
        hits += est.lo <= true <= est.hi
    assert 0.88 <= hits / trials <= 0.99  # percentile bootstrap at n=40: about 0.93-0.95


def test_hierarchical_identical_and_shifted():
    a = [np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0])]
    est = hierarchical_bootstrap(a, a)
    assert (est.lo, est.hi) == (0.0, 0.0)
    assert est.pairing == "prompt-within-setting" and est.n_prompts == 7 and est.n_units == 2
    shifted = hierarchical_bootstrap([x + 0.25 for x in a], a)
    assert shifted.lo == pytest.approx(0.25) and shifted.hi == pytest.approx(0.25)


def test_hierarchical_mean_weighs_every_unit_equally():
    # unit means of the difference: 1.0 (2 prompts) and 0.0 (6 prompts) -> 0.5, not 0.25
    a = [np.ones(2), np.zeros(6)]
    b = [np.zeros(2), np.zeros(6)]
    assert hierarchical_bootstrap(a, b, n_boot=200).mean == pytest.approx(0.5)


def test_one_unit_of_prompts_is_the_prompt_bootstrap():
    rng = np.random.default_rng(1)
    wins_a = (rng.random(400) < 0.6).astype(float)
    wins_b = (rng.random(400) < 0.5).astype(float)
    est = hierarchical_bootstrap([wins_a], [wins_b])
    # sd of a difference of two independent Bernoulli(~0.55) per prompt ~ 0.70; se ~ 0.70 / 20
    assert est.se == pytest.approx(0.035, abs=0.006)
    assert est.hi - est.lo == pytest.approx(2 * 1.96 * est.se, rel=0.1)
    assert "seed-to-seed" in est.note


def test_strata_are_kept_in_every_replicate():
    # stratum "x" differs by +1 everywhere, stratum "y" by -1: every replicate keeps 2 of each
    d = np.array([1.0, 1.0, -1.0, -1.0])
    est = paired_bootstrap(d, np.zeros(4), strata=["x", "x", "y", "y"])
    assert (est.lo, est.hi) == (0.0, 0.0)
    unstratified = paired_bootstrap(d, np.zeros(4))
    assert unstratified.lo < 0 < unstratified.hi


def test_non_finite_values_are_refused():
    with pytest.raises(ValueError, match="failed runs"):
        paired_bootstrap([0.5, math.nan], [0.5, 0.5])
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap([0.5], [0.5, 0.5])
