"""DPO training throughput and model FLOPs utilisation (MFU) on one GPU, side by side:

(a) TRL as it comes: ``trl.DPOTrainer`` with a live reference model (a second copy of the policy,
    run forward on every batch) and TRL's defaults for precision and checkpointing (``bf16=True``,
    ``gradient_checkpointing=True``);
(b) ours: ``inner_loop.trainer.ObjectiveDPOTrainer`` with the ``dpo`` objective, reference log-probs
    precomputed (no reference model in memory or in the step) and our ``device_defaults`` (bf16 where
    supported; gradient checkpointing only when the estimate of the step's memory,
    ``inner_loop.train_config.training_memory``, does not fit in 85% of the GPU's free memory), at
    the same batch as (a);
(c) ours at the best batch that fits: ``inner_loop.train_config.largest_batch`` picks the largest
    batch (up to 64 pairs) whose estimate fits without checkpointing, else with it.

Each line says the batch and the checkpointing the variant ran with.

The model is a Gemma-2B architecture with random weights (``GemmaConfig`` with gemma-2b's published
dimensions: hidden 2048, 18 layers, 8 heads, 1 KV head, head_dim 256, intermediate 16384, vocab
256000, tied embeddings: 2.51e9 parameters), in bf16. Both variants train it on the same synthetic
random-token pairs, pre-tokenised here (prompt 512 + completion 512 = 1024 tokens per sequence;
nothing comes from a hub), for the same steps and batch size. The only change to TRL in (a) is that
``_prepare_dataset`` takes the pre-tokenised pairs as they are (TRL 1.16 would try to tokenise them
as text); it runs once at construction, outside the timing. In (b) the reference log-probs are
filled with a constant (their values do not change the speed); computing them for real is one
reference forward per pair per campaign, shared by every candidate, and is not in (b)'s timing.

Measured, per variant, each in its own process (so its peak memory and a CUDA OOM stay its own):

* steps: optimizer steps timed, after ``--warmup`` untimed warm-up steps; the clock is read after
  ``torch.cuda.synchronize()`` at the end of the last warm-up step and of the last step;
* tokens/s: prompt + completion tokens of chosen and rejected that pass through the policy,
  ``batch * 2 * seq_len`` per step (no padding: every sequence is exactly ``seq_len``);
* MFU = achieved model FLOPs/s / peak, with model FLOPs per token ``6 N`` for the policy's forward
  and backward, plus ``2 N`` for the live reference forward in (a) (so ``8 N`` there). ``N`` counts
  every parameter once (the tied embedding is the LM head's matmul). Not counted, as usual for MFU:
  the forward recomputed by gradient checkpointing (that would be hardware FLOPs utilisation) and
  attention-score FLOPs (``12 * layers * heads * head_dim * seq_len`` per token, about 3% of 6N at
  1024 tokens). The peak is ``--peak-flops``: dense bf16 without sparsity; default 989e12 for an
  H200 (SXM; an H100 SXM is the same, H100 PCIe 756e12, A100 312e12);
* peak GPU memory: ``torch.cuda.max_memory_allocated()`` over the whole process (model, reference,
  optimizer state, activations); on CPU the peak RSS instead.

An out-of-memory in a variant is reported as that variant's failure (and ``ratio: n/a``); any other
error in a variant makes the exit status 1. The last line is ``ratio: N``, tokens/s of (b) over (a).

On a GPU machine with one GPU visible (by estimate, not yet measured: 20 GB of bf16 weights,
gradients and AdamW state for (b), 5 GB more for (a)'s reference, plus activations):

    .venv/bin/python benchmarks/gpu_throughput.py --steps 20 [--batch-size 4] [--peak-flops 989e12]

``--tiny`` (2 layers, hidden 64, vocab 1000, seq 64) runs the same code path on CPU in well under a
minute; its numbers say nothing about a GPU (tests/benchmarks/test_gpu_throughput_smoke.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GEMMA_2B = dict(vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                num_attention_heads=8, num_key_value_heads=1, head_dim=256, max_position_embeddings=8192,
                hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6)
TINY = dict(vocab_size=1000, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=128)
SPECIAL = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}  # Gemma's ids for pad, eos, bos
LABELS = {"a": "(a) TRL DPOTrainer, live reference", "b": "(b) ours, ObjectiveDPOTrainer + precomputed ref",
          "c": "(c) ours, the largest batch that fits"}


# -- one variant, in its own process -----------------------------------------------------------
def _tokenizer():
    """A four-token tokenizer: the trainers need one for the pad token, and the data is pre-tokenised."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.WordLevel(SPECIAL, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>")


