"""Can the embedded task's fitness tell two sensible losses apart? The measuring stick of issue 10.

Trains DPO and IPO (built-ins, in-process: ``inner_loop.runner.run_candidate(isolation="none")``)
on the synthetic task over K seeds, scores the SFT model at each seed, and prints, per row of
settings and for each metric (``win_rate``, ``reward_gain``):

* ``effect``: DPO's mean improvement over SFT (DPO - SFT per seed, averaged over the K seeds);
* ``diffs``: the per-seed paired differences IPO - DPO, their mean and sd (K - 1 df);
* ``hw(n)``: the 95% half-width of the mean paired difference over the campaign's n seeds,
  ``t_{0.975, K-1} * sd / sqrt(n)`` (the sd is measured on K seeds, so the t-quantile has K - 1
  degrees of freedom; n is the seed count a campaign would use, ``--n``);
* ``ratio = hw(n) / effect`` (issue 10's target: <= 0.1);
* seconds per candidate run: training + scoring, as ``run_candidate`` timed them (mean over the
  row's 2K runs; x n for a whole candidate). Timings on a shared machine are noisy: compare rows
  within one invocation.

Rows: ``before`` is the settings before issue 10 (one epoch of 64-pair batches at lr 1e-3, 2
samples per prompt, the reference sampled from an independent stream, metric win_rate); ``after``
is today's defaults (no overrides); ``custom`` is the defaults with ``--samples``, ``--set`` and
``--no-crn``. The last line is ``ratio: N`` for ``--metric`` on the last row printed.

    .venv/bin/python benchmarks/fitness_resolution.py --rows before after --seeds 0 1 2 3 4 5 6 7
    .venv/bin/python benchmarks/fitness_resolution.py --rows custom --samples 8 --set num_epochs=2
    .venv/bin/python benchmarks/fitness_resolution.py --sandbox     # one DPO run in the sandbox vs in-process
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

METRICS = ("win_rate", "reward_gain")
SFT_VALUE = {"win_rate": 0.5, "reward_gain": 0.0}  # what the SFT model scores under crn, exactly
# the settings before issue 10, spelled out so that the row stays "before" whatever the defaults become
BEFORE = {"overrides": {"learning_rate": 1e-3, "batch_size": 64, "num_epochs": 1.0, "max_steps": -1,
                        "lr_scheduler": "linear", "warmup_ratio": 0.0, "n_train_pairs": 2000,
                        "n_heldout_prompts": 128},
          "eval": {"n_samples_per_prompt": 2, "crn": False}, "metric": "win_rate"}
DPO_SOURCE = "def f(rho, beta):\n    return -F.logsigmoid(beta * rho)\n"  # a source copy of DPO


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def t_quantile(df: int, q: float = 0.975) -> float:
    from scipy.stats import t
    return float(t.ppf(q, df))


def _log(msg: str) -> None:
    print(f"[fitness_resolution] {msg}", file=sys.stderr, flush=True)


def measure(seeds, overrides: dict, eval_kwargs: dict, objectives=("dpo", "ipo")) -> dict:
    """Per seed: the metrics of each objective and of SFT; per run: train and eval seconds."""
    from inner_loop.runner import run_candidate
    from inner_loop.tasks import get_task
    from inner_loop.train_config import split_overrides

    _, task_over, _ = split_overrides(overrides)
    task = get_task("synthetic", progress=False, **task_over)
    per_seed, seconds = [], []
    for seed in seeds:
        row = {}
        for name in objectives:
            res = run_candidate(name, task="synthetic", seed=seed, isolation="none",
                                eval_kwargs=eval_kwargs, **overrides)
            if not res.ok:
                raise RuntimeError(f"{name} seed {seed} failed: {res.reason}")
            row[name] = {m: res.metrics[m] for m in (*METRICS, "reward", "kl")}
            seconds.append((res.seconds["train"], res.seconds["eval"], res.steps))
        sft = task.score(task.load_sft(), seed=seed, **eval_kwargs)
        row["sft"] = {m: sft[m] for m in (*METRICS, "reward", "kl")}
        _log(f"seed {seed}: " + "  ".join(f"{k} wr {v['win_rate']:.4f} rg {v['reward_gain']:+.4f}"
                                          for k, v in row.items()))
        per_seed.append(row)
    return {"per_seed": per_seed, "seconds": seconds}


def summarise(data: dict, metric: str, n: int) -> dict:
    rows = data["per_seed"]
    diffs = [r["ipo"][metric] - r["dpo"][metric] for r in rows]
    effects = [r["dpo"][metric] - r["sft"][metric] for r in rows]
    k = len(diffs)
    sd = statistics.stdev(diffs) if k > 1 else float("nan")
    tq = t_quantile(k - 1) if k > 1 else float("nan")
    hw = tq * sd / math.sqrt(n)
    effect = statistics.fmean(effects)
    train = statistics.fmean(s[0] for s in data["seconds"])
    score = statistics.fmean(s[1] for s in data["seconds"])
    return {"metric": metric, "k": k, "n": n, "diffs": diffs, "mean_diff": statistics.fmean(diffs), "sd": sd,
            "t": tq, "halfwidth": hw, "effect": effect, "ratio": hw / effect if effect else float("inf"),
            "train_s": train, "score_s": score, "steps": data["seconds"][0][2]}


def settings(row: str, args) -> tuple[dict, dict]:
    if row == "before":
        return dict(BEFORE["overrides"]), dict(BEFORE["eval"])
    if row == "after":
        return {}, {}
    overrides = dict(kv.split("=", 1) for kv in args.set)
    overrides = {k: _value(v) for k, v in overrides.items()}
    eval_kwargs = {}
    if args.samples is not None:
        eval_kwargs["n_samples_per_prompt"] = args.samples
    if args.no_crn:
        eval_kwargs["crn"] = False
    return overrides, eval_kwargs


def sandbox_cost(seed: int = 0) -> None:
    """One DPO run through the sandbox (a source copy of DPO) and one in-process, timed."""
    from inner_loop.runner import run_candidate
    run_candidate("dpo", seed=seed, isolation="none")  # warm: task loaded, imports done
    for label, objective, isolation in (("in-process (built-in dpo)", "dpo", "none"),
                                        ("sandbox (source copy of dpo), cold zygote", DPO_SOURCE, "sandbox"),
                                        ("sandbox (source copy of dpo), warm zygote", DPO_SOURCE, "sandbox"),
                                        ("in-process (built-in dpo)", "dpo", "none")):
        start = time.perf_counter()
        res = run_candidate(objective, seed=seed, isolation=isolation)
        wall = time.perf_counter() - start
        secs = ", ".join(f"{k} {v:.2f}" for k, v in res.seconds.items())
        print(f"{label:<44} {res.status:<6} wall {wall:6.2f} s  ({secs}); win_rate {res.metrics['win_rate']:.4f} "
              f"reward_gain {res.metrics['reward_gain']:+.4f}" if res.ok else f"{label}: {res.reason}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(8)),
                   help="training seeds measured, K of them (default 0..7)")
    p.add_argument("--n", type=int, default=None,
                   help="the campaign's seed count the half-width is for (default: discovery.config's "
                        "training.seeds, and 3 if that is 1)")
    p.add_argument("--metric", choices=METRICS, default="reward_gain",
                   help="metric of the last line's ratio (default reward_gain)")
    p.add_argument("--rows", nargs="+", default=["before", "after"], choices=("before", "after", "custom"),
                   help="settings to measure side by side (default before after)")
    p.add_argument("--samples", type=int, default=None, help="custom row: n_samples_per_prompt")
    p.add_argument("--set", action="append", default=[], metavar="K=V",
                   help="custom row: task or training override (repeatable), e.g. num_epochs=2")
    p.add_argument("--no-crn", action="store_true", help="custom row: reference from an independent stream")
    p.add_argument("--json", default=None, help="also write every number to this file")
    p.add_argument("--sandbox", action="store_true", help="only: time one DPO run in the sandbox vs in-process")
    args = p.parse_args()
    import torch
    torch.set_num_threads(1)
    if args.sandbox:
        sandbox_cost()
        return 0
    n = args.n
    if n is None:
        from discovery.config import TrainingConfig
        n = len(TrainingConfig().seeds)
        n = 3 if n == 1 else n
    results, last = {}, None
    for row in args.rows:
        overrides, eval_kwargs = settings(row, args)
        _log(f"row {row}: overrides {overrides} eval {eval_kwargs}")
        results[row] = {"overrides": overrides, "eval": eval_kwargs, "data": measure(args.seeds, overrides, eval_kwargs)}
    print(f"K = {len(args.seeds)} seeds {args.seeds}; half-width at n = {n} seeds: "
          f"t(0.975, K-1) * sd(IPO - DPO per seed) / sqrt(n); ratio = half-width / DPO's effect over SFT")
    for row, res in results.items():
        overrides, eval_kwargs = res["overrides"], res["eval"]
        samples = eval_kwargs.get("n_samples_per_prompt", "default")
        print(f"\n[{row}] overrides {overrides or '-'}; eval {eval_kwargs or '-'}")
        for metric in METRICS:
            s = summarise(res["data"], metric, n)
            res[metric] = s
            print(f"  {metric:<12} effect {s['effect']:+.4f}  IPO-DPO per seed "
                  + " ".join(f"{d:+.4f}" for d in s["diffs"])
                  + f"  mean {s['mean_diff']:+.4f} sd {s['sd']:.4f}  hw({n}) {s['halfwidth']:.4f}"
                  f"  ratio {s['ratio']:.3f}")
        s = res[METRICS[0]]
        print(f"  seconds per candidate run: train {s['train_s']:.2f} + score {s['score_s']:.2f} = "
              f"{s['train_s'] + s['score_s']:.2f} ({s['steps']} steps; x {n} seeds = "
              f"{n * (s['train_s'] + s['score_s']):.1f} s per candidate)")
        metric = BEFORE["metric"] if row == "before" and len(args.rows) == 1 else args.metric
        last = res[metric]["ratio"]
        last_metric = metric
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    print(f"(last line: {last_metric} on row {args.rows[-1]})")
    print(f"ratio: {last:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
