"""The synthetic task's language and gold reward: its config, vocabulary, review grammar and scoring.

Pure data and functions, shared by the task (:mod:`inner_loop.synthetic`, which documents them) and
its build (:mod:`inner_loop.synthetic_build`); both import this module and it imports neither. It
imports no torch until a reward is computed, so reading the task's defaults (:data:`TRAIN_DEFAULTS`,
``SyntheticConfig().beta``: :func:`inner_loop.tasks.task_defaults`) costs nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import sys
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch

BUILD_VERSION = 2  # bump when the grammar, reward or build procedure changes: invalidates caches

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PAD, BOS, EOS, UNK = SPECIALS
POSITIVE = ("great", "wonderful", "brilliant", "superb", "moving", "delightful", "charming",
            "gripping", "beautiful", "clever", "fresh", "powerful", "enjoyable", "excellent",
            "memorable", "funny", "warm", "lovely", "touching", "stunning")
NEGATIVE = ("terrible", "boring", "awful", "dull", "bland", "clumsy", "tedious", "weak", "messy",
            "lifeless", "predictable", "painful", "forgettable", "shallow", "flat", "annoying",
            "confusing", "stale", "silly", "ugly")
NEUTRAL_ADJ = ("long", "short", "quiet", "dark", "loud", "slow", "typical", "strange", "simple",
               "familiar", "old", "new")
NOUNS = ("film", "movie", "plot", "story", "acting", "cast", "director", "script", "ending",
         "soundtrack", "camera", "dialogue", "pacing", "score", "characters", "lead", "villain",
         "hero", "premise", "effects", "music", "humor", "setting", "sequel")
NEGATOR = "not"
INTENSIFIERS = ("very", "really", "truly")
HEDGES = ("quite", "rather", "somewhat")
FUNCTION = ("the", "a", "was", "is", "were", "and", "but", "i", "it", "found", "this", "overall",
            "watched", "last", "night", "on", "tv", "with", "friends", "at", "home", "runs",
            "about", "two", "hours", "one", "of", "films", "year", "left", "me", "feeling", "just",
            ".", ",")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines a build; ``config_hash()`` names its cache directory."""

    data_seed: int = 0                   # one seed for corpus, model init, SFT, pairs, labels
                                         # (not run_candidate's training seed)
    n_sentiment_words: int = 20          # positive words used, and as many negative (max 20)
    n_nouns: int = 24                    # nouns used (max 24)
    polarity_concentration: float = 0.6  # a of the Beta(a, a) review polarity; < 1: U-shaped
    corpus_size: int = 6000              # SFT reviews
    n_layer: int = 2                     # GPT-2 built from config, no pretrained weights
    n_embd: int = 64
    n_head: int = 4
    n_positions: int = 64                # SFT reviews are cut to this many tokens
    sft_steps: int = 300
    sft_batch_size: int = 64
    sft_lr: float = 3e-3                 # AdamW, 20 warmup steps, cosine to 10%
    n_train_pairs: int = 2000            # one pair per (unique) training prompt
    prompt_min_words: int = 3            # prompt = <s> + the first 3-6 words of a review
    prompt_max_words: int = 6
    max_completion_len: int = 24         # tokens sampled per completion (pairs and evaluation)
    n_heldout_prompts: int = 128         # evaluation prompts, disjoint from training prompts
    reward_scale: float = 2.0            # r = sigmoid(s / reward_scale)
    label_temperature: float = 0.1       # P(a > b) = sigmoid((r_a - r_b) / label_temperature)
    beta: float = 0.1                    # default KL strength for objectives on this task

    def __post_init__(self):
        if not 1 <= self.n_sentiment_words <= len(POSITIVE) or not 1 <= self.n_nouns <= len(NOUNS):
            raise ValueError(f"n_sentiment_words <= {len(POSITIVE)} and n_nouns <= {len(NOUNS)}")
        if not 1 <= self.prompt_min_words <= self.prompt_max_words:
            raise ValueError("need 1 <= prompt_min_words <= prompt_max_words")
        if self.prompt_max_words + 1 + self.max_completion_len + 1 > self.n_positions:
            raise ValueError("prompt + completion does not fit in n_positions")

    def config_hash(self) -> str:
        """12 hex digits of sha256 over the fields and BUILD_VERSION."""
        blob = json.dumps({"build_version": BUILD_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @classmethod
    def with_overrides(cls, **overrides) -> "SyntheticConfig":
        """The default config with ``overrides``; an unknown field raises with the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown synthetic task field(s) {unknown}; known: {sorted(known)}")
        return cls(**overrides)


# TrainConfig defaults on this task (the task's ``train_defaults``): two epochs over the 2000 pairs in
# 64 steps of 64 at lr 5e-4, decaying linearly to 0 (TrainConfig's lr_scheduler): the same distance
# travelled as one epoch at 1e-3 (DPO's gain over SFT is about the same), with half the SGD noise per
# step, so that the policy an objective ends with depends less on the data order; issue 10 measured it
# (benchmarks/fitness_resolution.py): the per-seed IPO - DPO difference in reward_gain varies about half
# as much. One intra-op thread while training, since the model's ops are too small to gain from more
# and, on a shared 2-core machine, two spinning OpenMP threads made a step 8x slower.
# (Scoring's threads are evaluate_policy's ``threads``, 1 by default, for the same reason.)
TRAIN_DEFAULTS = {"learning_rate": 5e-4, "batch_size": 64, "num_epochs": 2.0, "threads": 1}

# --- the language -------------------------------------------------------------------------------

def vocabulary(config: SyntheticConfig) -> list[str]:
    """Token strings in id order: specials first (<pad>=0, <s>=1, </s>=2, <unk>=3)."""
    k = config.n_sentiment_words
    words = (POSITIVE[:k] + NEGATIVE[:k] + NEUTRAL_ADJ + NOUNS[:config.n_nouns] + (NEGATOR,)
             + INTENSIFIERS + HEDGES + FUNCTION)
    assert len(set(words)) == len(words), "a word is listed twice"
    return list(SPECIALS) + list(words)


def _adjective(rng: random.Random, p: float, k: int) -> list[str]:
    """One adjective slot: neutral (0.2), else positive meaning with probability p."""
    if rng.random() < 0.2:
        return ([rng.choice(HEDGES)] if rng.random() < 0.3 else []) + [rng.choice(NEUTRAL_ADJ)]
    positive = rng.random() < p
    if rng.random() < 0.12:  # "not boring" means positive
        return [NEGATOR, rng.choice(NEGATIVE[:k] if positive else POSITIVE[:k])]
    word = rng.choice(POSITIVE[:k] if positive else NEGATIVE[:k])
    r = rng.random()
    if r < 0.25:
        return [rng.choice(INTENSIFIERS), word]
    if r < 0.40:
        return [rng.choice(HEDGES), word]
    return [word]


def _clause(rng: random.Random, p: float, config: SyntheticConfig) -> list[str]:
    k = config.n_sentiment_words
    n = lambda: rng.choice(NOUNS[:config.n_nouns])  # noqa: E731
    a = lambda q=p: _adjective(rng, q, k)  # noqa: E731
    template = rng.randrange(10)
    if template == 0:
        return ["the", n(), "was", *a(), "."]
    if template == 1:
        return ["i", "found", "the", n(), *a(), "."]
    if template == 2:
        return ["the", n(), "and", "the", n(), "were", *a(), "."]
    if template == 3:
        return ["the", n(), "is", *a(), "but", "the", n(), "is", *a(1 - p), "."]
    if template == 4:
        return ["overall", "it", "was", "a", *a(), n(), "."]
    if template == 5:
        return ["a", *a(), n(), "with", "a", *a(), n(), "."]
    if template == 6:
        return ["i", "watched", "it", *rng.choice([["last", "night"], ["on", "tv"], ["with", "friends"],
                                                   ["at", "home"]]), "."]
    if template == 7:
        return ["it", "runs", "about", "two", "hours", "."]
    if template == 8:
        return ["it", "left", "me", "feeling", *a(), "."]
    return ["just", "one", "of", "the", *a(), "films", "of", "the", "year", "."]


def review(rng: random.Random, config: SyntheticConfig) -> list[str]:
    """One review as words (no specials): latent polarity, then 2-3 clauses."""
    a = config.polarity_concentration
    p = rng.betavariate(a, a)
    words: list[str] = []
    for _ in range(rng.choices((2, 3), weights=(0.6, 0.4))[0]):
        words += _clause(rng, p, config)
    return words


def prompt_words(rng: random.Random, config: SyntheticConfig) -> tuple[str, ...]:
    """The opening of a fresh review, 3-6 words, never ending on a modifier (not/very/quite...)."""
    words = review(rng, config)
    n = rng.randint(config.prompt_min_words, config.prompt_max_words)
    cut = words[:n]
    while len(cut) > 1 and cut[-1] in (NEGATOR, *INTENSIFIERS, *HEDGES):
        cut = cut[:-1]
    return tuple(cut)


# --- gold reward --------------------------------------------------------------------------------

def reward_tables(vocab: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, m) over token ids: word weight and the multiplier it applies to the next word."""
    import torch
    pos, neg = set(POSITIVE), set(NEGATIVE)
    w = torch.tensor([1.0 if t in pos else -1.0 if t in neg else 0.0 for t in vocab])
    m = torch.tensor([-1.0 if t == NEGATOR else 2.0 if t in INTENSIFIERS else 1.0 for t in vocab])
    return w, m


def sentiment_score(completions, w: torch.Tensor, m: torch.Tensor, eos_id: int) -> torch.Tensor:
    """s(y) for each completion (token-id lists or a [N, T] tensor); tokens after eos do not count."""
    import torch
    if not isinstance(completions, torch.Tensor):
        width = max([len(c) for c in completions] + [1])
        ids = torch.full((len(completions), width), eos_id, dtype=torch.long)
        for i, c in enumerate(completions):
            ids[i, :len(c)] = torch.as_tensor(list(c), dtype=torch.long)
    else:
        ids = completions.long().cpu()
    alive = (ids == eos_id).long().cumsum(-1) == 0  # before the first eos
    mult = torch.ones_like(ids, dtype=torch.float32)
    mult[:, 1:] = m[ids[:, :-1]]
    return (w[ids] * mult * alive).sum(-1)


def log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[synthetic] {msg}", file=sys.stderr, flush=True)


def describe(config: SyntheticConfig) -> str:
    """What the task is, in a few sentences for a proposer's task card (no numbers of training: the
    campaign adds those)."""
    return (f"An embedded sentiment task. The policy is a small GPT-2 (about 0.11M parameters, trained "
            f"here from scratch as the SFT model) that continues short movie-review openings "
            f"({config.prompt_min_words}-{config.prompt_max_words} words) "
            f"with up to {config.max_completion_len} tokens of review text. A hidden gold reward scores each "
            "completion's sentiment in [0, 1] (positive words raise it, negative words lower it, `not` "
            "flips the next word's sentiment and an intensifier doubles it). The preference pairs "
            f"({config.n_train_pairs}, one per training prompt) are two SFT samples labelled by a noisy "
            f"Bradley-Terry draw on their gold rewards (temperature {config.label_temperature}): many labels "
            "are wrong, and near-ties are coin flips. Evaluation samples completions for "
            f"{config.n_heldout_prompts} held-out prompts from the trained policy and from the SFT model "
            "with the same random numbers and compares their gold rewards.")
