"""How the synthetic task is built (called by :func:`inner_loop.synthetic.build` into a temp dir;
it imports the task's language from :mod:`inner_loop.synthetic_language`, never the task module).

Straight-line: tokenizer -> SFT corpus -> tiny GPT-2 trained from scratch -> prompts ->
preference pairs sampled from the SFT model -> reference log-probs -> Bradley-Terry labels.
Every random draw comes from ``config.data_seed`` (Python ``random.Random``, or a ``torch.Generator``;
the global torch RNG is forked around model initialisation), so a build is reproducible.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from pathlib import Path

import torch

from inner_loop import sampling
from inner_loop.synthetic_language import (BOS, BUILD_VERSION, EOS, PAD, UNK, SyntheticConfig, log,
                                           prompt_words, review, reward_tables, sentiment_score, vocabulary)


def make_tokenizer(vocab: list[str]):
    """Word-level tokenizer over ``vocab`` (split on whitespace); ``tokenizer(text)`` prepends <s>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocab)}, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B",
                                                        special_tokens=[(BOS, vocab.index(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   unk_token=UNK, model_input_names=["input_ids", "attention_mask"])


def start_build(out: Path, config, vocab: list[str], build_version: int):
    """The first artefacts of a local task's build in ``out``: ``config.json`` (the config and
    ``build_version``) and the word-level ``tokenizer/``; returns (token id by word, tokenizer)."""
    (out / "config.json").write_text(json.dumps({"build_version": build_version,
                                                 **dataclasses.asdict(config)}, indent=1))
    tokenizer = make_tokenizer(vocab)
    tokenizer.save_pretrained(str(out / "tokenizer"))
    return {w: i for i, w in enumerate(vocab)}, tokenizer


def make_model(config: SyntheticConfig, vocab_size: int):
    """A GPT-2 from config (no pretrained weights), dropout 0, initialised from ``config.data_seed``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab_size, n_positions=config.n_positions, n_embd=config.n_embd,
                     n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                     loss_type="ForCausalLM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.data_seed)
        return GPT2LMHeadModel(cfg)


def train_sft(model, corpus: list[list[int]], config: SyntheticConfig, pad_id: int, progress: bool) -> list[float]:
    """Next-token cross-entropy on whole reviews; AdamW, linear warmup then cosine to 10%."""
    gen = torch.Generator().manual_seed(config.data_seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=config.sft_lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = min(20, max(1, config.sft_steps // 10))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, config.sft_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses: list[float] = []
    order = torch.randperm(len(corpus), generator=gen)
    cursor = 0
    for step in range(config.sft_steps):
        if cursor + config.sft_batch_size > len(order):
            order, cursor = torch.randperm(len(corpus), generator=gen), 0
        rows = [corpus[i] for i in order[cursor:cursor + config.sft_batch_size].tolist()]
        cursor += config.sft_batch_size
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
        real = ids != pad_id
        loss = model(input_ids=ids, attention_mask=real.long(), labels=ids.masked_fill(~real, -100),
                     use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress and (step + 1) % max(1, config.sft_steps // 5) == 0:
            log(True, f"SFT step {step + 1}/{config.sft_steps}  loss {loss.item():.3f}")
    model.eval()
    return losses


def split_prompts(config: SyntheticConfig, rng: random.Random) -> tuple[list[tuple], list[tuple]]:
    """(train, held-out) unique prompt word tuples; no held-out prompt equals a training prompt."""
    need = config.n_train_pairs + config.n_heldout_prompts
    seen: dict[tuple, None] = {}
    for _ in range(50 * need):
        seen.setdefault(prompt_words(rng, config), None)
        if len(seen) == need:
            break
    else:
        raise ValueError(f"the grammar gave only {len(seen)} distinct prompts, {need} needed")
    unique = list(seen)
    rng.shuffle(unique)
    return unique[config.n_heldout_prompts:], unique[:config.n_heldout_prompts]


def build_into(out: Path, config: SyntheticConfig, progress: bool = True) -> None:
    """Write every artefact of the task for ``config`` into the (empty) directory ``out``."""
    from datasets import Dataset

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    rng = random.Random(config.data_seed)
    vocab = vocabulary(config)
    index, tokenizer = start_build(out, config, vocab, BUILD_VERSION)
    bos, eos, pad = index[BOS], index[EOS], index[PAD]

    corpus = [([bos] + [index[w] for w in review(rng, config)] + [eos])[:config.n_positions]
              for _ in range(config.corpus_size)]
    log(progress, f"corpus: {len(corpus)} reviews, mean {sum(map(len, corpus)) / len(corpus):.1f} tokens; "
                  f"vocab {len(vocab)}")
    model = make_model(config, len(vocab))
    t = time.perf_counter()
    losses = train_sft(model, corpus, config, pad, progress)
    timings["sft_s"] = time.perf_counter() - t
    model.save_pretrained(str(out / "sft"))

    train_prompts, heldout = split_prompts(config, rng)
    prompt_ids = [[bos] + [index[w] for w in p] for p in train_prompts]
    t = time.perf_counter()
    gen = torch.Generator().manual_seed(config.data_seed + 2)
    samples = sampling.sample_completions(model, prompt_ids, n_per_prompt=2, eos_token_id=eos,
                                          max_new_tokens=config.max_completion_len, generator=gen)
    truncated = sum(1 for c in samples if not c or c[-1] != eos)
    samples = [c if c and c[-1] == eos else c + [eos] for c in samples]  # every completion ends with eos
    a, b = samples[0::2], samples[1::2]
    timings["sample_s"] = time.perf_counter() - t

    t = time.perf_counter()
    logp = sampling.completion_logps(model, [p for p in prompt_ids for _ in range(2)], samples, pad)
    timings["ref_logps_s"] = time.perf_counter() - t
    w, m = reward_tables(vocab)
    reward = torch.sigmoid(sentiment_score(samples, w, m, eos) / config.reward_scale)
    ra, rb = reward[0::2], reward[1::2]
    # Bradley-Terry label: P(a preferred) = sigmoid((r_a - r_b) / T)
    p_a = torch.sigmoid((ra - rb) / config.label_temperature)
    a_wins = torch.rand(len(a), generator=gen) < p_a

    def text(ids: list[int]) -> str:
        return " ".join(vocab[i] for i in ids)

    cols: dict[str, list] = {k: [] for k in (
        "prompt", "chosen", "rejected", "prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps",
        "ref_rejected_logps", "ref_chosen_logps_mean", "ref_rejected_logps_mean", "chosen_length",
        "rejected_length", "chosen_reward", "rejected_reward")}
    for i, p in enumerate(prompt_ids):
        j_c, j_r = (2 * i, 2 * i + 1) if a_wins[i] else (2 * i + 1, 2 * i)
        chosen, rejected = samples[j_c], samples[j_r]
        cols["prompt"].append(text(p[1:]))
        cols["chosen"].append(" " + text(chosen))
        cols["rejected"].append(" " + text(rejected))
        cols["prompt_ids"].append(p)
        cols["chosen_ids"].append(chosen)
        cols["rejected_ids"].append(rejected)
        cols["ref_chosen_logps"].append(float(logp[j_c]))
        cols["ref_rejected_logps"].append(float(logp[j_r]))
        cols["ref_chosen_logps_mean"].append(float(logp[j_c]) / len(chosen))
        cols["ref_rejected_logps_mean"].append(float(logp[j_r]) / len(rejected))
        cols["chosen_length"].append(len(chosen))
        cols["rejected_length"].append(len(rejected))
        cols["chosen_reward"].append(float(reward[j_c]))
        cols["rejected_reward"].append(float(reward[j_r]))
    Dataset.from_dict(cols).save_to_disk(str(out / "train_pairs"))
    (out / "heldout_prompts.json").write_text(json.dumps([[bos] + [index[w] for w in p] for p in heldout]))

    rc, rr = torch.tensor(cols["chosen_reward"]), torch.tensor(cols["rejected_reward"])
    timings["total_s"] = time.perf_counter() - t0
    info = {
        "config_hash": config.config_hash(),
        "vocab_size": len(vocab),
        "n_params": sum(p.numel() for p in model.parameters()),
        "sft_loss_first10": sum(losses[:10]) / len(losses[:10]),
        "sft_loss_last10": sum(losses[-10:]) / len(losses[-10:]),
        "sft_losses": [round(x, 4) for x in losses],
        "sample_reward_mean": float(reward.mean()),
        "sample_reward_std": float(reward.std()),
        "truncated_fraction": truncated / len(samples),
        "chosen_higher_fraction": float((rc > rr).float().mean()),
        "tied_fraction": float((rc == rr).float().mean()),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "torch_threads": torch.get_num_threads(),
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=1))  # written last: the "complete" mark
    log(progress, f"built in {timings['total_s']:.1f}s: SFT loss {info['sft_loss_first10']:.2f} -> "
                  f"{info['sft_loss_last10']:.2f}, sample reward {info['sample_reward_mean']:.2f} "
                  f"+- {info['sample_reward_std']:.2f}, chosen higher {info['chosen_higher_fraction']:.2f}")
