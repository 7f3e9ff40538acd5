"""A recipe trained as one multi-process job (inner_loop.distributed) on the CPU: 2 torchrun ranks over
gloo train a tiny Gemma to the same weights, losses and margins as one process with the same global
batch; a bad split, a failing rank and a deadline end cleanly. The GPU launcher (accelerate with the
recipe's DeepSpeed ZeRO-3 config) is checked as a command and a plan only: no GPU here."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from inner_loop import distributed
from inner_loop.recipes import run_recipe
from tests.inner_loop.test_recipes import _rows, make_tiny_gemma

# 8 pairs, global batch 4: two full steps an epoch, so one process and two ranks see the same pairs
# (module docstring of inner_loop.distributed); step 3 opens epoch 2 with a new permutation
TRAIN = dict(precision="fp32", gradient_checkpointing=False, max_steps=3, learning_rate=1e-3, grad_accum=1,
             batch_size=4)

# NaN for a pair whose chosen reply is short (rc > -13: "hola", 2 tokens; the others have 5 or more, near
# -4 nats each under the untrained model): only the rank that draws that pair fails
NAN_ON_ONE_PAIR = '''
def nan_on_one_pair(pc, pr, rc, rr, beta):
    loss = -torch.nn.functional.logsigmoid(beta * ((pc - rc) - (pr - rr)))
    return loss + torch.where(rc > -13.0, float("nan"), 0.0)  # no NaN in the other pairs' gradients
'''


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    model_dir, _ = make_tiny_gemma(root)
    rows = _rows() + _rows()[:3]
    data = root / "pairs8.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model_dir, data


def _weights(folder) -> dict:
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).state_dict()


def _ranks_alive(marker: str) -> list[int]:
    """Pids of live processes whose command line holds ``marker`` (a job's output folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = next(ln for ln in (proc / "status").read_text().splitlines() if ln.startswith("State:"))
            except (OSError, StopIteration):
                continue
            if marker in cmd and "zombie" not in state:
                found.append(int(proc.name))
    return found


def test_two_ranks_train_the_weights_one_process_trains(tiny, tmp_path):
    model_dir, data = tiny
    one = run_recipe("zephyr-gemma", model=str(model_dir), dataset=str(data), objective="lrml", seed=0,
                     out_dir=str(tmp_path / "one"), **TRAIN)
    assert one.ok, one.reason
    two = distributed.run_distributed("lrml", task="recipe:zephyr-gemma", seed=0, out_dir=str(tmp_path / "two"),
                                      timeout=180, nproc=2, model=str(model_dir), dataset=str(data), **TRAIN)
    assert two.ok, two.reason
    plan = two.config["distributed"]
    assert (plan["launcher"], plan["device"], plan["batch_size"], plan["per_device_batch"]) == ("torchrun", "cpu", 4, 2)
    assert two.config["train"]["batch_size"] == 2 and two.config["isolation"] == "process"
    assert two.steps == one.steps == 3
    # the loss log and margins are the global batch's, not rank 0's half
    assert two.losses == pytest.approx(one.losses, abs=1e-5)
    assert two.margins["n"] == one.margins["n"] == 12
    assert torch.allclose(torch.tensor(two.margins["per_step"]), torch.tensor(one.margins["per_step"]), atol=1e-4)
    assert two.metrics["model_dir"] == str((tmp_path / "two").resolve())
    assert json.loads((tmp_path / "two" / "result.json").read_text())["status"] == "done"
    assert not list((tmp_path / "two").glob("rank-*.json"))

    start, w1, w2 = _weights(model_dir), _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert w1.keys() == w2.keys()
    moved = max(float((w1[k] - start[k]).abs().max()) for k in w1)
    assert moved > 1e-4, "training did not move the weights: the comparison would prove nothing"
    apart = {k: float((w1[k] - w2[k]).abs().max()) for k in w1 if not torch.allclose(w1[k], w2[k], atol=1e-5, rtol=1e-4)}
    assert not apart, f"parameters differ between one process and two ranks: {apart}"


def test_a_batch_that_does_not_split_evenly_is_refused_before_anything_starts(tiny, tmp_path, capsys):
    model_dir, data = tiny
    out = tmp_path / "never"
    with pytest.raises(ValueError) as err:
        distributed.run_distributed("lrml", task="recipe:zephyr-gemma", out_dir=str(out), nproc=3,
                                    model=str(model_dir), dataset=str(data), **TRAIN)
    message = str(err.value)
    assert "batch_size 4" in message and "not a multiple of nproc 3" in message and "\n" not in message
    assert not out.exists()
    for bad, match in ((dict(task="synthetic", nproc=2), "recipe task"), (dict(nproc=0), "nproc must be"),
                       (dict(nproc=2, isolation="sandbox"), "cannot use the sandbox"),
                       (dict(nproc=2, launcher="mpirun"), "launcher must be"),
                       (dict(nproc=2, objective="lrmll"), "did you mean 'lrml'"),
                       (dict(nproc=2, eval_kwargs={}), "does not take eval_kwargs")):
        kwargs = {"objective": "lrml", "task": "recipe:zephyr-gemma", **bad}
        with pytest.raises(ValueError, match=match):
            distributed.run_distributed(out_dir=str(out), model=str(model_dir), dataset=str(data), **{**TRAIN, **kwargs})
    assert not out.exists()
    # the command line says the same in one line, and exits 2
    assert distributed.main(["--nproc", "3", "--recipe", "zephyr-gemma", "--out", str(out), "--set", "batch_size=4",
                             "--set", f"model={model_dir}", "--set", f"dataset={data}"]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "not a multiple of nproc 3" in err_lines[0]
    assert not out.exists()


def test_a_failing_rank_ends_the_job_with_its_reason(tiny, tmp_path):
    model_dir, data = tiny
    out = tmp_path / "fails"
    started = time.monotonic()
    result = distributed.run_distributed(NAN_ON_ONE_PAIR, task="recipe:zephyr-gemma", seed=0, out_dir=str(out),
                                         timeout=120, kind="logratio", nproc=2, model=str(model_dir),
                                         dataset=str(data), **TRAIN)
    assert not result.ok
    assert "non-finite" in result.reason, result.reason  # the failed rank's own reason, whichever rank it was
    assert time.monotonic() - started < 100, "the other rank hung in a collective until the deadline"
    assert (out / "objective.py").read_text().strip() == NAN_ON_ONE_PAIR.strip()
    assert result.config["objective"] == "<source>"
    assert not _ranks_alive(str(out))


def test_a_job_past_its_deadline_is_killed_with_every_rank(tiny, tmp_path):
    import threading
    model_dir, data = tiny
    out = tmp_path / "slow"
    done, seen = [], set()
    job = threading.Thread(target=lambda: done.append(distributed.run_distributed(
        "lrml", task="recipe:zephyr-gemma", out_dir=str(out), timeout=7, nproc=2, model=str(model_dir),
        dataset=str(data), **{**TRAIN, "max_steps": 100_000})))  # far more than 7 s of training
    job.start()
    while job.is_alive():
        seen.update(_ranks_alive(str(out)))
        time.sleep(0.2)
    assert len(seen) >= 3, "the launcher and its two ranks never ran: nothing was tested"
    result = done[0]
    assert not result.ok and result.reason.startswith("timeout: distributed job killed after 7 s")
    deadline = time.monotonic() + 10
    while _ranks_alive(str(out)) and time.monotonic() < deadline:
        time.sleep(0.2)  # the ranks get SIGKILL as their launcher dies
    assert not _ranks_alive(str(out)), "ranks outlived their launcher"


def test_gpu_plan_and_command_use_the_recipes_accelerate_config(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(distributed, "_has_deepspeed", lambda: True)
    chosen = distributed.plan(8, "recipe:zephyr-gemma", {"batch_size": 16})
    config = Path(chosen["config_file"])
    assert config.name == "accelerate_deepspeed_zero3_8gpu.yaml" and config.is_file()
    assert (chosen["launcher"], chosen["per_device_batch"], chosen["mixed_precision"]) == ("accelerate", 2, "bf16")
    assert distributed._sharded(config) == "DeepSpeed ZeRO-3"
    cmd = distributed.launch_command(8, ["--recipe", "zephyr-gemma"], launcher="accelerate", config_file=str(config),
                                     mixed_precision="bf16", port=29999)
    assert cmd[1:] == ["-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "8",
                       "--num_machines", "1", "--main_process_port", "29999", "--mixed_precision", "bf16",
                       "-m", "inner_loop.recipes", "--recipe", "zephyr-gemma"]
    assert distributed.plan(2, "recipe:zephyr-gemma", {"batch_size": 4}, launcher="torchrun")["launcher"] == "torchrun"
    with pytest.raises(ValueError, match="more than the 8 visible GPU"):
        distributed.plan(16, "recipe:zephyr-gemma", {"batch_size": 16})
    with pytest.raises(ValueError, match="scores by running the policy on rank 0"):
        distributed.plan(8, "recipe:tldr", {"batch_size": 16})  # tldr generates: not after ZeRO-3
    monkeypatch.setattr(distributed, "_has_deepspeed", lambda: False)
    with pytest.raises(ValueError, match="DeepSpeed, which is not installed"):
        distributed.plan(8, "recipe:zephyr-gemma", {"batch_size": 16})


def test_cpu_command_is_standalone_torchrun():
    cmd = distributed.launch_command(2, ["--recipe", "zephyr-gemma", "--set", "batch_size=2"])
    assert cmd[1:9] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--max_restarts", "0",
                        "-m"]
    assert cmd[9:] == ["inner_loop.recipes", "--recipe", "zephyr-gemma", "--set", "batch_size=2"]
    args = distributed.recipe_args("zephyr-gemma", objective="lrml", out_dir="/o", seed=3,
                                   lr_scheduler="cosine", max_length=None, learning_rate=1e-3)
    assert args == ["--recipe", "zephyr-gemma", "--objective", "lrml", "--out", "/o", "--seed", "3",
                    "--set", 'lr_scheduler="cosine"', "--set", "max_length=null", "--set", "learning_rate=0.001"]
    from inner_loop.overrides import parse_sets
    assert parse_sets([args[i + 1] for i, a in enumerate(args) if a == "--set"]) == {
        "lr_scheduler": "cosine", "max_length": None, "learning_rate": 1e-3}


def test_the_recipe_saves_the_gathered_weights_a_sharded_run_leaves_on_rank_0(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from inner_loop import recipe_task, trainer
    model_dir, data = tiny
    assert trainer.FULL_STATE_ATTR == "disco_full_state_dict"  # recipe_base names it literally
    task = recipe_task.build("zephyr-gemma", model=str(model_dir), dataset=str(data))
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    whole = {k: v.clone() + 1.0 for k, v in policy.state_dict().items()}  # what the gather returned
    setattr(policy, trainer.FULL_STATE_ATTR, whole)
    task.score(policy, seed=0, out_dir=str(tmp_path), losses=[1.0])
    saved = _weights(tmp_path / "model")
    assert all(torch.equal(saved[k], whole[k]) for k in saved)


@pytest.mark.skipif(os.environ.get("WORLD_SIZE", "1") != "1", reason="run outside any launcher")
def test_a_single_process_is_rank_0():
    from inner_loop import recipes, runner
    assert recipes.launched_rank() == (0, 1) and runner._rank() == 0


def test_a_crashed_jobs_reason_is_the_root_cause_ranks_error(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("\n".join([
        "[rank1]: Traceback (most recent call last):",
        "[rank1]: KeyError: 'chosen'",
        "[rank0]: Traceback (most recent call last):",
        "[rank0]: RuntimeError: Connection closed by peer [127.0.0.1]:2696.",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "Root Cause (first observed failure):", "[0]:", "  rank      : 1 (local_rank: 1)", "  exitcode  : 1",
        "============================================================"]))
    assert distributed._reason_from_log(log, 1) == "distributed job exited with code 1: KeyError: 'chosen'"
    log.write_text("something went wrong\n=====\n")
    assert distributed._reason_from_log(log, 2) == "distributed job exited with code 2: something went wrong"
