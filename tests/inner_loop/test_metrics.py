"""evaluate_policy: exact KL, its single-sample check, win rate, determinism, JSON output."""

from __future__ import annotations

import json

import pytest
import torch

from inner_loop import metrics, sampling
from inner_loop.synthetic import POSITIVE

KEYS = {"reward", "reward_se", "ref_reward", "kl", "kl_se", "kl_sample", "kl_per_token", "kl_sample_per_token",
        "kl_ref_pi_per_token", "kl_direction", "win_rate", "win_rate_se", "n"}


class LogitBias(torch.nn.Module):
    """A policy = a causal LM plus a fixed bias on the next-token logits (cache kwargs pass through)."""

    def __init__(self, inner, bias: torch.Tensor):
        super().__init__()
        self.inner, self.bias = inner, bias

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        out.logits = out.logits + self.bias
        return out


@pytest.fixture(scope="module")
def sft_pair(tiny_synthetic_task):
    return tiny_synthetic_task.load_sft(), tiny_synthetic_task.load_sft()


def test_policy_equal_to_reference_has_zero_kl_and_even_win_rate(tiny_synthetic_task, sft_pair):
    policy, ref = sft_pair
    out = metrics.evaluate_policy(policy, tiny_synthetic_task, n_samples_per_prompt=4, seed=0, ref_model=ref)
    assert KEYS <= set(out) and json.loads(json.dumps(out)) == out
    assert out["kl"] == 0 and out["kl_sample"] == 0 and out["kl_ref_pi_per_token"] == 0
    assert out["n"] == 4 * len(tiny_synthetic_task.heldout_prompts)
    assert out["kl_direction"] == "KL(pi||pi_ref), summed over completion tokens"
    assert 0 <= out["win_rate"] <= 1
    assert abs(out["win_rate"] - 0.5) < 4 * out["win_rate_se"] + 0.02
    assert abs(out["reward"] - out["ref_reward"]) < 0.1


def test_evaluation_is_deterministic_given_seed_and_keeps_train_mode(tiny_synthetic_task, sft_pair):
    policy, ref = sft_pair
    policy.train()
    a = metrics.evaluate_policy(policy, tiny_synthetic_task, seed=3, ref_model=ref)
    b = metrics.evaluate_policy(policy, tiny_synthetic_task, seed=3, ref_model=ref)
    c = metrics.evaluate_policy(policy, tiny_synthetic_task, seed=4, ref_model=ref)
    drop = lambda d: {k: v for k, v in d.items() if k != "seconds"}  # noqa: E731
    assert drop(a) == drop(b) and drop(a) != drop(c)
    assert policy.training


def test_perturbed_policy_has_positive_kl_matching_the_single_sample_estimate(tiny_synthetic_task, sft_pair):
    _, ref = sft_pair
    policy = tiny_synthetic_task.load_sft()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.03 * torch.randn(p.shape, generator=gen))
    out = metrics.evaluate_policy(policy, tiny_synthetic_task, n_samples_per_prompt=8, seed=0, ref_model=ref)
    assert out["kl"] > 0.05 and out["kl_ref_pi_per_token"] > 0 and out["kl_per_token"] > 0
    # same expectation; the exact one has the smaller spread
    se = (out["kl_se"] ** 2 + out["kl_sample_se"] ** 2) ** 0.5
    assert abs(out["kl"] - out["kl_sample"]) < 4 * se
    assert out["kl_se"] < out["kl_sample_se"]


def test_policy_biased_towards_positive_words_wins_and_pays_kl(tiny_synthetic_task, sft_pair):
    base, ref = sft_pair
    vocab = tiny_synthetic_task.vocab
    bias = torch.tensor([2.0 if t in POSITIVE else 0.0 for t in vocab])
    out = metrics.evaluate_policy(LogitBias(base, bias), tiny_synthetic_task, seed=0, ref_model=ref)
    assert out["reward"] > out["ref_reward"] + 0.1
    assert out["win_rate"] > 0.65 and out["kl"] > 0.5


def test_sampling_stops_at_eos_and_respects_the_length_cap(tiny_synthetic_task, sft_pair):
    policy, _ = sft_pair
    eos = tiny_synthetic_task.eos_token_id
    prompts = tiny_synthetic_task.heldout_prompts[:8]
    with sampling.torch_threads(1):
        out = sampling.sample_completions(policy, prompts, n_per_prompt=3, max_new_tokens=5, eos_token_id=eos,
                                          generator=torch.Generator().manual_seed(0))
    assert len(out) == 24 and all(1 <= len(c) <= 5 for c in out)
    assert all(eos not in c[:-1] for c in out)


def test_per_prompt_outcomes_average_to_the_aggregates_and_pair_by_prompt(tiny_synthetic_task, sft_pair):
    """evaluation.compare reads metrics["per_prompt"]: one value per held-out prompt, in prompt order."""
    import numpy as np

    from evaluation.compare import Run, Setting, difference, per_prompt

    policy, ref = sft_pair
    out = metrics.evaluate_policy(policy, tiny_synthetic_task, n_samples_per_prompt=3, seed=0, ref_model=ref)
    n_prompts = len(tiny_synthetic_task.heldout_prompts)
    assert json.loads(json.dumps(out)) == out
    for key in ("win_rate", "reward", "kl"):
        values = per_prompt(out, key)
        assert values is not None and values.shape == (n_prompts,), key
        assert np.isclose(values.mean(), out[key], atol=1e-6), key
    assert out["per_prompt"]["prompt_set"] == metrics.prompt_set(tiny_synthetic_task.heldout_prompts)

    biased = LogitBias(tiny_synthetic_task.load_sft(), torch.tensor(
        [2.0 if t in POSITIVE else 0.0 for t in tiny_synthetic_task.vocab]))
    other = metrics.evaluate_policy(biased, tiny_synthetic_task, n_samples_per_prompt=3, seed=0, ref_model=ref)
    setting = Setting(seed=0)
    est = difference([Run("biased", setting, "done", metrics=other)], [Run("sft", setting, "done", metrics=out)],
                     "win_rate", n_boot=200)
    assert est.pairing == "prompt-within-setting" and est.n_prompts == n_prompts
    # runs on different prompt sets are never paired by prompt
    moved = {**other, "per_prompt": {**other["per_prompt"], "prompt_set": "000000000000"}}
    est = difference([Run("biased", setting, "done", metrics=moved)], [Run("sft", setting, "done", metrics=out)],
                     "win_rate", n_boot=200)
    assert est.pairing == "setting"
