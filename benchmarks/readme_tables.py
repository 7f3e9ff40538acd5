"""The README's result table for the embedded task, regenerated from the campaign's fitness.

Trains DPO, IPO, LRML and a sign-flipped DPO (a loss that should do worse than doing nothing) on
the default campaign's seeds and settings, and prints the Markdown table of the README section
"What the embedded task measures": per objective, the campaign's fitness metric (mean over seeds ±
its standard error over seeds), the paired-bootstrap 95% interval of its difference to the SFT
model, and the paired interval of its difference to DPO. Same machinery as ``disco compare``.

    .venv/bin/python benchmarks/readme_tables.py [--seeds 0 1 2 3 4] [--metric reward_gain] [--task keypoints]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discovery.config import CampaignConfig  # noqa: E402
from evaluation.compare import Setting, against_null, difference, run_grid  # noqa: E402
from evaluation.stats import mean_se  # noqa: E402
from inner_loop.synthetic import quiet_libraries  # noqa: E402

FLIPPED = '''def flipped_dpo(rho, beta):
    """DPO with its sign flipped: it pushes the rejected completion up."""
    return -F.logsigmoid(-beta * rho)
'''


def main(argv=None) -> int:
    default = CampaignConfig().resolved()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(default.training.seeds))
    p.add_argument("--metric", default=default.fitness.metric)
    p.add_argument("--task", default=default.training.task, help="the embedded task (default synthetic)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        flipped = Path(tmp) / "flipped_dpo.py"
        flipped.write_text(FLIPPED)
        objectives = {"dpo": "dpo", "ipo": "ipo", "lrml": "lrml", "flipped_dpo": flipped.read_text()}
        settings = [Setting(seed=s, task=args.task) for s in args.seeds]
        with quiet_libraries():
            runs = run_grid(objectives, settings, log=lambda line: print(line, file=sys.stderr))
    by = {label: [r for r in runs if r.objective == label] for label in objectives}
    m = args.metric
    task = f" --task {args.task}" if args.task != default.training.task else ""
    print(f"Produced by `.venv/bin/python benchmarks/readme_tables.py{task}` ({len(args.seeds)} seeds: "
          f"{' '.join(map(str, args.seeds))}; metric {m}; {time.perf_counter() - start:.0f} s):\n")
    print(f"| objective | {m}: mean ± se over {len(args.seeds)} seeds | 95% CI of the difference to SFT "
          f"| 95% CI of the difference to DPO |")
    print("|---|---|---|---|")
    for label, rs in by.items():
        values = [r.value(m) for r in rs if r.value(m) is not None]
        if not values:
            print(f"| {label} | failed: {rs[0].reason if rs else '?'} | | |")
            continue
        mean, se = mean_se(values)
        null = against_null(rs, m)
        diff = difference(rs, by["dpo"], m) if label != "dpo" else None
        ci = (lambda e: "(reference)" if e is None else (e if isinstance(e, str) else
                                                          f"{e.mean:+.4f} [{e.lo:+.4f}, {e.hi:+.4f}]"))
        print(f"| {label} | {mean:.4f} ± {se:.4f} | {ci(null) if null else 'n/a'} | {ci(diff)} |")
    print("\nIntervals: paired bootstrap over seeds, then held-out prompts (10,000 replicates), not "
          "corrected for the three comparisons with DPO.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
