"""Campaign throughput: the same embedded-task campaign through the ``local`` executor with 1 worker
and through the ``ray`` executor with 2 workers, in candidates per hour.

The campaign: the synthetic task, the DPO baseline, ``--candidates`` fixed proposals (default 8; the
same code in the same order in both runs, so both do the same work), ``--seeds`` (default 0 1), real
validation, fingerprinting and training (no inspection plots). ``local`` with one worker trains in the campaign's
own process, one seed after another; ``ray`` starts a Ray instance on this machine with ``--cpus``
CPUs (default 2) before the clock starts and trains each candidate-seed as a Ray task of one CPU,
``--cpus`` rows in flight. Wall time is the whole campaign, baseline included; candidates per hour
= candidates / wall time. The machine's 1-minute load average before and after each campaign is
printed: the ratio means something only when nothing else competes for the CPUs. The last line is
``ratio: N``: ray's candidates per hour over local's.

Measured on a quiet 2-core machine: 8 candidates, 18 training runs: local 179 s, ray 105 s (+ 3 s to
start Ray), ``ratio: 1.71``; with 4 candidates (10 runs) 107 s against 66 s, ``ratio: 1.62``. Each
Ray worker pays the start-up a single local process pays once (torch and the task imported, the first
training run, the sandbox's zygote), so the DPO row, all start-up, gains 1.4x and the candidates
after it about 1.8x; a seed also runs about 7% slower in a one-thread Ray worker than in the local
process.

    .venv/bin/python benchmarks/campaign_throughput.py [--candidates 8] [--seeds 0 1] [--max-steps N]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discovery.archive import Archive  # noqa: E402
from discovery.campaign import run_campaign  # noqa: E402
from discovery.config import CampaignConfig  # noqa: E402
from discovery.proposal import Proposal  # noqa: E402

# distinct losses of z = beta * rho, none a rescaling of DPO's (so none is a duplicate)
LOSSES = [
    ("smooth_hinge", "torch.nn.functional.softplus(1.0 - z)"),
    ("dpo_plus_square", "-F.logsigmoid(z) + 0.05 * z ** 2"),
    ("exponential", "torch.exp(-z)"),
    ("savage", "torch.sigmoid(-z) ** 2"),
    ("dpo_squared", "(-F.logsigmoid(z)) ** 2"),
    ("logistic_margin", "-F.logsigmoid(z - 0.5)"),
    ("cubic_guard", "-F.logsigmoid(z) + 0.01 * torch.abs(z) ** 3"),
    ("tanh_pull", "1.0 - torch.tanh(z)"),
]


class FixedProposer:
    """Proposes ``LOSSES`` in order, whatever the context (both runs get the same candidates)."""

    name = "fixed"

    def propose(self, context) -> Proposal:
        name, expr = LOSSES[context.n_proposed % len(LOSSES)]
        code = (f"def {name}(rho, beta):\n    \"\"\"loss = {expr}, with z = beta * rho.\"\"\"\n"
                f"    z = beta * rho\n    return {expr}\n")
        return Proposal(thought=f"a fixed proposal: {expr}", name=name, code=code, proposer="fixed")


def config_for(args, executor: str, workers: int) -> CampaignConfig:
    overrides = {"max_steps": args.max_steps} if args.max_steps else {}
    return CampaignConfig.from_dict({
        "candidates": args.candidates, "baselines": ["dpo"],
        "training": {"task": "synthetic", "seeds": list(args.seeds), "overrides": overrides},
        "execution": {"workers": workers, "inspect": False, "executor": executor},
        "prompt": {"lessons_every": 0}})


def campaign(args, out: Path, executor: str, workers: int, make=None) -> dict:
    config = config_for(args, executor, workers)
    load = os.getloadavg()[0]
    t = time.perf_counter()
    run_campaign(out, config, proposer=FixedProposer(), executor=make(config) if make else None, progress=False)
    wall = time.perf_counter() - t
    with Archive.open(out) as a:
        rows = a.rows()
    candidates = [r for r in rows if r["kind"] == "candidate"]
    runs = sum(len((r["metrics"] or {}).get("per_seed") or []) for r in rows)
    statuses = sorted(f"{r['name']}={r['status']}" for r in candidates)
    return {"wall": wall, "candidates": len(candidates), "runs": runs, "statuses": statuses,
            "per_hour": 3600.0 * len(candidates) / wall, "load": (load, os.getloadavg()[0])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=8, help="fixed proposals per campaign (default 8)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default 0 1)")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the Ray instance = ray's workers (default 2)")
    p.add_argument("--max-steps", type=int, default=None, help="training.overrides.max_steps (default: the task's)")
    p.add_argument("--out", default=None, help="folder for the two campaigns (default: a temporary one)")
    args = p.parse_args(argv)
    logging.getLogger("discovery").setLevel(logging.WARNING)
    root = Path(args.out or tempfile.mkdtemp(prefix="campaign-throughput-"))
    root.mkdir(parents=True, exist_ok=True)

    local = campaign(args, root / "local", "local", 1)
    print(f"local, 1 worker:   {local['candidates']} candidates, {local['runs']} training runs, "
          f"{local['wall']:.1f} s, {local['per_hour']:.0f} candidates/hour; load {local['load'][0]:.1f} -> "
          f"{local['load'][1]:.1f}", flush=True)

    import ray

    from discovery.ray_executor import RayExecutor
    t = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    start = time.perf_counter() - t
    try:
        remote = campaign(args, root / "ray", "ray", args.cpus,
                          make=lambda config: RayExecutor.for_config(config))
    finally:
        ray.shutdown()
    print(f"ray, {args.cpus} workers:     {remote['candidates']} candidates, {remote['runs']} training runs, "
          f"{remote['wall']:.1f} s (+ {start:.1f} s to start Ray), {remote['per_hour']:.0f} candidates/hour; "
          f"load {remote['load'][0]:.1f} -> {remote['load'][1]:.1f}")
    same = local["statuses"] == remote["statuses"] and local["runs"] == remote["runs"]
    print(f"same work in both: {'yes' if same else 'NO'} ({', '.join(local['statuses'])})")
    if not same:
        print(f"  ray: {', '.join(remote['statuses'])}")
    print(f"campaigns in {root}")
    print(f"ratio: {remote['per_hour'] / local['per_hour']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
