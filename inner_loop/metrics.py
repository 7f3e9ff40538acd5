"""Scores of a trained policy on a task's held-out prompts: gold reward, KL to the reference, win rate.

``evaluate_policy(policy, task)`` samples ``n_samples_per_prompt`` completions per held-out prompt
from the policy (temperature 1, no top-k, no top-p, at most ``task.max_completion_len`` tokens,
stopping at eos), and as many from the reference (the SFT model) with an independent random
stream. It returns a JSON-able dict:

``reward``, ``reward_se``
    mean gold reward of the policy's completions, and its standard error.
``ref_reward``
    the same for the reference's completions (the SFT baseline on the same prompts).
``kl``, ``kl_se``
    KL(pi || pi_ref) of whole completions, computed **exactly per token**: at every prefix of the
    policy's own samples, sum_v pi(v) (log pi(v) - log pi_ref(v)) over the full next-token
    distributions of both models, summed over the completion's tokens (eos included when
    generated), averaged over samples. By the chain rule its expectation is the sequence-level
    KL, with far less variance than the single-sample estimate.
``kl_sample``
    the single-sample estimate of the same: sum over sampled tokens of log pi - log pi_ref.
``kl_per_token``, ``kl_sample_per_token``
    the same divided by the number of completion tokens, pooled over samples
    (sum over all samples and tokens / total tokens).
``kl_ref_pi_per_token``
    exact per-token KL(pi_ref || pi) at the same prefixes (those of the policy's samples), pooled
    per token. Our project brief reads the DiscoPOP paper's IMDb reward-vs-KL plots as using this
    direction averaged per token (not re-checked against the paper's code here), so this is the key
    for that axis; ``kl`` is the usual RLHF constraint.
``kl_direction``
    the sentence "KL(pi||pi_ref), summed over completion tokens", naming what ``kl`` is.
``win_rate``, ``win_rate_se``
    fraction of (prompt, sample index) pairs where the policy's completion has higher gold reward
    than the reference's completion for the same prompt; ties count half. In [0, 1].
``n``, ``n_prompts``, ``n_samples_per_prompt``, ``seed``, ``completion_length``, ``eos_fraction``
``per_prompt``
    ``{"win_rate": [...], "reward": [...], "kl": [...]}``: one value per held-out prompt, in the
    order of ``task.heldout_prompts`` (that prompt's samples averaged), so the mean of each list is
    the aggregate above. Every run on the same task sees the same prompts in the same order, which
    lets :func:`evaluation.compare.difference` pair two objectives prompt by prompt within a seed;
    ``per_prompt["prompt_set"]`` (12 hex digits of sha256 over the prompts' token ids) lets it check
    that. 128 prompts x 3 floats: a few kB of JSON.

Standard errors are over prompts (samples of one prompt are averaged first, then
std / sqrt(n_prompts)), since samples that share a prompt are not independent.

Deterministic given ``seed``: the policy samples with ``torch.Generator().manual_seed(seed)``,
the reference with ``seed + 1_000_003``; the global RNG is not touched.
"""

from __future__ import annotations

import hashlib
import json
import math
import time

import torch

from inner_loop import sampling

KL_DIRECTION = "KL(pi||pi_ref), summed over completion tokens"
REF_SEED_OFFSET = 1_000_003


def _se_over_prompts(values: torch.Tensor, n_prompts: int) -> float:
    per_prompt = values.reshape(n_prompts, -1).mean(1)
    return float(per_prompt.std(unbiased=True) / math.sqrt(n_prompts)) if n_prompts > 1 else float("nan")


def prompt_set(prompts) -> str:
    """12 hex digits naming an ordered list of prompts (token-id lists)."""
    return hashlib.sha256(json.dumps([list(map(int, p)) for p in prompts]).encode()).hexdigest()[:12]


@torch.no_grad()
def kl_along(policy, ref_model, prompts, completions, pad_token_id: int, batch_size: int = 128) -> dict:
    """Per-sample sums over completion tokens: exact KL(pi||ref), exact KL(ref||pi), and the
    single-sample log pi - log ref of the sampled tokens; plus token counts."""
    n = len(prompts)
    out = {k: torch.zeros(n) for k in ("kl", "kl_rev", "kl_sample", "tokens")}
    for rows, ids, attention, mask in sampling.padded_batches(prompts, completions, pad_token_id, batch_size):
        lp, m = sampling.teacher_forced(policy, ids, attention, mask)
        lr, _ = sampling.teacher_forced(ref_model, ids, attention, mask)
        m = m.float()
        kl_tok = (lp.exp() * (lp - lr)).sum(-1)
        rev_tok = (lr.exp() * (lr - lp)).sum(-1)
        target = ids[:, 1:, None]
        sample_tok = (lp.gather(-1, target) - lr.gather(-1, target)).squeeze(-1)
        out["kl"][rows] = (kl_tok * m).sum(-1)
        out["kl_rev"][rows] = (rev_tok * m).sum(-1)
        out["kl_sample"][rows] = (sample_tok * m).sum(-1)
        out["tokens"][rows] = m.sum(-1)
    return out


