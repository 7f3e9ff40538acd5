"""Search quality on the embedded task: island selection against random sampling from the grammar.

Two arms of the offline proposer (:class:`discovery.evolve.EvolveProposer`), the same small budget:

* ``islands``: ``proposer.selection=islands`` (:mod:`discovery.selection`: per-island tournaments,
  inspirations of a different behaviour, migration) with evolve's five operators;
* ``random``: ``proposer.selection=random``: every proposal is a tree sampled from the same grammar,
  no parent.

Each arm runs ``--campaigns`` campaigns (proposer seeds 0, 1, ...) with
:func:`discovery.campaign.run_campaign` on the synthetic task: ``--candidates`` candidates, search
seeds ``--seeds`` (successive halving on the first), DPO as the only baseline, and small training
settings (:data:`OVERRIDES`: one epoch, 8 samples per evaluation prompt) so that the whole benchmark
runs in minutes on two cores. Each campaign's best candidate (the campaign's own ``best``: the
highest fitness not screened out) and DPO are then trained on held-out seeds ``--heldout-seeds``
(never used by a search; DPO's held-out runs are shared by every campaign) with the same settings.

Per campaign: the best's paired difference to DPO in the search (``reward_gain``, the campaign's
fitness metric, on the search seeds) and on the held-out seeds (mean over seeds of best - DPO).
The best *survives* when it beat DPO in the search (difference > 0) and still does held out
(difference > 0); survival is counted over the campaigns whose best beat DPO in the search.

The summary prints both arms side by side; the last line is ``ratio: N`` with N = the mean held-out
``reward_gain`` of the islands arm's bests / the random arm's (each averaged over campaigns and
held-out seeds; reward_gain is each policy's gold-reward gain over the SFT model, so both are > 0
for any useful loss; > 1 favours island selection; ``nan`` when the random arm's mean is <= 0).

    .venv/bin/python benchmarks/search_quality.py [--quick] [--out runs/search_quality]

``--quick``: 2 campaigns per arm, 6 candidates, 2 held-out seeds. Campaign folders and held-out
runs are kept under ``--out``; a rerun reuses finished campaigns and held-out runs already there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discovery.archive import Archive  # noqa: E402
from discovery.campaign import run_campaign, summary  # noqa: E402
from discovery.config import CampaignConfig  # noqa: E402
from discovery.evolve import EvolveProposer  # noqa: E402

ARMS = ("islands", "random")
METRIC = "reward_gain"
OVERRIDES = {"num_epochs": 1.0, "eval_kwargs": {"n_samples_per_prompt": 8}}


def config_for(arm: str, seed: int, args) -> CampaignConfig:
    return CampaignConfig.from_dict({
        "candidates": args.candidates, "baselines": ["dpo"],
        "proposer": {"name": "evolve", "seed": seed, "selection": arm, "islands": args.islands},
        "training": {"task": "synthetic", "seeds": list(args.seeds), "screen_seeds": 1,
                     "overrides": OVERRIDES},
        "fitness": {"metric": METRIC},
        "execution": {"inspect": False},
    }).resolved()


def campaign(arm: str, seed: int, args) -> dict:
    """Run (or reuse) one campaign; its best as {name, code, search_diff}."""
    folder = Path(args.out) / f"{arm}-{seed}"
    config = config_for(arm, seed, args)
    done = False
    if (folder / "archive.sqlite").exists():
        with Archive.open(folder) as a:
            done = a.count(kind="candidate") >= args.candidates and not a.rows(status=("proposed", "training"))
        if not done:
            raise SystemExit(f"{folder} holds an unfinished campaign: `disco resume {folder}` or remove it")
    if not done:
        start = time.perf_counter()
        run_campaign(folder, config, proposer=EvolveProposer.from_config(config), progress=False)
        print(f"  {arm} campaign {seed}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    with Archive.open(folder) as a:
        best = summary(a)["best"]
        code = a.get(best["id"])["code"] if best else None
    if best is None:
        return {"arm": arm, "seed": seed, "name": None, "code": None, "search_diff": None}
    diff = (best.get("vs_dpo") or {}).get("diff")
    return {"arm": arm, "seed": seed, "name": best["name"], "code": code, "search_diff": diff,
            "beta": config.training.beta}


def heldout(spec: str, seed: int, beta: float, args, cache: dict) -> float | None:
    """``spec`` (code or a registry name) trained on held-out ``seed``: its METRIC (cached)."""
    key = f"{hashlib.sha256(spec.encode()).hexdigest()[:16]}:{seed}"
    if key not in cache:
        from evaluation.compare import Setting, default_runner, run_one
        setting = Setting(seed=seed, task="synthetic", beta=beta, overrides=tuple(sorted(OVERRIDES.items())))
        out = Path(args.out) / "heldout" / key.replace(":", "-seed")
        run = run_one(default_runner(), key, spec, setting, out_dir=str(out))
        cache[key] = run.value(METRIC)
        (Path(args.out) / "heldout.json").write_text(json.dumps(cache, indent=1))
    return cache[key]


def fmt(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:+.{digits}f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/search_quality", help="folder for the campaigns and held-out runs")
    p.add_argument("--campaigns", type=int, default=3, help="campaigns per arm (proposer seeds 0..N-1)")
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="search seeds")
    p.add_argument("--heldout-seeds", type=int, nargs="+", default=[100, 101, 102])
    p.add_argument("--islands", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="2 campaigns per arm, 6 candidates, 2 held-out seeds")
    args = p.parse_args(argv)
    if args.quick:
        args.campaigns, args.candidates, args.heldout_seeds = 2, 6, [100, 101]
    if set(args.heldout_seeds) & set(args.seeds):
        raise SystemExit("--heldout-seeds must not overlap the search --seeds")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    cache_path = Path(args.out) / "heldout.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}

    start = time.perf_counter()
    rows = []
    for seed in range(args.campaigns):
        for arm in ARMS:
            rows.append(campaign(arm, seed, args))
    beta = next((r["beta"] for r in rows if r.get("beta") is not None), None)
    dpo = {s: heldout("dpo", s, beta, args, cache) for s in args.heldout_seeds}
    for r in rows:
        values = {s: heldout(r["code"], s, beta, args, cache) for s in args.heldout_seeds} if r["code"] else {}
        diffs = [values[s] - dpo[s] for s in args.heldout_seeds
                 if values.get(s) is not None and dpo[s] is not None]
        r["heldout_value"] = statistics.fmean(v for v in values.values() if v is not None) \
            if any(v is not None for v in values.values()) else None
        r["heldout_diff"] = statistics.fmean(diffs) if diffs else None
        r["claims"] = r["search_diff"] is not None and r["search_diff"] > 0
        r["survives"] = r["claims"] and r["heldout_diff"] is not None and r["heldout_diff"] > 0

    print(f"search quality on synthetic: {args.campaigns} campaigns per arm, {args.candidates} candidates, "
          f"search seeds {args.seeds}, held-out seeds {args.heldout_seeds}, metric {METRIC}, "
          f"overrides {OVERRIDES}; {time.perf_counter() - start:.0f} s")
    print(f"DPO held out: {', '.join(f'seed {s} {fmt(v)}' for s, v in dpo.items())}")
    print(f"{'arm':<8} {'campaign':>8}  {'best':<28} {'search diff':>11} {'held-out diff':>13} {'survives':>8}")
    for r in sorted(rows, key=lambda r: (ARMS.index(r["arm"]), r["seed"])):
        verdict = "yes" if r["survives"] else ("no" if r["claims"] else "(no claim)")
        print(f"{r['arm']:<8} {r['seed']:>8}  {str(r['name'])[:28]:<28} {fmt(r['search_diff']):>11} "
              f"{fmt(r['heldout_diff']):>13} {verdict:>8}")

    def arm_stats(arm: str) -> dict:
        mine = [r for r in rows if r["arm"] == arm]
        diffs = [r["heldout_diff"] for r in mine if r["heldout_diff"] is not None]
        values = [r["heldout_value"] for r in mine if r["heldout_value"] is not None]
        claims = [r for r in mine if r["claims"]]
        return {"diff": statistics.fmean(diffs) if diffs else None,
                "value": statistics.fmean(values) if values else None,
                "claims": f"{len(claims)}/{len(mine)}",
                "survived": f"{sum(r['survives'] for r in claims)}/{len(claims)}"}

    stats = {arm: arm_stats(arm) for arm in ARMS}
    print()
    print(f"{'':<40} {'islands':>10} {'random':>10}")
    print(f"{'mean held-out diff of the best to DPO':<40} {fmt(stats['islands']['diff']):>10} "
          f"{fmt(stats['random']['diff']):>10}")
    print(f"{'mean held-out ' + METRIC + ' of the best':<40} {fmt(stats['islands']['value']):>10} "
          f"{fmt(stats['random']['value']):>10}")
    print(f"{'best beat DPO in the search':<40} {stats['islands']['claims']:>10} {stats['random']['claims']:>10}")
    print(f"{'... and survived held out':<40} {stats['islands']['survived']:>10} {stats['random']['survived']:>10}")
    print(f"islands - random, held-out diff of the best to DPO: {difference_text(rows)}")
    a, b = stats["islands"]["value"], stats["random"]["value"]
    ratio = a / b if a is not None and b is not None and b > 0 else float("nan")
    print(f"ratio = mean held-out {METRIC} of the islands arm's bests / the random arm's")
    print(f"ratio: {ratio:.2f}")
    return 0


def difference_text(rows: list[dict]) -> str:
    """The islands arm's mean held-out difference to DPO minus the random arm's, with a 95% Welch
    t-interval over campaigns (each campaign one unit: its best's mean over the held-out seeds)."""
    import math

    from scipy.stats import t
    x = [r["heldout_diff"] for r in rows if r["arm"] == "islands" and r["heldout_diff"] is not None]
    y = [r["heldout_diff"] for r in rows if r["arm"] == "random" and r["heldout_diff"] is not None]
    if len(x) < 2 or len(y) < 2:
        return "n/a (fewer than 2 campaigns in an arm)"
    vx, vy = statistics.variance(x) / len(x), statistics.variance(y) / len(y)
    d, se = statistics.fmean(x) - statistics.fmean(y), math.sqrt(vx + vy)
    if se == 0:
        return f"{d:+.4f} (no spread between campaigns: no interval)"
    df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    half = float(t.ppf(0.975, df)) * se
    return (f"{d:+.4f} [{d - half:+.4f}, {d + half:+.4f}] (95% Welch t-interval over {len(x)} + {len(y)} "
            f"campaigns, df {df:.1f})")


if __name__ == "__main__":
    sys.exit(main())
