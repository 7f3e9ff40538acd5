"""evaluation.stats: paired and two-level bootstrap intervals on data whose answer is known."""

import json
import math

import numpy as np
import pytest

from evaluation.stats import (bootstrap_p, correct, hierarchical_bootstrap, holm, kendall, mean_se, paired_bootstrap,
                              rank_correlations, spearman)


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


def test_holm_on_a_known_example():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])  # one comparison: nothing to adjust


def test_bootstrap_p_counts_the_replicates_on_the_far_side_of_zero():
    # 999 replicates, 9 at or below 0: p = 2 * (9 + 1) / 1000
    reps = np.concatenate([np.full(9, -0.1), np.full(990, 0.2)])
    assert bootstrap_p(reps) == pytest.approx(0.02)
    assert bootstrap_p(np.zeros(99)) == 1.0  # all at zero: no evidence
    assert bootstrap_p(np.full(999, 0.3)) == pytest.approx(0.002)  # never 0 from a finite bootstrap


def test_correct_gives_bonferroni_intervals_and_holm_decisions():
    b = np.array([0.2, 0.9, 0.4, 0.7, 0.1])
    shifted = paired_bootstrap(b + 0.05, b, n_boot=999)     # every replicate is +0.05
    same = paired_bootstrap(b, b, n_boot=999)               # every replicate is 0
    noisy = paired_bootstrap(np.random.default_rng(1).normal(0.1, 0.2, 12), np.zeros(12), n_boot=999)
    c_shift, c_same, c_noisy = correct([shifted, same, noisy])
    assert c_shift.m == 3 and (c_shift.lo, c_shift.hi) == pytest.approx((0.05, 0.05))
    assert (c_same.lo, c_same.hi) == (0.0, 0.0) and c_same.p_holm == 1.0 and not c_same.significant
    # the smallest p (0.002) times 3; Holm calls it
    assert c_shift.p_holm == pytest.approx(3 * 0.002) and c_shift.significant
    # Bonferroni: the percentile interval at 1 - 0.05/3 of the same replicates, wider than the uncorrected
    lo, hi = np.quantile(noisy.replicates, [0.025 / 3, 1 - 0.025 / 3])
    assert (c_noisy.lo, c_noisy.hi) == pytest.approx((lo, hi))
    assert c_noisy.lo < noisy.lo and c_noisy.hi > noisy.hi
    assert "Bonferroni-corrected for 3 comparisons" in c_noisy.what
    assert correct([]) == []


def test_an_estimate_serialises_without_its_replicates_and_says_what_it_is():
    est = paired_bootstrap([0.1, 0.3, 0.2], [0.0, 0.1, 0.1], n_boot=200)
    d = est.to_dict()
    assert "replicates" not in d and d["p_value"] == est.p_value
    assert d["what"] == "95% paired percentile bootstrap CI over 3 paired seed/setting units (200 replicates)"
    json.dumps(d)
    h = hierarchical_bootstrap([[1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 0.0]], n_boot=50)
    assert "then 4 paired prompts within them" in h.to_dict()["what"]


# -- rank correlations -------------------------------------------------------------------------------

def test_rank_correlations_by_hand_agreement_inversion_and_ties():
    x = [0.1, 0.4, 0.2, 0.9]
    assert spearman(x, [1, 3, 2, 4]) == pytest.approx(1.0) and kendall(x, [1, 3, 2, 4]) == pytest.approx(1.0)
    assert spearman(x, [4, 2, 3, 1]) == pytest.approx(-1.0) and kendall(x, [4, 2, 3, 1]) == pytest.approx(-1.0)
    # y = (1, 1, 2, 3) against (1, 2, 3, 4): average ranks (1.5, 1.5, 3, 4); centred products sum to 4.5,
    # sums of squares 5 and 4.5, so rho = 4.5 / sqrt(22.5) = 3 / sqrt(10); tau-b: 5 of 6 pairs concordant,
    # one tied in y, none discordant: 5 / sqrt(6 * 5)
    assert spearman([1, 2, 3, 4], [1, 1, 2, 3]) == pytest.approx(3 / math.sqrt(10))
    assert kendall([1, 2, 3, 4], [1, 1, 2, 3]) == pytest.approx(5 / math.sqrt(30))
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5])) and math.isnan(kendall([1, 2, 3], [5, 5, 5]))


def test_rank_correlations_match_scipy_with_ties_and_vectorised():
    from scipy.stats import kendalltau, spearmanr
    rng = np.random.default_rng(1)
    for _ in range(50):
        x, y = rng.integers(0, 4, 6).astype(float), rng.integers(0, 4, 6).astype(float)
        for mine, theirs in ((spearman, spearmanr), (kendall, kendalltau)):
            a, b = mine(x, y), theirs(x, y).statistic
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)
    x, ys = rng.normal(size=5), rng.normal(size=(4, 5))
    assert spearman(x, ys) == pytest.approx([spearmanr(x, y).statistic for y in ys])
    assert kendall(x, ys) == pytest.approx([kendalltau(x, y).statistic for y in ys])


def test_rank_correlation_interval_contains_the_estimate_and_says_what_it_is():
    rng = np.random.default_rng(2)
    search = [0.7, 0.6, 0.62, 0.55, 0.58]
    heldout = np.array(search)[:, None] + rng.normal(0, 0.04, size=(5, 12))   # 12 held-out seeds
    heldout[0, 3] = np.nan                                                     # one failed run
    out = rank_correlations(search, heldout, n_boot=2000)
    for method, c in out.items():
        assert c.lo <= c.estimate <= c.hi and -1 <= c.lo and c.hi <= 1
        assert c.n_objectives == 5 and c.n_units == 12 and c.n_valid == 2000 and not c.note
    assert out["spearman"].format().startswith("Spearman rho over 5 objectives: ")
    assert "[95% bootstrap CI over seeds: " in out["kendall"].format()
    d = out["spearman"].to_dict()
    assert d["text"] == out["spearman"].format() and "resampling the 12 held-out seeds" in d["what"]
    json.dumps(d)


def test_perfect_agreement_on_every_seed_gives_the_point_interval_one():
    search = [3.0, 1.0, 2.0]
    heldout = [[0.9, 0.8, 0.95], [0.1, 0.2, 0.15], [0.5, 0.5, 0.45]]
    out = rank_correlations(search, heldout, n_boot=500, strata=["a", "a", "b"])
    assert (out["spearman"].estimate, out["spearman"].lo, out["spearman"].hi) == (1.0, 1.0, 1.0)
    assert out["kendall"].estimate == pytest.approx(1.0) and "only 3 held-out" in out["kendall"].note
    inverted = rank_correlations([-v for v in search], heldout, n_boot=500)
    assert inverted["spearman"].hi == pytest.approx(-1.0) and inverted["kendall"].estimate == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        rank_correlations(search, [[1.0], [2.0]])
