"""Per-candidate cost of the inner loop, side by side on the synthetic task (same pairs, steps,
batch size, fp32, one thread):

(a) the DiscoPOP way: a fresh TRL DPOTrainer per candidate, with a live reference model and TRL
    tokenising the text pairs again;
(b) ours: inner_loop.trainer.train_objective on the pre-tokenised pairs with precomputed
    reference log-probs (no reference model);
(c) the floor: a bare PyTorch loop doing only the policy's forward and backward (+ AdamW) on the
    same batches, with the reference log-probs given.

Each variant runs in its own process (so peak RSS is its own). The last line is ``ratio: N``, the
speed-up of (b) over (a). Timings on a shared machine are noisy: compare within one run.

    .venv/bin/python benchmarks/inner_loop_speed.py [--steps 16] [--candidates 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _variant(name: str, steps: int, candidates: int, batch: int, cache: str | None) -> dict:
    import torch
    torch.set_num_threads(1)
    import objectives
    from inner_loop.tasks import get_task
    from inner_loop.trainer import TrainConfig, dpo_config, train_objective
    kw = {"cache_dir": cache} if cache else {}
    task = get_task("synthetic", progress=False, **kw)
    pairs = task.train_pairs.select(range(steps * batch))
    cfg = TrainConfig(beta=0.1, learning_rate=1e-3, max_steps=steps, batch_size=batch, precision="fp32",
                      gradient_checkpointing=False, threads=1, logging_steps=steps)
    times = []
    for c in range(candidates):
        start = time.perf_counter()
        if name == "a":
            from trl import DPOTrainer
            text = pairs.select_columns(["prompt", "chosen", "rejected"])
            args = dpo_config(cfg, f"/tmp/bench-a-{c}")
            args.loss_weights, args.precompute_ref_log_probs = None, False
            policy, ref = task.load_sft(), task.load_sft()
            trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=text,
                                 processing_class=task.tokenizer)
            trainer.train()
        elif name == "b":
            out = train_objective(task.load_sft(), task.tokenizer, pairs, objectives.load("dpo"), cfg)
            assert out.status == "done"
        else:
            from trl.trainer.dpo_trainer import DataCollatorForPreference
            obj = objectives.load("dpo")
            model = task.load_sft()
            torch.manual_seed(0)
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
            collate = DataCollatorForPreference(pad_token_id=task.tokenizer.pad_token_id)
            rows = pairs.select_columns(["prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps",
                                         "ref_rejected_logps"]).to_list()
            for s in range(steps):
                b = collate(rows[s * batch:(s + 1) * batch])
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
                tok = logits.log_softmax(-1).gather(2, b["input_ids"][:, 1:, None])[..., 0]
                logps = (tok * b["completion_mask"][:, 1:]).sum(1)
                pc, pr = logps.chunk(2)
                loss = obj(pc, pr, b["ref_chosen_logps"], b["ref_rejected_logps"], cfg.beta).mean()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                opt.step()
                opt.zero_grad()
        times.append(time.perf_counter() - start)
    return {"variant": name, "seconds": times, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=16, help="optimizer steps per candidate (default 16)")
    p.add_argument("--candidates", type=int, default=2, help="candidates per variant (default 2)")
    p.add_argument("--batch-size", type=int, default=64, help="pairs per step (default 64)")
    p.add_argument("--cache-dir", default=None, help="synthetic task cache (default $DISCO_CACHE or ~/.cache/disco)")
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        print(json.dumps(_variant(args.variant, args.steps, args.candidates, args.batch_size, args.cache_dir)))
        return 0
    labels = {"a": "(a) DiscoPOP: fresh DPOTrainer + live ref + tokenise",
              "b": "(b) ours: train_objective, pre-tokenised, ref precomputed",
              "c": "(c) floor: bare policy forward/backward"}
    res = {}
    for v in "abc":
        cmd = [sys.executable, __file__, "--variant", v, "--steps", str(args.steps), "--candidates",
               str(args.candidates), "--batch-size", str(args.batch_size)]
        if args.cache_dir:
            cmd += ["--cache-dir", args.cache_dir]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        res[v] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"steps {args.steps} x batch {args.batch_size}, fp32, 1 thread; per-candidate seconds (first is cold)")
    for v in "abc":
        s = res[v]["seconds"]
        print(f"{labels[v]:<58} " + " ".join(f"{x:6.2f}" for x in s) +
              f"   median {sorted(s)[len(s) // 2]:6.2f}   peak RSS {res[v]['peak_rss_mb']:.0f} MB")
    med = {v: sorted(res[v]["seconds"])[len(res[v]["seconds"]) // 2] for v in "abc"}
    print(f"(b) / (c) = {med['b'] / med['c']:.2f}  (target <= 1.5)")
    print(f"ratio: {med['a'] / med['b']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
