"""``disco train`` through a real subprocess: JSON on stdout, progress on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = ["corpus_size=400", "sft_steps=20", "n_train_pairs=32", "n_heldout_prompts=16", "max_steps=3", "batch_size=8"]


def test_disco_train_json(tmp_path):
    sets = [x for item in TINY + [f"cache_dir={tmp_path / 'cache'}"] for x in ("--set", item)]
    cmd = [sys.executable, "-m", "discovery.cli", "train", "--objective", "lrml", "--task", "synthetic",
           "--beta", "0.1", "--seed", "1", "--json", *sets]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)  # stdout holds exactly one JSON object
    assert result["status"] == "done" and result["steps"] == 3 and len(result["losses"]) == 3
    assert {"reward", "reward_se", "kl", "win_rate"} <= set(result["metrics"])
    assert result["config"]["train"]["beta"] == 0.1 and result["config"]["train"]["seed"] == 1
    assert result["config"]["isolation"] == "none"
    assert "it/s" in proc.stderr or "s/it" in proc.stderr  # the tqdm progress bar
    assert "train_runtime" not in proc.stderr  # Trainer's log dicts stay in the result, not the terminal


def test_disco_train_failure_exits_nonzero(tmp_path):
    nan = tmp_path / "nan_loss.py"
    nan.write_text("def nan_loss(rho, beta):\n    return rho * math.nan\n")
    sets = [x for item in TINY + [f"cache_dir={tmp_path / 'cache'}"] for x in ("--set", item)]
    proc = subprocess.run([sys.executable, "-m", "discovery.cli", "train", "--objective", str(nan), "--json",
                           "--quiet", "--isolation", "process", *sets], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert result["status"] == "failed" and result["reason"] == "non-finite loss (nan) at step 1"


def test_user_errors_are_one_line_exit_2_no_traceback():
    # was a 19-line traceback ending in UnknownNameError, exit 1
    proc = subprocess.run([sys.executable, "-m", "discovery.cli", "train", "--task", "nosuchtask"], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("disco: error: unknown task 'nosuchtask' (known: ") and "synthetic" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "discovery.cli", "train", "--beta", "-1"], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert (proc.returncode, proc.stderr) == (2, "disco: error: --beta must be a number > 0, not -1.0\n")


def test_train_out_keeps_the_policy_the_loss_curve_and_the_sandboxed_jobs_log(tmp_path):
    from safetensors.torch import load_file
    loss = tmp_path / "shifted_dpo.py"
    loss.write_text("def shifted_dpo(rho, beta):\n"
                    "    print('a line from inside the job')\n"
                    "    return -F.logsigmoid(beta * rho - 0.1)\n")
    sets = [x for item in TINY + [f"cache_dir={tmp_path / 'cache'}"] for x in ("--set", item)]
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "discovery.cli", "train", "--objective", str(loss), "--json",
                           "--quiet", "--isolation", "sandbox", "--out", str(out), *sets], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    weights = load_file(str(out / "policy.safetensors"))  # the scored policy, loadable
    assert weights and all(v.isfinite().all() for v in weights.values())
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (out / "train.log").read_text()
    assert "the training job's output" in log and "a line from inside the job" in log
    assert log.rstrip().splitlines()[-1].startswith("run done (3 steps, loss ")  # the parent's summary line