def evaluate_policy(policy_model, task, n_samples_per_prompt: int = 2, seed: int = 0, ref_model=None,
                    max_completion_len: int | None = None, batch_size: int = 512,
                    threads: int | None = 1) -> dict:
    """Score ``policy_model`` on ``task.heldout_prompts`` (see the module docstring for the keys).

    ``ref_model`` defaults to ``task.load_sft()``. Both models keep their train/eval mode.
    ``threads``: torch intra-op threads while scoring (1: see :mod:`inner_loop.sampling`; None: as is).
    """
    with sampling.torch_threads(threads):
        return _evaluate(policy_model, task, n_samples_per_prompt, seed, ref_model, max_completion_len,
                         batch_size)


def _evaluate(policy_model, task, n_samples_per_prompt, seed, ref_model, max_completion_len,
              batch_size) -> dict:
    t0 = time.perf_counter()
    ref_model = task.load_sft() if ref_model is None else ref_model
    prompts = [list(p) for p in task.heldout_prompts]
    n_prompts, k = len(prompts), n_samples_per_prompt
    max_len = max_completion_len or task.max_completion_len
    eos, pad = task.tokenizer.eos_token_id, task.tokenizer.pad_token_id
    ref_device = next(ref_model.parameters()).device
    policy_device = next(policy_model.parameters()).device
    if ref_device != policy_device:
        raise ValueError(f"policy on {policy_device} but reference on {ref_device}")

    draw = lambda model, s: sampling.sample_completions(  # noqa: E731
        model, prompts, n_per_prompt=k, max_new_tokens=max_len, eos_token_id=eos,
        generator=torch.Generator().manual_seed(s), batch_size=batch_size)
    pi_samples = draw(policy_model, seed)
    ref_samples = draw(ref_model, seed + REF_SEED_OFFSET)
    expanded = [p for p in prompts for _ in range(k)]

    reward = task.gold_reward(pi_samples).float()
    ref_reward = task.gold_reward(ref_samples).float()
    wins = (reward > ref_reward).float() + 0.5 * (reward == ref_reward).float()
    kl = kl_along(policy_model, ref_model, expanded, pi_samples, pad, batch_size=min(batch_size, 256))
    tokens = kl["tokens"].sum().clamp(min=1)
    by_prompt = lambda x: x.reshape(n_prompts, k).mean(1).tolist()  # noqa: E731 - prompt-major samples
    return {
        "reward": float(reward.mean()),
        "reward_se": _se_over_prompts(reward, n_prompts),
        "ref_reward": float(ref_reward.mean()),
        "kl": float(kl["kl"].mean()),
        "kl_se": _se_over_prompts(kl["kl"], n_prompts),
        "kl_sample": float(kl["kl_sample"].mean()),
        "kl_sample_se": _se_over_prompts(kl["kl_sample"], n_prompts),
        "kl_per_token": float(kl["kl"].sum() / tokens),
        "kl_sample_per_token": float(kl["kl_sample"].sum() / tokens),
        "kl_ref_pi_per_token": float(kl["kl_rev"].sum() / tokens),
        "kl_direction": KL_DIRECTION,
        "win_rate": float(wins.mean()),
        "win_rate_se": _se_over_prompts(wins, n_prompts),
        "n": len(pi_samples),
        "n_prompts": n_prompts,
        "n_samples_per_prompt": k,
        "seed": seed,
        "max_completion_len": max_len,
        "completion_length": float(torch.tensor([len(c) for c in pi_samples], dtype=torch.float).mean()),
        "eos_fraction": float(sum(1 for c in pi_samples if c and c[-1] == eos) / len(pi_samples)),
        "seconds": round(time.perf_counter() - t0, 3),
        "per_prompt": {"win_rate": by_prompt(wins), "reward": by_prompt(reward), "kl": by_prompt(kl["kl"]),
                       "prompt_set": prompt_set(prompts)},
    }
