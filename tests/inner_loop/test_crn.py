"""Common random numbers and reward_gain (issue 10): every model scored at a seed sees the same
sampling randomness, the reference's completions are the same for every policy, the SFT model
scores exactly zero gain, and every objective trained at a seed sees the same batches in order."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import objectives
from inner_loop import metrics, sampling
from inner_loop.synthetic import POSITIVE
from inner_loop.train_config import TrainConfig
from inner_loop.trainer import train_objective

from tests.inner_loop.test_metrics import LogitBias

DROP = ("seconds",)


def _drop(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in DROP}


@pytest.fixture(scope="module")
def ref(tiny_synthetic_task):
    return tiny_synthetic_task.load_sft()


@pytest.fixture(scope="module")
def biased(tiny_synthetic_task):
    bias = torch.tensor([1.5 if t in POSITIVE else 0.0 for t in tiny_synthetic_task.vocab])
    return LogitBias(tiny_synthetic_task.load_sft(), bias)


def test_sft_scored_against_itself_gains_exactly_zero(tiny_synthetic_task, ref):
    sft = tiny_synthetic_task.load_sft()
    out = metrics.evaluate_policy(sft, tiny_synthetic_task, n_samples_per_prompt=4, seed=0, ref_model=ref)
    assert out["reward_gain"] == 0.0 and out["reward_gain_se"] == 0.0 and out["win_rate"] == 0.5
    assert out["reward"] == out["ref_reward"] and out["win_rate_se"] == 0.0
    assert out["per_prompt"]["reward_gain"] == [0.0] * len(tiny_synthetic_task.heldout_prompts)
    # without common random numbers the same model draws other completions: zero only on average
    loose = metrics.evaluate_policy(sft, tiny_synthetic_task, n_samples_per_prompt=4, seed=0, ref_model=ref,
                                    crn=False)
    assert loose["reward_gain"] != 0.0 and loose["reward"] == out["reward"]
    assert abs(loose["reward_gain"]) < 4 * loose["reward_gain_se"] + 0.02


def test_reward_gain_is_reward_minus_ref_reward_pairwise(tiny_synthetic_task, ref, biased):
    out = metrics.evaluate_policy(biased, tiny_synthetic_task, n_samples_per_prompt=3, seed=0, ref_model=ref)
    assert out["reward_gain"] == pytest.approx(out["reward"] - out["ref_reward"], abs=1e-6)
    assert out["reward_gain"] > 0.05 and out["win_rate"] > 0.55  # more positive words: better, both ways
    pp = np.array(out["per_prompt"]["reward_gain"])
    assert pp.shape == (len(tiny_synthetic_task.heldout_prompts),)
    assert pp.mean() == pytest.approx(out["reward_gain"], abs=1e-6)
    # se over prompts of the paired per-prompt differences
    assert out["reward_gain_se"] == pytest.approx(pp.std(ddof=1) / np.sqrt(len(pp)), rel=1e-4)


def test_policies_at_a_seed_share_the_random_numbers_and_the_reference_completions(
        tiny_synthetic_task, ref, biased, monkeypatch):
    calls = []
    real = sampling.sample_completions

    def recording(model, prompts, **kw):
        seed = kw["generator"].initial_seed()
        out = real(model, prompts, **kw)
        calls.append((seed, out))
        return out

    monkeypatch.setattr(sampling, "sample_completions", recording)
    sft = tiny_synthetic_task.load_sft()
    a = metrics.evaluate_policy(sft, tiny_synthetic_task, n_samples_per_prompt=3, seed=5, ref_model=ref)
    b = metrics.evaluate_policy(biased, tiny_synthetic_task, n_samples_per_prompt=3, seed=5, ref_model=ref)
    c = metrics.evaluate_policy(biased, tiny_synthetic_task, n_samples_per_prompt=3, seed=6, ref_model=ref)
    (sa, pol_a), (sa_ref, ref_a), (sb, pol_b), (sb_ref, ref_b), (sc, _), (sc_ref, ref_c) = calls
    assert sa == sa_ref == sb == sb_ref == 5 and sc == sc_ref == 6  # one stream per seed, for every model
    assert ref_a == ref_b and ref_c != ref_a                        # the reference's completions
    assert pol_a == ref_a and pol_b != ref_a                        # the SFT policy writes them too
    assert a["ref_reward"] == b["ref_reward"] != c["ref_reward"]
    # the biased policy keeps many of the reference's completions (where its bias does not flip a
    # token): paired down to the sample, these tie
    same = sum(x == y for x, y in zip(pol_b, ref_b))
    assert 0 < same < len(ref_b)


def test_the_same_policy_scored_twice_gives_identical_metrics(tiny_synthetic_task, ref, biased):
    a = metrics.evaluate_policy(biased, tiny_synthetic_task, n_samples_per_prompt=2, seed=2, ref_model=ref)
    b = metrics.evaluate_policy(biased, tiny_synthetic_task, n_samples_per_prompt=2, seed=2, ref_model=ref)
    assert _drop(a) == _drop(b)
    # and the reference loaded by evaluate_policy itself is the same model: same numbers
    c = metrics.evaluate_policy(biased, tiny_synthetic_task, n_samples_per_prompt=2, seed=2)
    assert _drop(c) == _drop(a)


def _batches_seen(task, name: str, seed: int) -> list[list[float]]:
    """The reference log-probs of the chosen completions of every batch, in order (names the pairs)."""
    seen = []
    base = objectives.load(name)

    def fn(pc, pr, rc, rr, beta):
        seen.append([round(float(x), 5) for x in rc])
        return base.fn(pc, pr, rc, rr, beta)

    config = TrainConfig(beta=0.1, learning_rate=1e-3, max_steps=4, batch_size=16, seed=seed, threads=1)
    out = train_objective(task.load_sft(), task.tokenizer, task.train_pairs, dataclasses.replace(base, fn=fn), config)
    assert out.status == "done"
    return seen


def test_every_objective_at_a_seed_trains_on_the_same_batches_in_the_same_order(tiny_synthetic_task):
    dpo = _batches_seen(tiny_synthetic_task, "dpo", seed=0)
    assert len(dpo) == 4 and len(dpo[0]) == 16
    assert _batches_seen(tiny_synthetic_task, "ipo", seed=0) == dpo
    assert _batches_seen(tiny_synthetic_task, "dpo", seed=1) != dpo


def test_a_trained_policy_gains_what_its_rewards_say(tiny_synthetic_task, tiny_synthetic_cache):
    from inner_loop.runner import run_candidate

    from tests.inner_loop.conftest import TINY_SYNTHETIC

    res = run_candidate("dpo", seed=0, isolation="none", cache_dir=tiny_synthetic_cache, max_steps=6,
                        eval_kwargs={"n_samples_per_prompt": 2}, **TINY_SYNTHETIC)
    assert res.ok, res.reason
    m = res.metrics
    assert m["reward_gain"] == pytest.approx(m["reward"] - m["ref_reward"], abs=1e-6)
    assert np.sign(m["reward_gain"]) == np.sign(m["reward"] - m["ref_reward"]) != 0
    assert m["kl"] > 0 and m["reward_gain"] != 0


def test_the_task_reference_and_its_completions_are_loaded_once_per_seed(tiny_synthetic_task, biased,
                                                                          monkeypatch):
    first = metrics.evaluate_policy(biased, tiny_synthetic_task, n_samples_per_prompt=2, seed=9)

    def no_more(*a, **kw):
        raise AssertionError("the reference was loaded again")

    calls = []
    real = sampling.sample_completions
    monkeypatch.setattr(tiny_synthetic_task, "load_sft", no_more)
    monkeypatch.setattr(sampling, "sample_completions", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    again = metrics.evaluate_policy(biased, tiny_synthetic_task, n_samples_per_prompt=2, seed=9)
    assert _drop(again) == _drop(first) and len(calls) == 1  # only the policy sampled


def test_kl_is_computed_on_the_first_samples_of_each_prompt(tiny_synthetic_task, ref, biased):
    few = metrics.evaluate_policy(biased, tiny_synthetic_task, n_samples_per_prompt=6, seed=0, ref_model=ref,
                                  kl_samples_per_prompt=2)
    two = metrics.evaluate_policy(biased, tiny_synthetic_task, n_samples_per_prompt=6, seed=0, ref_model=ref,
                                  kl_samples_per_prompt=None)
    assert few["kl_samples_per_prompt"] == 2 and two["kl_samples_per_prompt"] == 6
    assert few["reward_gain"] == two["reward_gain"] and few["kl"] != two["kl"]
    assert abs(few["kl"] - two["kl"]) < 4 * few["kl_se"]
    assert np.mean(few["per_prompt"]["kl"]) == pytest.approx(few["kl"], rel=1e-5)
