"""Hostile candidates against the inner loop, past the AST screen (hostile/unscreened.py):

* a loss that walks its inputs' autograd graph to the model's parameters and edits them (it reached
  them, and a win rate of 1.000, when the trainer called losses on the policy's own log-probs);
* a job folder whose weights file is a symlink to a root-only file, a FIFO, too big, or finite but
  absurd weights; scoring past its deadline;
* job inputs that carried the gold rewards.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

import objectives
from objectives.candidate import resolve
from hostile.unscreened import screen_off, source
from inner_loop import job_output, runner
from inner_loop import trainer as T
from inner_loop.runner import run_candidate
from inner_loop.tasks import get_task
from test_trainer import quick_config, text_pairs, tiny_model, tiny_tokenizer, token_pairs

TINY_TASK = dict(corpus_size=400, sft_steps=20, n_train_pairs=32, n_heldout_prompts=16, max_steps=2, batch_size=8)
TASK = {k: v for k, v in TINY_TASK.items() if k not in ("max_steps", "batch_size")}
def _train(objective, logprobs="direct", **kw):
    model = tiny_model()
    out = T.train_objective(model, tiny_tokenizer(), token_pairs(model), objective,
                            quick_config(max_steps=3, logprobs=logprobs, **kw))
    return out, model


# -- the loss cannot reach the model ----------------------------------------------------------------

@pytest.mark.parametrize("logprobs", ["direct", "fused"])
def test_a_loss_that_walks_to_the_parameters_finds_none(logprobs):
    with screen_off():
        walker = objectives.load(source("walk_to_params"))
    out, model = _train(walker, logprobs)
    ref_out, ref = _train(objectives.load("dpo"), logprobs)
    assert out.status == ref_out.status == "done", out.reason
    assert out.losses == ref_out.losses
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(a, b), name


def test_a_loss_that_counts_on_a_grad_fn_fails_cleanly():
    with screen_off():
        out, _ = _train(objectives.load(source("expects_grad_fn")))
    assert (out.status, out.step) == ("failed", 1)
    assert out.reason.startswith("the objective raised AttributeError"), out.reason


def test_a_loss_that_edits_the_model_it_holds_fails_with_the_reason():
    """The version guard, for a loss that got hold of the model some other way (a trusted closure here)."""
    model = tiny_model()

    def edit(pc, pr, rc, rr, beta):
        with torch.no_grad():
            model.transformer.wte.weight.add_(1.0)
        return -torch.nn.functional.logsigmoid(beta * ((pc - rc) - (pr - rr)))

    hostile = objectives.base.Objective(name="edit", fn=edit, form="logps", kind="pointwise")
    out = T.train_objective(model, tiny_tokenizer(), token_pairs(tiny_model()), hostile, quick_config())
    assert (out.status, out.step) == ("failed", 1)
    assert out.reason == "the objective modified the model's parameters (transformer.wte.weight) at step 1"


@pytest.mark.parametrize("logprobs", ["direct", "fused"])
def test_gradient_accumulation_still_matches_trl(logprobs, tmp_path):
    """The surrogate loss meets the Trainer's 1/grad_accum scaling as the objective's own graph did."""
    from trl import DPOTrainer
    cfg = T.TrainConfig(beta=0.1, learning_rate=3e-3, max_steps=3, batch_size=2, grad_accum=2,
                        logging_steps=1, seed=0, precision="fp32", gradient_checkpointing=False,
                        logprobs=logprobs)
    trl_model = tiny_model()
    args = T.dpo_config(cfg, str(tmp_path / "trl"))
    args.loss_type, args.loss_weights = ["sigmoid"], None
    trainer = DPOTrainer(model=trl_model, args=args, train_dataset=text_pairs(), processing_class=tiny_tokenizer())
    data = trainer.train_dataset
    trainer.train()
    trl_losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    model = tiny_model()
    out = T.train_objective(model, tiny_tokenizer(), data, objectives.load("dpo"), cfg)
    assert out.status == "done" and len(out.losses) == len(trl_losses) == 3
    assert max(abs(a - b) for a, b in zip(out.losses, trl_losses)) < 1e-5, (out.losses, trl_losses)
    for (name, a), b in zip(model.named_parameters(), trl_model.parameters()):
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-4, msg=name)


# -- through the runner: in this process, and in the sandbox ---------------------------------------

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def dpo_reward(cache):
    return run_candidate("dpo", cache_dir=cache, **TINY_TASK).metrics["reward"]


def _unharmed(r, dpo_reward):
    """Failed with the reason, or trained as DPO (the walk had no effect on the weights scored)."""
    if r.status == "failed":
        assert "modified the model" in r.reason, r.reason
    else:
        assert r.metrics["reward"] == pytest.approx(dpo_reward, abs=1e-6)


def test_walker_in_this_process(cache, dpo_reward):
    with screen_off():
        r = run_candidate(source("walk_to_params"), isolation="none", cache_dir=cache, **TINY_TASK)
    _unharmed(r, dpo_reward)


def test_walker_and_a_crash_in_the_sandbox(cache, dpo_reward, monkeypatch):
    from objectives import shared_dirs
    monkeypatch.setattr(runner, "JOB", "hostile.unscreened:train_job")  # the job, with the screen off
    quotas = []
    real_shared_dir = shared_dirs.shared_dir

    def shared_dir(prefix, writable=False, **kw):  # the job folder's quota, as asked for
        quotas.append((prefix, kw.get("quota_mb")))
        return real_shared_dir(prefix, writable=writable, **kw)

    monkeypatch.setattr(shared_dirs, "shared_dir", shared_dir)
    r = run_candidate(source("walk_to_params"), isolation="sandbox", cache_dir=cache, **TINY_TASK)
    assert r.config["isolation"] == "sandbox"
    _unharmed(r, dpo_reward)
    weights = runner.weights_bytes(runner.job_inputs(get_task("synthetic", cache_dir=cache, **TASK)) / "sft")
    assert 0 < weights < 2**20  # the tiny model's float32 weights
    assert ("disco-job-", runner.JOB_SLACK_MB + 1) in quotas, quotas  # twice the weights, rounded up, + slack
    r = run_candidate(source("expects_grad_fn"), isolation="sandbox", cache_dir=cache, **TINY_TASK)
    assert (r.status, r.step) == ("failed", 1) and "the objective raised AttributeError" in r.reason, r.reason


# -- the parent trusts no path in the job folder ----------------------------------------------------

@pytest.fixture(scope="module")
def task(cache):
    return get_task("synthetic", cache_dir=cache, progress=False, **TASK)


def _save(model, path, scale=1.0):
    from safetensors.torch import save_file
    state = {k: v.detach().clone() * scale for k, v in model.state_dict().items()}
    save_file(job_output.untie(state), str(path))


def test_weights_a_symlink_to_a_root_only_file_are_refused(task, tmp_path):
    secret = tmp_path / "secret"
    _save(task.load_sft(), secret)  # valid weights of the right shapes: loadable, if followed
    secret.chmod(0o600)
    job = tmp_path / "job"
    job.mkdir()
    (job / T.WEIGHTS).symlink_to(secret)
    with pytest.raises(job_output.Rejected, match="symlink"):
        job_output.load_policy(task, job)


def test_weights_a_hard_link_are_refused(task, tmp_path):
    _save(task.load_sft(), tmp_path / "other")
    (tmp_path / "job").mkdir()
    os.link(tmp_path / "other", tmp_path / "job" / T.WEIGHTS)
    with pytest.raises(job_output.Rejected, match="hard link"):
        job_output.load_policy(task, tmp_path / "job")


FIFO_CHILD = """
import sys
from pathlib import Path
from transformers import GPT2Config, GPT2LMHeadModel
from inner_loop import job_output

