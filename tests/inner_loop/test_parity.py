"""Parity: our objectives through ObjectiveDPOTrainer follow TRL's built-in losses step for step.

Same seed, same tiny fp32 GPT-2 without dropout, same tokenised data (TRL's own tokenisation and
reference log-probs, taken from the built-in trainer), same data order: the 10-step loss
trajectories must agree within 1e-5, on both of our log-prob paths. The trained weights agree too:
exactly on the fused path (TRL's own forward), within 5e-5 on the direct path, whose log-softmax
rounds differently in float32; Adam turns a rounding-level difference in a near-zero gradient
(the attention biases) into up to lr-sized steps, so the weights drift a little more than the
losses do (measured: 1.3e-5 at most).
"""

from __future__ import annotations

import pytest
import torch
from trl import DPOTrainer

import objectives
from inner_loop import trainer as T
from test_trainer import text_pairs, tiny_model, tiny_tokenizer

STEPS = 10
PAIRS = [("dpo", "sigmoid"), ("hinge", "hinge"), ("lrml", "discopop"), ("ipo_norm", "ipo")]


def _config(beta: float, logprobs: str = "fused") -> T.TrainConfig:
    return T.TrainConfig(beta=beta, learning_rate=3e-3, max_steps=STEPS, batch_size=4, logging_steps=1,
                         seed=0, precision="fp32", gradient_checkpointing=False, logprobs=logprobs)


def _trl_run(loss_type: str, beta: float, tmp_path):
    model = tiny_model()
    args = T.dpo_config(_config(beta), str(tmp_path / "trl"))
    args.loss_type, args.loss_weights = [loss_type], None
    trainer = DPOTrainer(model=model, args=args, train_dataset=text_pairs(), processing_class=tiny_tokenizer())
    data = trainer.train_dataset  # TRL's tokenisation + TRL's reference log-probs
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return losses, model, data


@pytest.mark.parametrize("logprobs", ["fused", "direct"])
@pytest.mark.parametrize("ours,theirs", PAIRS)
def test_loss_trajectory_matches_trl(ours, theirs, logprobs, tmp_path):
    beta = 0.5 if theirs == "ipo" else 0.1
    trl_losses, trl_model, data = _trl_run(theirs, beta, tmp_path)
    model = tiny_model()
    out = T.train_objective(model, tiny_tokenizer(), data, objectives.load(ours), _config(beta, logprobs))
    assert out.status == "done" and len(out.losses) == len(trl_losses) == STEPS
    diffs = [abs(a - b) for a, b in zip(out.losses, trl_losses)]
    assert max(diffs) < 1e-5, f"{ours} vs TRL {theirs}: {list(zip(out.losses, trl_losses))}"
    assert abs(trl_losses[-1] - trl_losses[0]) > 1e-3  # the trajectory is not flat, so this tests something
    for (name, a), b in zip(model.named_parameters(), trl_model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5 if logprobs == "fused" else 5e-5, rtol=1e-4, msg=name)