def _pairs(n: int, seq_len: int, vocab: int, with_ref: bool):
    """``n`` pairs of random tokens: prompt, chosen and rejected of ``seq_len // 2`` tokens each."""
    import math

    import torch
    from datasets import Dataset
    g = torch.Generator().manual_seed(0)
    half = seq_len // 2
    ids = torch.randint(len(SPECIAL), vocab, (n, 3, half), generator=g).tolist()
    cols = {"prompt_ids": [r[0] for r in ids], "chosen_ids": [r[1] for r in ids], "rejected_ids": [r[2] for r in ids]}
    if with_ref:  # a uniform model's log-prob of the completion; the value does not change the speed
        cols["ref_chosen_logps"] = cols["ref_rejected_logps"] = [-half * math.log(vocab)] * n
    return Dataset.from_dict(cols)


def _clock(warmup: int, total: int, marks: dict):
    """A callback that reads the clock, after a CUDA synchronize, into ``marks[step]`` at the end of
    the last warm-up step and of the last step (at the start of training for ``--warmup 0``)."""
    import torch
    from transformers import TrainerCallback

    def mark(step: int):
        if step in (warmup, total):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks[step] = time.perf_counter()

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            mark(0)

        def on_step_end(self, args, state, control, **kwargs):
            mark(state.global_step)

    return Clock()


