"""The margins training visits (issue 12): recorded per optimizer step, plausible, rebuilt from
numbers alone when a job reports them, and recording them changes nothing in training. (That they
reach TrainResult and result.json through an isolated job: tests/discovery/test_pilot.py.)"""

from __future__ import annotations

import json

import pytest
import torch

import objectives
from inner_loop import trainer as T
from inner_loop.train_config import POOLED_LEVELS, STEP_LEVELS, clean_margins, margins_record
from test_trainer import quick_config, tiny_model, tiny_tokenizer, token_pairs


def _train(name="dpo", **kw):
    model = tiny_model()
    out = T.train_objective(model, tiny_tokenizer(), token_pairs(model), objectives.load(name), quick_config(**kw))
    assert out.status == "done", out.reason
    return out, model


@pytest.mark.parametrize("logprobs", ["direct", "fused"])
def test_margins_start_at_zero_then_spread_and_bracket_trls_mean_margin(logprobs):
    out, _ = _train(logprobs=logprobs, max_steps=4)
    m = out.margins
    assert m["step_levels"] == list(STEP_LEVELS) and m["pooled_levels"] == list(POOLED_LEVELS)
    assert m["step"] == list(range(1, out.steps + 1)) and len(m["per_step"]) == out.steps == 4
    # step 1: the policy is the reference its log-probs were computed with, so every rho is 0
    assert m["per_step"][0] == pytest.approx([0.0] * 5, abs=1e-4)
    for row in m["per_step"]:
        assert row == sorted(row)  # min <= p05 <= p50 <= p95 <= max
    last = m["per_step"][-1]
    assert last[-1] - last[0] > 0.5  # training moved the margins apart
    assert m["n"] == 4 * 4 and len(m["pooled"]) == len(POOLED_LEVELS)
    assert m["pooled"][0] == min(r[0] for r in m["per_step"]) and m["pooled"][-1] == max(r[-1] for r in m["per_step"])
    # TRL's (or our direct path's) logged reward margin is beta * the mean rho of the same step
    logged = [h["rewards/margins"] for h in out.log_history if "rewards/margins" in h]
    assert len(logged) == out.steps
    for (lo, *_, hi), mean in zip(m["per_step"], logged):
        assert 0.1 * lo - 1e-5 <= mean <= 0.1 * hi + 1e-5


def test_recording_changes_nothing_in_training(monkeypatch):
    """Same losses and same weights, bit for bit, with the recording turned off."""
    with_margins, model_a = _train(max_steps=3)
    monkeypatch.setattr(T.ObjectiveDPOTrainer, "record_margins", False)
    without, model_b = _train(max_steps=3)
    assert without.margins["per_step"] == [] and without.margins["pooled"] is None
    assert with_margins.losses == without.losses
    for (name, a), b in zip(model_a.named_parameters(), model_b.parameters()):
        assert torch.equal(a, b), name


def test_a_length_normalised_objective_records_the_summed_margin():
    """ipo_norm's loss sees per-token means; the record is the summed rho, comparable across losses."""
    out, _ = _train("ipo_norm", max_steps=2)
    assert out.margins["per_step"][0] == pytest.approx([0.0] * 5, abs=1e-4)
    assert out.margins["quantity"].startswith("rho = (pc - rc) - (pr - rr), summed")


def test_clean_margins_keeps_numbers_and_refuses_anything_else():
    good = margins_record([[-1.0, -0.5, 0.0, 0.5, 1.0], [-2, -1, 0, 1, 2]], list(range(11)), 8)
    assert clean_margins(json.loads(json.dumps(good))) == good
    # what a job said beyond the numbers is not kept: the record is rebuilt
    assert clean_margins({**good, "quantity": "forged", "extra": 1})["quantity"] == good["quantity"]
    for bad in (None, "x", [], {"per_step": "x"}, {**good, "per_step": [[1, 2, 3]]},
                {**good, "per_step": [[1, 2, 3, 4, "5"]]}, {**good, "per_step": [[1, 2, 3, 4, True]]},
                {**good, "pooled": [1.0]}, {**good, "n": -1}, {**good, "n": True}, {**good, "n": 1.5}):
        assert clean_margins(bad) is None, bad
    assert clean_margins({**good, "pooled": None})["pooled"] is None
