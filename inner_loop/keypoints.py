"""The embedded ``keypoints`` task: a summarisation-like held-out task for CPU, of another kind and
a larger model than ``synthetic`` (a laptop stand-in for the DiscoPOP paper's TL;DR task).

The prompt lists item words, some marked key (``<s> pear * lamp drum * kite rope tl;dr``); a good
completion names the key items and stops (``lamp kite </s>``). What is preferred is coverage of
the prompt's key items, less a per-token length penalty (:mod:`inner_loop.keypoints_language`
defines the language, the config and the gold reward ``r(y | x)``): unlike ``synthetic``'s
sentiment, the reward depends on the prompt, and rewards copying and brevity, not word polarity.

What ``build()`` makes, once per config, cached under ``<cache_dir>/keypoints-<config_hash>/``
(``cache_dir``: ``$DISCO_CACHE`` or ``~/.cache/disco``), with the same layout and column names as
:mod:`inner_loop.synthetic` (see there): ``config.json``, ``tokenizer/``, ``sft/``,
``train_pairs/``, ``heldout_prompts.json``, ``build_info.json`` (written last; the build goes to
a temporary sibling renamed into place). The steps reuse synthetic's blocks
(:func:`inner_loop.synthetic_build.make_tokenizer` and ``make_model``, :mod:`inner_loop.sampling`;
its SFT loop is its own, with the loss on completion tokens only):

1. a word-level tokenizer over specials, ``*``, ``tl;dr`` and ``n_items`` items (24 of 48);
2. a GPT-2 from config (3 layers, width 128: ~0.6M parameters, ~5x synthetic's) trained from
   scratch on ``corpus_size`` prompts + demonstrations, which name each key item with probability
   ``sft_key_p`` and each other item with ``sft_other_p``, in prompt order: an imperfect SFT
   policy (it misses keys and names distractors) that preference training can improve;
3. distinct prompts, split into ``n_train_pairs`` training and ``n_heldout_prompts`` held-out ones
   (disjoint; the item lists of the corpus are drawn afresh and may meet either);
4. two completions per training prompt sampled from the SFT model (temperature 1, eos appended
   when it did not stop), their reference log-probs, and a Bradley-Terry label
   ``P(a preferred) = sigmoid((r(a|x) - r(b|x)) / label_temperature)``.

Scoring is :func:`inner_loop.metrics.evaluate_policy` with this task's gold reward, so every metric
of ``synthetic`` exists here (reward, reward_gain, kl, win_rate, per_prompt, ...). ``gold_reward``
takes completions alone, as ``evaluate_policy`` passes them: prompt-major over
``heldout_prompts`` (``result[i * k + j]`` is sample j of prompt i, as
:func:`inner_loop.sampling.sample_completions` returns them), or pass ``prompts=`` explicitly.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import torch

from inner_loop.keypoints_language import (BOS, BUILD_VERSION, EOS, MARK, PAD, TRAIN_DEFAULTS, KeypointsConfig,
                                           keypoint_reward, keys_of, prompt_items, prompt_words, sft_completion,
                                           vocabulary)
from inner_loop.local_task import LocalTask, build_cached
from inner_loop.sampling import prompts_of


class KeypointsTask(LocalTask):
    """A built keypoints task, loaded from its cache directory (see the module docstring)."""

    name = "keypoints"
    config_class = KeypointsConfig
    TRAIN_DEFAULTS = TRAIN_DEFAULTS

    def __init__(self, path: Path, loaded_from_cache: bool):
        super().__init__(path, loaded_from_cache)
        self.vocab = vocabulary(self.config)
        self.mark_id = self.vocab.index(MARK)

    def gold_reward(self, completions, prompts=None) -> torch.Tensor:
        """r(y | x) per completion; ``prompts`` (one per completion) default to the held-out prompts,
        each repeated for its samples in prompt-major order."""
        completions = [list(map(int, c)) for c in completions]
        prompts = prompts_of(completions, self.heldout_prompts, prompts)
        return torch.tensor([keypoint_reward(c, keys_of(p, self.mark_id), self.eos_token_id,
                                             self.config.length_penalty) for p, c in zip(prompts, completions)])


def build(config: KeypointsConfig = KeypointsConfig(), cache_dir: str | os.PathLike | None = None,
          progress: bool = True, threads: int | None = 1) -> KeypointsTask:
    """Load the task for ``config`` from the cache, building it first if it is not there
    (:func:`inner_loop.local_task.build_cached`)."""
    return build_cached(KeypointsTask, config, build_into, cache_dir, progress, threads)


def split_prompts(config: KeypointsConfig, rng: random.Random) -> tuple[list[tuple], list[tuple]]:
    """(train, held-out) distinct prompts as (items, keys); no held-out prompt is a training prompt."""
    need = config.n_train_pairs + config.n_heldout_prompts
    seen: dict[tuple, tuple] = {}
    for _ in range(50 * need):
        items, keys = prompt_items(rng, config)
        seen.setdefault(tuple(prompt_words(items, keys)), (items, keys))
        if len(seen) == need:
            break
    else:
        raise ValueError(f"only {len(seen)} distinct prompts, {need} needed")
    unique = list(seen.values())
    rng.shuffle(unique)
    return unique[config.n_heldout_prompts:], unique[:config.n_heldout_prompts]


def train_sft(model, corpus: list[tuple[list[int], list[int]]], config: KeypointsConfig, pad_id: int,
              progress: bool) -> list[float]:
    """Cross-entropy on the completion tokens only (a prompt's item list is random: as LM targets it is
    noise that slowed the copying down); AdamW, 20 warmup steps, cosine to 10%, as synthetic's."""
    import math

    gen = torch.Generator().manual_seed(config.data_seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=config.sft_lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = min(20, max(1, config.sft_steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warmup if s < warmup else 0.1 + 0.45 * (
        1 + math.cos(math.pi * (s - warmup) / max(1, config.sft_steps - warmup))))
    model.train()
    losses: list[float] = []
    for step in range(config.sft_steps):
        rows = [corpus[i] for i in torch.randint(len(corpus), (config.sft_batch_size,), generator=gen).tolist()]
        width = max(len(p) + len(c) for p, c in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        for i, (p, c) in enumerate(rows):
            ids[i, :len(p) + len(c)] = torch.tensor(p + c)
            labels[i, len(p):len(p) + len(c)] = torch.tensor(c)
        loss = model(input_ids=ids, attention_mask=(ids != pad_id).long(), labels=labels, use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress and (step + 1) % max(1, config.sft_steps // 5) == 0:
            _log(True, f"SFT step {step + 1}/{config.sft_steps}  loss {loss.item():.3f}")
    model.eval()
    return losses


def _log(progress: bool, msg: str) -> None:
    if progress:
        import sys
        print(f"[keypoints] {msg}", file=sys.stderr, flush=True)


def build_into(out: Path, config: KeypointsConfig, progress: bool = True) -> None:
    """Write every artefact of the task for ``config`` into the (empty) directory ``out``."""
    from datasets import Dataset

    from inner_loop import sampling
    from inner_loop.synthetic_build import make_model, start_build

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    rng = random.Random(config.data_seed)
    vocab = vocabulary(config)
    index, _ = start_build(out, config, vocab, BUILD_VERSION)
    bos, eos, pad = index[BOS], index[EOS], index[PAD]
    ids_of = lambda words: [index[w] for w in words]  # noqa: E731

    corpus = []  # (prompt ids, completion ids)
    for _ in range(config.corpus_size):
        items, keys = prompt_items(rng, config)
        corpus.append(([bos] + ids_of(prompt_words(items, keys)), ids_of(sft_completion(rng, items, keys, config)) + [eos]))
    model = make_model(config, len(vocab))
    n_params = sum(p.numel() for p in model.parameters())
    _log(progress, f"corpus {len(corpus)}, vocab {len(vocab)}, {n_params} parameters")
    t = time.perf_counter()
    losses = train_sft(model, corpus, config, pad, progress)
    timings["sft_s"] = time.perf_counter() - t
    model.save_pretrained(str(out / "sft"))

    train_prompts, heldout = split_prompts(config, rng)
    prompt_ids = [[bos] + ids_of(prompt_words(*p)) for p in train_prompts]
    t = time.perf_counter()
    gen = torch.Generator().manual_seed(config.data_seed + 2)
    samples = sampling.sample_completions(model, prompt_ids, n_per_prompt=2, eos_token_id=eos,
                                          max_new_tokens=config.max_completion_len, generator=gen)
    truncated = sum(1 for c in samples if not c or c[-1] != eos)
    samples = [c if c and c[-1] == eos else c + [eos] for c in samples]
    timings["sample_s"] = time.perf_counter() - t
    expanded = [p for p in prompt_ids for _ in range(2)]
    logp = sampling.completion_logps(model, expanded, samples, pad)
    mark = index["*"]
    reward = torch.tensor([keypoint_reward(c, keys_of(p, mark), eos, config.length_penalty)
                           for p, c in zip(expanded, samples)])
    p_a = torch.sigmoid((reward[0::2] - reward[1::2]) / config.label_temperature)  # Bradley-Terry
    a_wins = torch.rand(len(prompt_ids), generator=gen) < p_a

    text = lambda ids: " ".join(vocab[i] for i in ids)  # noqa: E731
    cols: dict[str, list] = {k: [] for k in (
        "prompt", "chosen", "rejected", "prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps",
        "ref_rejected_logps", "ref_chosen_logps_mean", "ref_rejected_logps_mean", "chosen_length",
        "rejected_length", "chosen_reward", "rejected_reward")}
    for i, p in enumerate(prompt_ids):
        jc, jr = (2 * i, 2 * i + 1) if a_wins[i] else (2 * i + 1, 2 * i)
        for side, j in (("chosen", jc), ("rejected", jr)):
            cols[side].append(" " + text(samples[j]))
            cols[f"{side}_ids"].append(samples[j])
            cols[f"ref_{side}_logps"].append(float(logp[j]))
            cols[f"ref_{side}_logps_mean"].append(float(logp[j]) / len(samples[j]))
            cols[f"{side}_length"].append(len(samples[j]))
            cols[f"{side}_reward"].append(float(reward[j]))
        cols["prompt"].append(text(p[1:]))
        cols["prompt_ids"].append(p)
    Dataset.from_dict(cols).save_to_disk(str(out / "train_pairs"))
    (out / "heldout_prompts.json").write_text(json.dumps([[bos] + ids_of(prompt_words(*p)) for p in heldout]))

    rc, rr = torch.tensor(cols["chosen_reward"]), torch.tensor(cols["rejected_reward"])
    timings["total_s"] = time.perf_counter() - t0
    info = {
        "config_hash": config.config_hash(), "vocab_size": len(vocab), "n_params": n_params,
        "sft_loss_first10": sum(losses[:10]) / len(losses[:10]),
        "sft_loss_last10": sum(losses[-10:]) / len(losses[-10:]),
        "sample_reward_mean": float(reward.mean()), "sample_reward_std": float(reward.std()),
        "sample_length_mean": sum(map(len, samples)) / len(samples),
        "truncated_fraction": truncated / len(samples),
        "chosen_higher_fraction": float((rc > rr).float().mean()),
        "tied_fraction": float((rc == rr).float().mean()),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "torch_threads": torch.get_num_threads(),
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=1))  # written last: the "complete" mark
    _log(progress, f"built in {timings['total_s']:.1f}s: SFT loss {info['sft_loss_first10']:.2f} -> "
                   f"{info['sft_loss_last10']:.2f}, sample reward {info['sample_reward_mean']:.2f} "
                   f"+- {info['sample_reward_std']:.2f}, chosen higher {info['chosen_higher_fraction']:.2f}")
