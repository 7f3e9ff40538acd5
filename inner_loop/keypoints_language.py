"""The ``keypoints`` task's language and gold reward: its config, vocabulary, prompts and scoring.

A summarisation-like held-out task for :mod:`inner_loop.keypoints` (which documents it); pure data
and functions with no torch import, so reading the task's defaults (:data:`TRAIN_DEFAULTS`,
``KeypointsConfig().beta``: :func:`inner_loop.tasks.task_defaults`) costs nothing.

A prompt lists ``min_items``-``max_items`` distinct item words, ``min_keys``-``max_keys`` of them
marked key by a ``*`` before them, then ``tl;dr``::

    <s> pear * lamp drum * kite rope tl;dr        keys: lamp, kite

A completion is item words then ``</s>``. Gold reward, from the prompt's key set K and the
completion's tokens before its first eos (all of them when it has none), of which there are L::

    r(y | x) = |K & items(y)| / |K|  -  length_penalty * L      (coverage minus a length penalty)

in [-length_penalty * max_completion_len, 1]; the best completion names exactly the key items
(r = 1 - length_penalty * |K|). A repeated item counts once for coverage, every time for length.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from typing import Sequence

from inner_loop.synthetic_language import BOS, EOS, PAD, SPECIALS, UNK  # noqa: F401 - the same specials

BUILD_VERSION = 1  # bump when the language, reward or build procedure changes: invalidates caches

MARK, SEP = "*", "tl;dr"
ITEMS = ("apple", "pear", "plum", "lemon", "grape", "melon", "peach", "cherry", "lamp", "chair",
         "table", "clock", "mirror", "sofa", "shelf", "rug", "drum", "flute", "harp", "piano",
         "violin", "horn", "bell", "kite", "rope", "boat", "sail", "anchor", "oar", "map", "river",
         "hill", "stone", "cloud", "storm", "snow", "wind", "leaf", "root", "seed", "bird", "fox",
         "wolf", "bear", "owl", "frog", "moth", "crab")


@dataclasses.dataclass(frozen=True)
class KeypointsConfig:
    """Everything that determines a build; ``config_hash()`` names its cache directory."""

    data_seed: int = 0                 # one seed for corpus, model init, SFT, pairs, labels
    n_items: int = 24                  # item words used (max 48)
    min_items: int = 4                 # items listed per prompt
    max_items: int = 6
    min_keys: int = 2                  # of which marked key
    max_keys: int = 3
    sft_key_p: float = 0.65            # SFT completions name each key item with this probability,
    sft_other_p: float = 0.3           # each other item with this one (in prompt order), then eos
    corpus_size: int = 8000            # SFT examples: prompt + completion
    n_layer: int = 3                   # GPT-2 built from config, no pretrained weights
    n_embd: int = 128                  # ~0.6M parameters: several times synthetic's ~0.11M
    n_head: int = 4
    n_positions: int = 32
    sft_steps: int = 500
    sft_batch_size: int = 64
    sft_lr: float = 5e-3               # AdamW, 20 warmup steps, cosine to 10%; loss on completions
    n_train_pairs: int = 2000          # one pair per (unique) training prompt
    max_completion_len: int = 12       # tokens sampled per completion (pairs and evaluation)
    n_heldout_prompts: int = 128       # evaluation prompts, disjoint from training prompts
    length_penalty: float = 0.05       # per completion token (eos excluded)
    label_temperature: float = 0.1     # P(a > b) = sigmoid((r_a - r_b) / label_temperature)
    beta: float = 0.1                  # default KL strength for objectives on this task

    def __post_init__(self):
        if not 1 <= self.min_keys <= self.max_keys <= self.min_items <= self.max_items <= self.n_items <= len(ITEMS):
            raise ValueError(f"need 1 <= min_keys <= max_keys <= min_items <= max_items <= n_items <= {len(ITEMS)}")
        if 2 + self.max_items + self.max_keys + self.max_completion_len + 1 > self.n_positions:
            raise ValueError("prompt + completion does not fit in n_positions")

    def config_hash(self) -> str:
        """12 hex digits of sha256 over the fields and BUILD_VERSION."""
        blob = json.dumps({"build_version": BUILD_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @classmethod
    def with_overrides(cls, **overrides) -> "KeypointsConfig":
        """The default config with ``overrides``; an unknown field raises with the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown keypoints task field(s) {unknown}; known: {sorted(known)}")
        return cls(**overrides)


# TrainConfig defaults on this task: one epoch of the 2000 pairs in 32 steps of 64 at lr 6e-4, linear
# decay to 0, one intra-op thread: the distance synthetic's 2 epochs at 5e-4 travel, in half the steps
# (the model is ~5x larger; a run + scoring stays near 20 s on a shared 2-core machine).
TRAIN_DEFAULTS = {"learning_rate": 6e-4, "batch_size": 64, "num_epochs": 1.0, "threads": 1}


def vocabulary(config: KeypointsConfig) -> list[str]:
    """Token strings in id order: specials first (<pad>=0, <s>=1, </s>=2, <unk>=3), then * and tl;dr."""
    return list(SPECIALS) + [MARK, SEP] + list(ITEMS[:config.n_items])


def prompt_items(rng: random.Random, config: KeypointsConfig) -> tuple[tuple[str, ...], frozenset]:
    """(items in listed order, the key ones)."""
    items = tuple(rng.sample(ITEMS[:config.n_items], rng.randint(config.min_items, config.max_items)))
    keys = frozenset(rng.sample(items, rng.randint(config.min_keys, config.max_keys)))
    return items, keys


def prompt_words(items: Sequence[str], keys) -> list[str]:
    """The prompt's words (without <s>): each key item preceded by *, then tl;dr."""
    words: list[str] = []
    for w in items:
        words += [MARK, w] if w in keys else [w]
    return words + [SEP]


def sft_completion(rng: random.Random, items: Sequence[str], keys, config: KeypointsConfig) -> list[str]:
    """A demonstration: each item kept with sft_key_p (key) or sft_other_p (other), in prompt order."""
    return [w for w in items if rng.random() < (config.sft_key_p if w in keys else config.sft_other_p)]


def keys_of(prompt_ids: Sequence[int], mark_id: int) -> frozenset:
    """The key item ids of a prompt (token ids, with or without <s>): those right after a *."""
    return frozenset(b for a, b in zip(prompt_ids, prompt_ids[1:]) if a == mark_id)


def keypoint_reward(completion: Sequence[int], keys: frozenset, eos_id: int, length_penalty: float) -> float:
    """r = |keys named| / |keys| - length_penalty * (tokens before the first eos)."""
    ids = list(completion)
    body = ids[:ids.index(eos_id)] if eos_id in ids else ids
    coverage = len(keys & set(body)) / len(keys) if keys else 0.0
    return coverage - length_penalty * len(body)


def describe(config: KeypointsConfig) -> str:
    """What the task is, in a few sentences for a proposer's task card."""
    return (f"An embedded summarisation-like task. The policy is a small GPT-2 (about 0.6M parameters) "
            f"that reads a list of {config.min_items}-{config.max_items} item words, some marked key with "
            f"`*`, then `tl;dr`, and writes up to {config.max_completion_len} item words. The gold reward is "
            f"the fraction of key items named minus {config.length_penalty} per token written. Pairs "
            f"({config.n_train_pairs}) are two SFT samples labelled by a noisy Bradley-Terry draw on their "
            f"gold rewards (temperature {config.label_temperature}).")
