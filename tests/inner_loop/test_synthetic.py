"""The synthetic sentiment task: language, gold reward, SFT, pairs, labels, cache."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import pytest
import torch

from inner_loop import synthetic, tasks
from inner_loop.synthetic import SyntheticConfig


def ids_of(task, text: str) -> list[int]:
    return task.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_tokenizer_round_trips_text_and_adds_bos(tiny_synthetic_task):
    task = tiny_synthetic_task
    rng = random.Random(1)
    for _ in range(20):
        text = " ".join(synthetic.review(rng, task.config))
        ids = task.tokenizer(text)["input_ids"]
        assert ids[0] == task.tokenizer.bos_token_id and task.tokenizer.unk_token_id not in ids
        assert task.tokenizer.decode(ids, skip_special_tokens=True) == text
    assert (task.tokenizer.pad_token, task.tokenizer.bos_token, task.tokenizer.eos_token) == ("<pad>", "<s>", "</s>")


def test_saved_tokenizer_and_model_load_with_auto_classes(tiny_synthetic_task):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_synthetic_task.path / "tokenizer"))
    assert tok("the plot was great")["input_ids"] == tiny_synthetic_task.tokenizer("the plot was great")["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(str(tiny_synthetic_task.sft_path))
    assert type(model).__name__ == "GPT2LMHeadModel" and model.dtype == torch.float32


def test_trl_tokenisation_of_the_text_columns_gives_back_the_id_columns(tiny_synthetic_task):
    """What DPOTrainer._prepare_dataset does for non-conversational text: add eos if missing,
    tokenize prompt and prompt + completion, split at the common prefix."""
    tok, pairs = tiny_synthetic_task.tokenizer, tiny_synthetic_task.train_pairs
    for row in pairs.select(range(50)):
        prompt_ids = tok(row["prompt"])["input_ids"]
        assert prompt_ids == row["prompt_ids"]
        for side in ("chosen", "rejected"):
            text = row[side] if row[side].endswith(tok.eos_token) else row[side] + tok.eos_token
            full = tok(row["prompt"] + text)["input_ids"]
            assert full[:len(prompt_ids)] == prompt_ids and full[len(prompt_ids):] == row[f"{side}_ids"]


def test_gold_reward_hand_computed(tiny_synthetic_task):
    """s = sum of +1 (positive) / -1 (negative) word weights, x-1 after "not", x2 after an
    intensifier; r = sigmoid(s / 2):
    "the plot was great ." s=1 -> 0.6225;  "not boring" s=+1 -> 0.6225;  "very dull" s=-2 ->
    0.2689;  "great </s> awful awful" s=1 (after eos ignored);  "not very great" s=+2 ("not" only
    flips the next word, and "very" has no weight) -> 0.7311;  "the plot ." s=0 -> 0.5;
    "terrible and awful but great" s=-1 -> 0.3775."""
    task = tiny_synthetic_task
    cases = {"the plot was great .": 1, "not boring": 1, "very dull": -2, "great </s> awful awful": 1,
             "not very great": 2, "the plot .": 0, "terrible and awful but great": -1}
    got_s = task.sentiment_score([ids_of(task, t) for t in cases])
    assert got_s.tolist() == list(cases.values())
    got_r = task.gold_reward([ids_of(task, t) for t in cases])
    expected = [0.6225, 0.6225, 0.2689, 0.6225, 0.7311, 0.5, 0.3775]
    assert got_r.tolist() == pytest.approx(expected, abs=1e-4)
    padded = torch.tensor([ids_of(task, "very dull </s> great"), ids_of(task, "great great great great")])
    assert task.gold_reward(padded).tolist() == pytest.approx([0.2689, 0.8808], abs=1e-4)
    assert task.gold_reward([[]]).tolist() == [0.5]


def test_prompts_never_end_on_a_modifier_and_reviews_vary(tiny_synthetic_config):
    rng = random.Random(0)
    for _ in range(300):
        assert synthetic.prompt_words(rng, tiny_synthetic_config)[-1] not in ("not", "very", "really", "truly")
    w, m = synthetic.reward_tables(synthetic.vocabulary(tiny_synthetic_config))
    index = {t: i for i, t in enumerate(synthetic.vocabulary(tiny_synthetic_config))}
    scores = synthetic.sentiment_score([[index[t] for t in synthetic.review(rng, tiny_synthetic_config)]
                                        for _ in range(400)], w, m, index["</s>"])
    assert (scores >= 2).float().mean() > 0.2 and (scores <= -2).float().mean() > 0.2
    assert (scores.abs() <= 1).float().mean() > 0.1  # mixed / neutral reviews too


def test_sft_loss_decreased_and_samples_vary_in_sentiment(tiny_synthetic_task):
    info = tiny_synthetic_task.build_info
    assert info["sft_loss_last10"] < info["sft_loss_first10"] - 1.5
    pairs = tiny_synthetic_task.train_pairs
    rewards = torch.tensor(list(pairs["chosen_reward"]) + list(pairs["rejected_reward"]))
    assert rewards.std() > 0.1
    assert (rewards > 0.7).float().mean() > 0.1 and (rewards < 0.3).float().mean() > 0.1


def test_bradley_terry_labels_are_noisy_but_correlated_with_gold_reward(tiny_synthetic_task):
    pairs = tiny_synthetic_task.train_pairs
    rc, rr = torch.tensor(list(pairs["chosen_reward"])), torch.tensor(list(pairs["rejected_reward"]))
    untied = rc != rr
    agree = (rc[untied] > rr[untied]).float().mean()
    assert 0.65 < agree < 0.98, agree
    assert (rc < rr).sum() >= 3  # some labels go against the gold reward


def test_pair_columns_ref_logps_and_eos(tiny_synthetic_task):
    task = tiny_synthetic_task
    pairs = task.train_pairs
    for col in ("prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps", "ref_rejected_logps",
                "ref_chosen_logps_mean", "ref_rejected_logps_mean", "chosen_length", "rejected_length",
                "prompt", "chosen", "rejected"):
        assert col in pairs.column_names
    assert len(pairs) == task.config.n_train_pairs
    model = task.load_sft()
    for row in pairs.select(range(8)):
        for side in ("chosen", "rejected"):
            ids = row[f"{side}_ids"]
            assert ids[-1] == task.eos_token_id and task.eos_token_id not in ids[:-1]
            assert row[f"{side}_length"] == len(ids) <= task.config.max_completion_len + 1
            full = torch.tensor([row["prompt_ids"] + ids])
            with torch.no_grad():
                logp = model(full).logits[0, :-1].log_softmax(-1).gather(1, full[0, 1:, None])[:, 0]
            expected = float(logp[-len(ids):].sum())
            assert row[f"ref_{side}_logps"] == pytest.approx(expected, abs=1e-3)
            assert row[f"ref_{side}_logps_mean"] == pytest.approx(expected / len(ids), abs=1e-4)


def test_heldout_prompts_are_disjoint_from_train_prompts(tiny_synthetic_task):
    train = {tuple(p) for p in tiny_synthetic_task.train_pairs["prompt_ids"]}
    held = [tuple(p) for p in tiny_synthetic_task.heldout_prompts]
    assert len(held) == tiny_synthetic_task.config.n_heldout_prompts == len(set(held))
    assert len(train) == tiny_synthetic_task.config.n_train_pairs
    assert not train & set(held)
    assert all(p[0] == tiny_synthetic_task.tokenizer.bos_token_id for p in held)


def test_second_build_loads_the_cache_without_rebuilding(tiny_synthetic_task, tiny_synthetic_config,
                                                         tiny_synthetic_cache, monkeypatch):
    from inner_loop import synthetic_build

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached task was rebuilt")

    weights = next(tiny_synthetic_task.sft_path.glob("*.safetensors"))
    mtime = weights.stat().st_mtime_ns
    monkeypatch.setattr(synthetic_build, "build_into", no_rebuild)
    again = synthetic.build(tiny_synthetic_config, cache_dir=tiny_synthetic_cache, progress=False)
    assert not tiny_synthetic_task.loaded_from_cache and again.loaded_from_cache
    assert again.path == tiny_synthetic_task.path
    assert again.path.name == f"synthetic-{tiny_synthetic_config.config_hash()}"
    assert again.build_info["built_at"] == tiny_synthetic_task.build_info["built_at"]
    assert weights.stat().st_mtime_ns == mtime
    assert list(again.train_pairs["chosen_ids"]) == list(tiny_synthetic_task.train_pairs["chosen_ids"])
    assert not [p for p in tiny_synthetic_cache.iterdir() if ".building-" in p.name]


def test_interrupted_build_leaves_no_cache_directory(tmp_path, monkeypatch):
    from inner_loop import synthetic_build

    def dies_halfway(out, config, progress=True):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic_build, "build_into", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        synthetic.build(SyntheticConfig(data_seed=123), cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_config_hash_is_stable_and_names_every_field():
    a = SyntheticConfig()
    assert a.config_hash() == SyntheticConfig().config_hash() and len(a.config_hash()) == 12
    assert SyntheticConfig(beta=0.2).config_hash() != a.config_hash()
    with pytest.raises(TypeError, match="n_train_pairs"):
        SyntheticConfig.with_overrides(n_trainpairs=3)
    with pytest.raises(ValueError):
        SyntheticConfig(max_completion_len=200)


def test_task_registry_builds_synthetic_with_overrides(tiny_synthetic_task, tiny_synthetic_config,
                                                       tiny_synthetic_cache):
    assert "synthetic" in tasks.TASKS
    overrides = dataclasses.asdict(tiny_synthetic_config)
    task = tasks.get_task("synthetic", cache_dir=tiny_synthetic_cache, progress=False, **overrides)
    assert isinstance(task, tasks.Task) and task.loaded_from_cache and task.path == tiny_synthetic_task.path
    with pytest.raises(KeyError, match="did you mean 'synthetic'"):
        tasks.get_task("synthetc")
    assert json.loads((task.path / "config.json").read_text())["n_train_pairs"] == 300
    assert math.isclose(task.default_beta, 0.1)


def test_task_defaults_need_no_build():
    d = tasks.task_defaults("synthetic", {"beta": 0.3, "max_steps": 2, "memory_mb": 100, "cache_dir": "/nowhere"})
    assert d.beta == 0.3 and d.train == {"learning_rate": 5e-4, "batch_size": 64, "num_epochs": 2.0, "threads": 1}
    assert tasks.task_defaults("synthetic").beta == 0.1
    with pytest.raises(KeyError, match="did you mean 'synthetic'"):
        tasks.task_defaults("synthetc")


def test_data_seed_is_a_task_field_apart_from_the_training_seed(tmp_path):
    """run_candidate(seed=...) is the training seed; data_seed=... goes to the task and builds another one."""
    from inner_loop.runner import run_candidate, split_overrides

    assert split_overrides({"data_seed": 7, "max_steps": 2}) == ({"max_steps": 2}, {"data_seed": 7}, {})
    tiny = dict(corpus_size=400, sft_steps=20, n_train_pairs=32, n_heldout_prompts=16, max_steps=2, batch_size=8)
    a = run_candidate("dpo", seed=0, cache_dir=tmp_path, **tiny)
    b = run_candidate("dpo", seed=0, data_seed=7, cache_dir=tmp_path, **tiny)
    assert a.ok and b.ok, (a.reason, b.reason)
    assert a.config["task_config"]["data_seed"] == 0 and b.config["task_config"]["data_seed"] == 7
    assert b.config["train"]["seed"] == 0
    assert a.metrics["per_prompt"]["prompt_set"] != b.metrics["per_prompt"]["prompt_set"]
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("synthetic-")]) == 2
