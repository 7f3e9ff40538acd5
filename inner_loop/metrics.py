"""Scores of a trained policy on a task's held-out prompts: gold reward, KL to the reference, win rate.

``evaluate_policy(policy, task)`` samples ``n_samples_per_prompt`` completions per held-out prompt
from the policy (temperature 1, no top-k, no top-p, at most ``task.max_completion_len`` tokens,
stopping at eos), and as many from the reference (the SFT model) with the *same* random numbers
(common random numbers, below). It returns a JSON-able dict:

``reward``, ``reward_se``
    mean gold reward of the policy's completions, and its standard error.
``ref_reward``
    the same for the reference's completions (the SFT baseline on the same prompts).
``reward_gain``, ``reward_gain_se``
    ``reward - ref_reward``: the policy's mean gold reward minus the SFT reference's on the same
    prompts, sample index by sample index (so the SFT model itself scores exactly 0; > 0 is
    better), and its standard error over prompts of the paired per-sample differences. A
    continuous fitness: it keeps how much better a completion is, where ``win_rate`` keeps only
    which is better.
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
``kl_samples_per_prompt``
    the KL keys (``kl*``, ``per_prompt["kl"]``) are computed on the first this many samples of each
    prompt (``evaluate_policy(kl_samples_per_prompt=8)`` by default, at most
    ``n_samples_per_prompt``): the exact per-token KL varies little between samples, and its two
    forward passes (policy and reference) over every sample would otherwise cost more than the
    sampling itself; an unbiased estimate of the same KL, with the standard error it reports.
``win_rate``, ``win_rate_se``
    fraction of (prompt, sample index) pairs where the policy's completion has higher gold reward
    than the reference's completion for the same prompt and sample index; ties count half. In
    [0, 1]. The two completions are drawn with the same random numbers (below), so a policy that
    leaves a sample unchanged ties there: the SFT model scores exactly 0.5.
``n``, ``n_prompts``, ``n_samples_per_prompt``, ``seed``, ``completion_length``, ``eos_fraction``
    (the last two over all of the policy's samples)
``per_prompt``
    ``{"win_rate": [...], "reward": [...], "reward_gain": [...], "kl": [...]}``: one value per
    held-out prompt, in the
    order of ``task.heldout_prompts`` (that prompt's samples averaged), so the mean of each list is
    the aggregate above. Every run on the same task sees the same prompts in the same order, which
    lets :func:`evaluation.compare.difference` pair two objectives prompt by prompt within a seed;
    ``per_prompt["prompt_set"]`` (12 hex digits of sha256 over the prompts' token ids) lets it check
    that. 128 prompts x 3 floats: a few kB of JSON.

Standard errors are over prompts (samples of one prompt are averaged first, then
std / sqrt(n_prompts)), since samples that share a prompt are not independent.

**Common random numbers.** Everything random in a score is fixed by ``seed`` (the run's seed) and
shared by every model scored at that seed; the global RNG is not touched:

* sampling is by inverse CDF from uniforms drawn up front from
  ``torch.Generator().manual_seed(seed)`` (:func:`inner_loop.sampling.sample_completions`), one
  row of ``max_completion_len`` uniforms per (prompt, sample index), in an order fixed by the
  prompts, ``n_samples_per_prompt``, ``max_completion_len`` and ``batch_size`` alone, never by
  the model. So two policies scored at the same seed see the same uniforms for every prompt and
  sample index: where their next-token distributions agree they write the same tokens, and the
  difference of their scores is paired down to the sample;
* the reference samples with the same generator seed, so its completions are the same for every
  policy scored at that seed (and, sample for sample, those the policy would write if it were the
  reference): ``reward_gain`` and ``win_rate`` compare the policy with the reference on the same
  random numbers, and the SFT model scores ``reward_gain`` 0 and ``win_rate`` 0.5 exactly.
  ``crn=False`` draws the reference from an independent stream (``seed + REF_SEED_OFFSET``), as
  before issue 10, for comparison (``benchmarks/fitness_resolution.py``).
* training is paired the same way: the trainer hands TRL ``seed=data_seed=`` the run's seed
  (:func:`inner_loop.trainer.dpo_config`), so every objective trained at a seed sees the same
  batches in the same order from the same SFT weights (no dropout; the synthetic task's pairs and
  reference log-probs are fixed by its build); the objectives differ only in their loss.

Standard errors above are within one seed (evaluation noise); the noise from training (another
seed, another data order) is not in them: that is what several training seeds measure.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict
from pathlib import Path

import torch

from inner_loop import sampling

KL_DIRECTION = "KL(pi||pi_ref), summed over completion tokens"
REF_SEED_OFFSET = 1_000_003  # the reference's stream with crn=False
N_SAMPLES_PER_PROMPT = 32    # evaluate_policy's defaults (issue 10: benchmarks/fitness_resolution.py)
KL_SAMPLES_PER_PROMPT = 8


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


def evaluate_policy(policy_model, task, n_samples_per_prompt: int = N_SAMPLES_PER_PROMPT, seed: int = 0,
                    ref_model=None, max_completion_len: int | None = None, batch_size: int = 512,
                    threads: int | None = 1, crn: bool = True,
                    kl_samples_per_prompt: int | None = KL_SAMPLES_PER_PROMPT) -> dict:
    """Score ``policy_model`` on ``task.heldout_prompts`` (see the module docstring for the keys).

    ``ref_model`` defaults to the task's SFT model, loaded once per process and task (its
    completions at a seed are cached too: they are the same for every policy). Both models keep
    their train/eval mode. ``threads``: torch intra-op threads while scoring (1: see
    :mod:`inner_loop.sampling`; None: as is). ``crn``: the reference samples with the policy's
    random numbers (the default; see the module docstring), or, False, with an independent stream.
    ``kl_samples_per_prompt``: the KL keys are computed on the first this many samples of each
    prompt (None: all).
    """
    with sampling.torch_threads(threads):
        return _evaluate(policy_model, task, n_samples_per_prompt, seed, ref_model, max_completion_len,
                         batch_size, crn, kl_samples_per_prompt)


_REFERENCES: OrderedDict = OrderedDict()  # task key -> {"model": SFT model, seed key -> (completions, rewards)}
MAX_CACHED_TASKS, MAX_CACHED_SEEDS = 2, 16


def _reference(task) -> dict | None:
    """The cache entry of ``task``'s own SFT model (None: a task without a path to key it by)."""
    path = getattr(task, "path", None)
    sft = getattr(task, "sft_path", None)
    if path is None or sft is None:
        return None
    try:
        stamp = max(f.stat().st_mtime_ns for f in Path(sft).iterdir())
    except (OSError, ValueError):
        return None
    key = (str(path), stamp)
    if key not in _REFERENCES:
        _REFERENCES[key] = {"model": task.load_sft(), "samples": OrderedDict()}
        while len(_REFERENCES) > MAX_CACHED_TASKS:
            _REFERENCES.popitem(last=False)
    _REFERENCES.move_to_end(key)
    return _REFERENCES[key]