class Task:
    def load_sft(self):
        return GPT2LMHeadModel(GPT2Config(vocab_size=8, n_positions=8, n_embd=8, n_layer=1, n_head=1))

try:
    job_output.load_policy(Task(), Path(sys.argv[1]))
except job_output.Rejected as err:
    print(err)
"""


def test_weights_a_fifo_are_refused_at_once(tmp_path):
    """In a child process: a load that blocks in open() may hold the GIL, and no thread gets it back."""
    import subprocess
    import sys
    os.mkfifo(tmp_path / T.WEIGHTS)
    try:
        proc = subprocess.run([sys.executable, "-c", FIFO_CHILD, str(tmp_path)], capture_output=True, text=True,
                              timeout=90, cwd=str(runner.REPO), env={**os.environ, "PYTHONPATH": str(runner.REPO)})
    except subprocess.TimeoutExpired:
        pytest.fail("loading a FIFO blocked")
    assert proc.returncode == 0 and "not a regular file" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_oversized_weights_are_refused(task, tmp_path):
    _save(task.load_sft(), tmp_path / T.WEIGHTS)
    with open(tmp_path / T.WEIGHTS, "ab") as f:
        f.truncate(3 * f.tell() + 2**24)  # sparse: refused by its size, never read
    with pytest.raises(job_output.Rejected, match="over the limit"):
        job_output.load_policy(task, tmp_path)


def test_finite_but_absurd_weights_fail_on_the_non_finite_metric(task, tmp_path):
    _save(task.load_sft(), tmp_path / T.WEIGHTS, scale=1e30)
    deadline = job_output.Deadline(120)
    policy = job_output.load_policy(task, tmp_path, deadline)  # finite: loads
    with pytest.raises(job_output.Rejected, match=r"non-finite metrics: .*\bkl=nan"):
        runner._score(policy, task, seed=0, out_dir=None, losses=[], eval_kwargs={},
                      deadline=deadline, trusted=False)


def test_scoring_stops_at_its_deadline(task):
    policy = task.load_sft()
    policy.transformer.h[0].register_forward_pre_hook(lambda *_: time.sleep(0.05))  # ~10 s of scoring
    start = time.monotonic()
    with pytest.raises(job_output.ScoringTimeout, match="timeout"):
        runner._score(policy, task, seed=0, out_dir=None, losses=[], eval_kwargs={},
                      deadline=job_output.Deadline(0.3), trusted=False)
    assert time.monotonic() - start < 2.0


# -- the job's inputs ---------------------------------------------------------------------------------

def test_job_inputs_hold_only_training_columns_and_train(task, tmp_path, monkeypatch):
    from datasets import load_from_disk
    monkeypatch.setattr(runner, "_INPUTS", {})
    inputs = runner.job_inputs(task)
    try:
        columns = load_from_disk(str(inputs / "pairs")).column_names
        assert "chosen_reward" in task.train_pairs.column_names  # there to be left out
        assert not [c for c in columns if any(w in c for w in ("reward", "gold", "score"))], columns
        assert set(columns) <= {*T.TOKEN_COLUMNS, *T.REF_COLUMNS}, columns
        (tmp_path / "out").mkdir()
        result = T.train_job({"objective": resolve("dpo").to_dict(), "inputs": str(inputs), "out": str(tmp_path / "out"),
                              "train": {"max_steps": 2, "batch_size": 8, "beta": 0.1}})
        assert result["status"] == "done" and (tmp_path / "out" / T.WEIGHTS).is_file()
    finally:
        runner._remove_job_inputs()
