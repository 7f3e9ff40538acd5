"""The embedded keypoints task: gold reward, prompts, cache, defaults, one run through the runner."""

from __future__ import annotations

import time

import pytest
import torch

from inner_loop import keypoints, tasks
from inner_loop.keypoints_language import KeypointsConfig, keypoint_reward, keys_of, vocabulary

TINY_KEYPOINTS = dict(corpus_size=600, n_layer=2, n_embd=32, n_head=2, sft_steps=40, n_train_pairs=100,
                      n_heldout_prompts=16, max_completion_len=8, data_seed=0)


@pytest.fixture(scope="module")
def kp_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kp-cache")


@pytest.fixture(scope="module")
def tiny_keypoints(kp_cache):
    return keypoints.build(KeypointsConfig(**TINY_KEYPOINTS), cache_dir=kp_cache, progress=False)


def ids(task, text: str) -> list[int]:
    return task.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_gold_reward_is_key_coverage_minus_a_length_penalty(tiny_keypoints):
    """Prompt "apple * pear plum * lemon grape tl;dr": keys pear, lemon; penalty 0.05 per token."""
    task = tiny_keypoints
    prompt = ids(task, "<s> apple * pear plum * lemon grape tl;dr")
    assert keys_of(prompt, task.mark_id) == {task.vocab.index("pear"), task.vocab.index("lemon")}
    cases = {
        "pear lemon </s>": 1 - 0.10,                        # both keys, two tokens: the best completion
        "lemon </s>": 0.5 - 0.05,                           # half the keys
        "pear lemon apple plum </s>": 1 - 0.20,             # distractors cost length only
        "pear pear pear </s>": 0.5 - 0.15,                  # a repeat covers nothing more
        "</s>": 0.0,                                        # nothing said
        "apple grape </s> pear lemon": 0.0 - 0.10,          # after eos nothing counts
        "pear lemon": 1 - 0.10,                             # no eos: every token counts
    }
    comps = [ids(task, text) for text in cases]
    got = task.gold_reward(comps, prompts=[prompt] * len(comps))
    assert got.tolist() == pytest.approx(list(cases.values()))
    assert keypoint_reward([], frozenset(), 2, 0.05) == 0.0


def test_gold_reward_maps_prompt_major_completions_to_the_heldout_prompts(tiny_keypoints):
    task = tiny_keypoints
    k = 3
    comps = [[t for t in sorted(keys_of(p, task.mark_id))] + [task.eos_token_id]
             for p in task.heldout_prompts for _ in range(k)]
    r = task.gold_reward(comps)
    assert r.shape == (len(comps),) and torch.all(r > 0.8)  # every key, a few tokens
    with pytest.raises(ValueError):
        task.gold_reward(comps[:-1])


def test_prompts_are_well_formed_and_heldout_disjoint_from_training(tiny_keypoints):
    task = tiny_keypoints
    train = {tuple(p) for p in task.train_pairs["prompt_ids"]}
    held = {tuple(p) for p in task.heldout_prompts}
    assert len(train) == TINY_KEYPOINTS["n_train_pairs"] and len(held) == TINY_KEYPOINTS["n_heldout_prompts"]
    assert not train & held
    cfg = task.config
    for p in held:
        assert p[0] == task.tokenizer.bos_token_id and task.vocab[p[-1]] == "tl;dr"
        assert cfg.min_keys <= len(keys_of(p, task.mark_id)) <= cfg.max_keys
    row = task.train_pairs[0]
    assert ids(task, row["prompt"]) == row["prompt_ids"][1:]
    assert row["chosen_ids"][-1] == row["rejected_ids"][-1] == task.eos_token_id


def test_the_model_is_several_times_synthetics_by_default():
    from inner_loop.synthetic_build import make_model
    from inner_loop.synthetic_language import SyntheticConfig
    from inner_loop.synthetic_language import vocabulary as synthetic_vocabulary

    def n_params(config, vocab):
        return sum(p.numel() for p in make_model(config, len(vocab)).parameters())

    kp = n_params(KeypointsConfig(), vocabulary(KeypointsConfig()))
    assert kp > 4 * n_params(SyntheticConfig(), synthetic_vocabulary(SyntheticConfig())) and kp > 500_000


def test_build_is_cached(tiny_keypoints, kp_cache):
    assert not tiny_keypoints.loaded_from_cache
    t = time.perf_counter()
    again = keypoints.build(KeypointsConfig(**TINY_KEYPOINTS), cache_dir=kp_cache, progress=False)
    assert again.loaded_from_cache and again.path == tiny_keypoints.path
    assert time.perf_counter() - t < 5
    assert again.path.name == f"keypoints-{KeypointsConfig(**TINY_KEYPOINTS).config_hash()}"
    assert KeypointsConfig(**{**TINY_KEYPOINTS, "data_seed": 1}).config_hash() != again.config.config_hash()


def test_task_defaults_do_not_build(monkeypatch):
    monkeypatch.setattr(keypoints, "build", lambda *a, **kw: pytest.fail("built"))
    d = tasks.task_defaults("keypoints")
    assert d.beta == KeypointsConfig().beta and d.train["learning_rate"] > 0
    assert tasks.task_defaults("keypoints", {"beta": 0.3, "max_steps": 4}).beta == 0.3
    with pytest.raises(TypeError):
        KeypointsConfig.with_overrides(no_such_field=1)


def test_one_tiny_run_through_the_runner(tiny_keypoints, kp_cache):
    from inner_loop.runner import run_candidate

    res = run_candidate("dpo", task="keypoints", seed=0, isolation="none", cache_dir=kp_cache, max_steps=4,
                        eval_kwargs={"n_samples_per_prompt": 2}, **TINY_KEYPOINTS)
    assert res.ok, res.reason
    m = res.metrics
    for key in ("reward", "reward_gain", "kl", "win_rate"):
        assert key in m and key in m["per_prompt"]
    assert m["reward_gain"] == pytest.approx(m["reward"] - m["ref_reward"], abs=1e-6)
    assert len(m["per_prompt"]["reward"]) == TINY_KEYPOINTS["n_heldout_prompts"] and m["kl"] >= 0
    assert res.config["task"] == "keypoints" and res.config["train"]["beta"] == KeypointsConfig().beta