def _variant(name: str, args: argparse.Namespace) -> dict:
    import contextlib
    import copy
    import resource

    import torch
    from transformers import AutoModelForCausalLM, GemmaConfig
    from trl import DPOConfig, DPOTrainer

    import objectives
    from inner_loop.trainer import ObjectiveDPOTrainer, TrainConfig, dpo_config, is_out_of_memory

    class PreTokenisedDPOTrainer(DPOTrainer):
        """TRL's DPOTrainer, except that it takes pre-tokenised pairs as they are."""

        def _prepare_dataset(self, dataset, processing_class, cfg, dataset_name):
            return dataset

    cuda = torch.cuda.is_available()
    dims, seq_len = (TINY, 64) if args.tiny else (GEMMA_2B, 1024)
    total = args.warmup + args.steps
    result = {"variant": name, "status": "done", "reason": None, "steps": args.steps,
              "device": torch.cuda.get_device_name() if cuda else "cpu"}
    try:
        torch.manual_seed(0)
        config = GemmaConfig(**dims, pad_token_id=0, eos_token_id=1, bos_token_id=2)
        dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
        with torch.device("cuda" if cuda else "cpu"):
            policy = AutoModelForCausalLM.from_config(config, dtype=dtype)
        result["n_params"] = sum(p.numel() for p in policy.parameters())  # tied embedding once
        result["dtype"] = str(dtype).removeprefix("torch.")
        pairs = _pairs(total * args.batch_size, seq_len, dims["vocab_size"], with_ref=name == "b")
        result["tokens_per_step"] = args.batch_size * 2 * seq_len
        marks: dict[int, float] = {}
        with tempfile.TemporaryDirectory(prefix="gpu-throughput-") as tmp:
            if name == "a":  # TRL's defaults for everything but what both variants must share
                cfg = DPOConfig(output_dir=tmp, per_device_train_batch_size=args.batch_size, max_steps=total,
                                max_length=seq_len, learning_rate=1e-6, beta=0.1, logging_steps=total,
                                save_strategy="no", report_to="none", disable_tqdm=True, seed=0,
                                use_cpu=not cuda)  # TRL's bf16 default refuses CPU without it (--tiny)
                trainer = PreTokenisedDPOTrainer(model=policy, ref_model=copy.deepcopy(policy), args=cfg,
                                                 train_dataset=pairs, processing_class=_tokenizer())
            else:
                batch, checkpointing = args.batch_size, None
                if name == "c":
                    from inner_loop.train_config import largest_batch
                    free = torch.cuda.mem_get_info()[0] if cuda else 2 * 2**30
                    chosen = largest_batch(policy, precision="bf16" if dtype == torch.bfloat16 else "fp32",
                                           seq_len=seq_len, free_bytes=free)
                    batch, checkpointing = chosen if chosen else (1, True)
                    pairs = _pairs(total * batch, seq_len, dims["vocab_size"], with_ref=True)
                    result["tokens_per_step"] = batch * 2 * seq_len
                train = TrainConfig(beta=0.1, learning_rate=1e-6, max_steps=total, batch_size=batch,
                                    max_length=seq_len, logging_steps=total,
                                    gradient_checkpointing=checkpointing).resolved(policy)
                trainer = ObjectiveDPOTrainer(model=policy, args=dpo_config(train, tmp), train_dataset=pairs,
                                              processing_class=_tokenizer(), objective=objectives.load("dpo"))
            result["bf16"], result["checkpointing"] = trainer.args.bf16, trainer.args.gradient_checkpointing
            result["batch"] = trainer.args.per_device_train_batch_size
            trainer.add_callback(_clock(args.warmup, total, marks))
            with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its logs: stdout is for the result
                trainer.train()
        seconds = marks[total] - marks[args.warmup]
        result["seconds"] = seconds
        result["tokens_per_s"] = args.steps * result["tokens_per_step"] / seconds
    except Exception as err:  # noqa: BLE001 - out of memory is this variant's result, anything else a bug
        if not is_out_of_memory(err):
            raise
        result.update(status="failed", reason=f"out of memory: {str(err).splitlines()[0][:160]}")
    if cuda:
        result["peak_memory"], result["memory_kind"] = torch.cuda.max_memory_allocated(), "peak GPU"
    else:
        result["peak_memory"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result["memory_kind"] = "peak RSS"
    return result


# -- the report ------------------------------------------------------------------------------------
def _line(r: dict, peak_flops: float) -> str:
    head = f"{LABELS[r['variant']]:<49}"
    if "flops_per_token" in r:
        mfu = r["tokens_per_s"] * r["flops_per_token"] / peak_flops
        body = (f"steps {r['steps']:3d}  tokens/s {r['tokens_per_s']:10.1f}  MFU {100 * mfu:6.3g}%"
                f"  ({r['flops_per_token'] // r['n_params']}N/token)")
    else:
        body = f"FAILED: {r['reason']}"
    mem = f"  {r['memory_kind']} {r['peak_memory'] / 2**30:6.2f} GiB" if r.get("peak_memory") else ""
    how = (f"  [batch {r.get('batch')}, {r['dtype']} weights, bf16={r['bf16']}, checkpointing={r['checkpointing']}]"
           if "bf16" in r else "")
    return head + body + mem + how


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per variant (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps before them (default 3)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="pairs per step, so 2x sequences (default 4, the gemma-2b recipe's per-device batch)")
    p.add_argument("--peak-flops", type=float, default=989e12,
                   help="the GPU's peak dense bf16 FLOP/s for MFU (default 989e12: H200/H100 SXM)")
    p.add_argument("--tiny", action="store_true",
                   help="2 layers, hidden 64, vocab 1000, seq 64: a CPU smoke test of the code path")
    p.add_argument("--variant", choices=list(LABELS), default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be at least 1 and --warmup at least 0")
    if args.variant:
        print(json.dumps(_variant(args.variant, args)))
        return 0

    forwarded = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
    res, errors = {}, False
    for v in LABELS:
        cmd = [sys.executable, __file__, "--variant", v, *forwarded] + (["--tiny"] if args.tiny else [])
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if out.returncode:  # not an OOM (that comes back as a result): show why, and go on
            print(f"{LABELS[v]}: exited {out.returncode}\n{out.stderr[-3000:]}", file=sys.stderr)
            res[v], errors = {"variant": v, "reason": f"error (exit {out.returncode}, stderr above)"}, True
            continue
        res[v] = json.loads(out.stdout.strip().splitlines()[-1])
        if res[v]["status"] == "done":
            res[v]["flops_per_token"] = (8 if v == "a" else 6) * res[v]["n_params"]
    # the last line compares (b) with (a) at the same batch; (c) is the best batch that fits

    seq = 64 if args.tiny else 1024
    known = next((r for r in res.values() if "n_params" in r), {})
    print(f"{'tiny Gemma' if args.tiny else 'Gemma-2B architecture'}, random weights, "
          f"{known.get('n_params', 0):,} parameters, {known.get('dtype', '?')}, on {known.get('device', '?')}")
    print(f"seq {seq} (prompt {seq // 2} + completion {seq // 2}), batch {args.batch_size} pairs = "
          f"{args.batch_size * 2 * seq} policy tokens/step, {args.warmup} warm-up + {args.steps} timed steps")
    print(f"MFU = tokens/s * FLOPs/token / {args.peak_flops:.4g}; FLOPs/token = 6N (policy fwd+bwd)"
          " + 2N (live reference fwd, (a) only)")
    for v in LABELS:
        print(_line(res[v], args.peak_flops))
    a, b = res["a"], res["b"]
    if "flops_per_token" in a and "flops_per_token" in b:
        print(f"ratio: {b['tokens_per_s'] / a['tokens_per_s']:.2f}")
    else:
        failed = " and ".join(f"({v}) failed" for v in LABELS if "flops_per_token" not in res[v])
        print(f"ratio: n/a ({failed})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