def _evaluate(policy_model, task, n_samples_per_prompt, seed, ref_model, max_completion_len,
              batch_size, crn, kl_samples_per_prompt) -> dict:
    t0 = time.perf_counter()
    cached = _reference(task) if ref_model is None else None
    if ref_model is None:
        ref_model = cached["model"] if cached else task.load_sft()
    prompts = [list(p) for p in task.heldout_prompts]
    n_prompts, k = len(prompts), n_samples_per_prompt
    max_len = max_completion_len or task.max_completion_len
    eos, pad = task.tokenizer.eos_token_id, task.tokenizer.pad_token_id
    ref_device = next(ref_model.parameters()).device
    policy_device = next(policy_model.parameters()).device
    if ref_device != policy_device and cached is not None:  # the task's own SFT copy follows the policy
        ref_model = cached["model"] = ref_model.to(policy_device)
        ref_device = policy_device
    if ref_device != policy_device:
        raise ValueError(f"policy on {policy_device} but reference on {ref_device}")

    draw = lambda model, s: sampling.sample_completions(  # noqa: E731
        model, prompts, n_per_prompt=k, max_new_tokens=max_len, eos_token_id=eos,
        generator=torch.Generator().manual_seed(s), batch_size=batch_size)
    pi_samples = draw(policy_model, seed)
    ref_seed = seed if crn else seed + REF_SEED_OFFSET
    ref_key = (ref_seed, k, max_len, batch_size)
    if cached and ref_key in cached["samples"]:
        ref_samples, ref_reward = cached["samples"][ref_key]
    else:
        ref_samples = draw(ref_model, ref_seed)
        ref_reward = task.gold_reward(ref_samples).float()
        if cached:
            cached["samples"][ref_key] = (ref_samples, ref_reward)
            while len(cached["samples"]) > MAX_CACHED_SEEDS:
                cached["samples"].popitem(last=False)
    reward = task.gold_reward(pi_samples).float()
    wins = (reward > ref_reward).float() + 0.5 * (reward == ref_reward).float()
    gain = reward - ref_reward
    k_kl = k if kl_samples_per_prompt is None else max(1, min(k, int(kl_samples_per_prompt)))
    rows = [i * k + j for i in range(n_prompts) for j in range(k_kl)]  # the first k_kl of each prompt
    kl = kl_along(policy_model, ref_model, [prompts[i // k] for i in rows], [pi_samples[i] for i in rows], pad,
                  batch_size=min(batch_size, 256))
    tokens = kl["tokens"].sum().clamp(min=1)
    by_prompt = lambda x, n=k: x.reshape(n_prompts, n).mean(1).tolist()  # noqa: E731 - prompt-major samples
    return {
        "reward": float(reward.mean()),
        "reward_se": _se_over_prompts(reward, n_prompts),
        "ref_reward": float(ref_reward.mean()),
        "reward_gain": float(gain.mean()),
        "reward_gain_se": _se_over_prompts(gain, n_prompts),
        "kl": float(kl["kl"].mean()),
        "kl_se": _se_over_prompts(kl["kl"], n_prompts),
        "kl_samples_per_prompt": k_kl,
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
        "per_prompt": {"win_rate": by_prompt(wins), "reward": by_prompt(reward), "reward_gain": by_prompt(gain),
                       "kl": by_prompt(kl["kl"], k_kl), "prompt_set": prompt_set(prompts)},
    }
