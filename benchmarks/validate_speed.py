"""How long validating one candidate takes: through the warm sandbox pool vs a cold sandboxed process.

Both paths do the same work (AST screen here; load + all checks in an isolated child with the same
layers and limits). Warm forks a zygote that has already imported torch; cold starts a fresh
``python -c`` that imports torch first. Prints the medians, the layers, and on its last line
``ratio: N`` with N = cold / warm.

    .venv/bin/python benchmarks/validate_speed.py [--warm-runs 40] [--cold-runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from objectives import sandbox  # noqa: E402
from objectives.validate import validate  # noqa: E402

CANDIDATE = '''
def log_ratio_modulated_loss(self, policy_chosen_logps, policy_rejected_logps,
                             reference_chosen_logps, reference_rejected_logps):
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    logits = logits * self.beta
    gate = torch.sigmoid(logits / 0.05)
    return -F.logsigmoid(logits) * (1 - gate) + torch.exp(-logits) * gate
'''


def timed(cold: bool) -> float:
    start = time.perf_counter()
    report = validate(CANDIDATE, cold=cold)
    seconds = time.perf_counter() - start
    if not report.valid:
        raise SystemExit(f"the benchmark candidate did not validate: {report.reason}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-runs", type=int, default=40, help="validations through the warm pool")
    parser.add_argument("--cold-runs", type=int, default=5, help="validations in a fresh process each")
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"layers: {', '.join(sandbox.layers())}")
    print(f"warm pool start: {time.perf_counter() - start:.2f} s (once per process, not counted)")
    timed(cold=False)  # first fork after start-up
    warm = [timed(cold=False) for _ in range(args.warm_runs)]
    cold = [timed(cold=True) for _ in range(args.cold_runs)]
    w, c = statistics.median(warm), statistics.median(cold)
    print(f"warm sandbox: median {w * 1000:.1f} ms over {len(warm)} runs "
          f"(min {min(warm) * 1000:.1f}, max {max(warm) * 1000:.1f})")
    print(f"cold sandbox: median {c * 1000:.1f} ms over {len(cold)} runs "
          f"(min {min(cold) * 1000:.1f}, max {max(cold) * 1000:.1f})")
    print(f"ratio: {c / w:.1f}")


if __name__ == "__main__":
    main()
