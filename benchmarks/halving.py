"""Successive halving on the embedded task: discovery per CPU-second with and without screening.

Replays a campaign in which every row trained on every seed (``disco run ... --set
training.screen_seeds=0``), as campaigns with other ``training.screen_seeds`` would have run it:

* a candidate is screened on the first k seeds of a seed order, and promoted to all seeds only when
  its paired difference to DPO there is not clearly negative (the campaign's own rule,
  :func:`discovery.noise.paired_to` / :func:`discovery.noise.clearly_negative`, with the campaign's
  noise record); a screened-out row keeps its k-seed fitness and cannot be called best;
* cost = the training runs it needs (baselines always train on every seed) x the archive's mean
  seconds per run;
* discovery = the *true* gain of the candidate it calls best: that candidate's mean metric over all
  the archive's seeds (every strategy is judged on the same full data, whatever it saw).

Every order of the archive's seeds is one replay (5 seeds: 120 orders); the table gives means over
them. The last line is ``ratio: N`` with N = (discovery per CPU-second with screening on k seeds) /
(the same without screening), for ``--k`` (default 1).

    .venv/bin/disco run --out runs/halving --candidates 8 --set 'training.seeds=[0,1,2,3,4]' \\
        --set training.screen_seeds=0
    .venv/bin/python benchmarks/halving.py runs/halving [--k 1]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discovery.archive import Archive  # noqa: E402
from discovery.config import CampaignConfig  # noqa: E402
from discovery.noise import clearly_negative, paired_to, per_seed_values  # noqa: E402


def restrict(row: dict, seeds) -> dict:
    """``row`` as if it had trained on ``seeds`` only."""
    keep = set(seeds)
    per_seed = [p for p in (row.get("metrics") or {}).get("per_seed", []) if p.get("seed") in keep]
    return {**row, "metrics": {**(row.get("metrics") or {}), "per_seed": per_seed}}


def replay(candidates: list[dict], dpo: dict, order: tuple, k: int, metric: str, noise: dict | None
           ) -> tuple[int, dict]:
    """(training runs of the candidates, the row called best) for screening on ``order[:k]``."""
    runs, board = 0, []
    for row in candidates:
        seeds = order if k == 0 else order[:k]
        if k:
            diff = paired_to(restrict(row, seeds), restrict(dpo, seeds), metric, noise)
            if not clearly_negative(diff):
                seeds = order
        runs += len(seeds)
        if len(seeds) == len(order) or k == 0:  # screened-out rows are never called best
            values = per_seed_values(restrict(row, seeds), metric)
            board.append((statistics.fmean(values.values()), row))
    best = max(board, key=lambda t: t[0])[1] if board else None
    return runs, best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("campaign", help="a finished campaign folder where every row trained on every seed")
    p.add_argument("--k", type=int, default=1, help="screening seeds of the variant compared (default 1)")
    args = p.parse_args(argv)
    archive = Archive.open(args.campaign)
    try:
        config = CampaignConfig.from_dict(archive.config)
        metric, noise = config.fitness.metric, archive.meta("noise")
        rows = [r for r in archive.rows() if r["status"] == "done"]
    finally:
        archive.close()
    seeds = tuple(config.training.seeds)
    dpo = next(r for r in rows if r["kind"] == "baseline" and r["name"] == "dpo")
    baselines = [r for r in rows if r["kind"] == "baseline"]
    candidates = [r for r in rows if r["kind"] == "candidate"
                  and set(per_seed_values(r, metric)) >= set(seeds)]
    if len(seeds) < 2 or len(candidates) < 2:
        raise SystemExit("need a campaign whose candidates all trained on >= 2 seeds (screen_seeds=0)")
    seconds = statistics.fmean(p_["seconds"]["total"] for r in rows for p_ in r["metrics"]["per_seed"]
                               if isinstance(p_.get("seconds"), dict) and p_["seconds"].get("total"))
    truth = {r["id"]: statistics.fmean(per_seed_values(r, metric).values()) for r in candidates}
    dpo_truth = statistics.fmean(per_seed_values(dpo, metric).values())
    print(f"campaign {args.campaign}: {len(candidates)} candidates, seeds {list(seeds)}, metric {metric}, "
          f"{seconds:.1f} s per training run (mean); DPO's mean {dpo_truth:+.4f}")
    print(f"true best candidate: {max(truth.values()):+.4f}; noise record: {(noise or {}).get('source', 'none')}")
    print(f"{'screen k':>8} {'runs/campaign':>14} {'CPU-s':>8} {'true value of best':>18} "
          f"{'found true best':>16} {'value per 1000 CPU-s':>21}")
    per_cpu = {}
    for k in sorted({0, args.k, *range(1, len(seeds))}):
        results = [replay(candidates, dpo, order, k, metric, noise) for order in itertools.permutations(seeds)]
        base_runs = len(baselines) * len(seeds)
        cost = statistics.fmean((runs + base_runs) * seconds for runs, _ in results)
        value = statistics.fmean(truth[best["id"]] for _, best in results if best)
        hit = statistics.fmean(truth[best["id"]] == max(truth.values()) for _, best in results if best)
        per_cpu[k] = 1000 * value / cost
        print(f"{k:>8} {statistics.fmean(r for r, _ in results) + base_runs:>14.1f} {cost:>8.0f} "
              f"{value:>+18.4f} {hit:>16.0%} {per_cpu[k]:>+21.4f}")
    print(f"value = the chosen best's {metric} averaged over all {len(seeds)} seeds (> 0: better than SFT); "
          f"means over {len(results)} seed orders; k = 0 is no screening")
    print(f"ratio: {per_cpu[args.k] / per_cpu[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
