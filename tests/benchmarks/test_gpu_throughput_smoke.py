"""benchmarks/gpu_throughput.py is meant for a GPU machine; ``--tiny`` runs its whole code path on
CPU (both trainers, the clock, the report), so a change that breaks the script shows up here and not
first on a rented GPU. The numbers are not checked: on a tiny model on CPU they mean nothing."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_tiny_run_reports_both_variants_and_ends_with_the_ratio():
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_throughput.py"), "--tiny", "--steps", "2"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    for label in ("(a) TRL DPOTrainer, live reference", "(b) ours, ObjectiveDPOTrainer", "(c) ours, the largest batch"):
        row = next((line for line in lines if line.startswith(label)), None)
        assert row is not None, proc.stdout
        assert re.search(r"steps +2 +tokens/s +[\d.]+ +MFU", row), row  # measured, not FAILED
        assert re.search(r"\[batch \d+, .*checkpointing=(True|False)\]", row), row  # the settings it chose
    assert re.fullmatch(r"ratio: \d+\.\d+", lines[-1]), lines[-1]
