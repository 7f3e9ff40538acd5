"""One line per metric the project prints: the one place their definitions live.

``disco train``, ``disco show``, the HTML report and the README's glossary section all take their
wording from :data:`GLOSSARY`. The long form of each definition is the docstring of
:mod:`inner_loop.metrics`. TRL's own log keys (``rewards/chosen`` and friends) mean something else
(beta times the log-ratio on the *training* pairs, not the gold reward of sampled completions) and
are shown only under the ``trl/`` prefix, with :data:`TRL_NOTE`.
"""

from __future__ import annotations

GLOSSARY: dict[str, str] = {
    "fitness": "what the campaign ranks by: the mean over training seeds of the configured metric "
               "(by default reward_gain over 5 seeds; a candidate is first screened on one seed)",
    "win_rate": "share of held-out (prompt, sample) pairs where the policy's completion has a higher gold "
                "reward than the SFT model's completion for the same prompt and sample index, both drawn with "
                "the same random numbers; ties count half; 0.5 = no change (the SFT model scores 0.5 exactly)",
    "win_rate_se": "standard error of win_rate over held-out prompts (one seed's evaluation noise only)",
    "reward": "mean gold reward (the task's own scorer: in [0, 1] on synthetic, [-0.6, 1] on keypoints) of the policy's sampled completions",
    "reward_se": "standard error of reward over held-out prompts",
    "ref_reward": "mean gold reward of the SFT (reference) model's completions on the same prompts",
    "reward_gain": "reward - ref_reward: the policy's mean gold reward minus the SFT model's on the same prompts "
                   "and random numbers; 0 = no change (the SFT model scores 0 exactly), > 0 is better",
    "reward_gain_se": "standard error of reward_gain over held-out prompts (one seed's evaluation noise only)",
    "kl": "KL(pi || pi_ref) of whole completions, exact per token from both next-token distributions, "
          "summed over completion tokens; the usual RLHF constraint",
    "kl_se": "standard error of kl over held-out prompts",
    "kl_samples_per_prompt": "the kl keys are computed on the first this many samples of each held-out prompt",
    "kl_sample": "single-sample estimate of kl: sum over sampled tokens of log pi - log pi_ref",
    "kl_per_token": "kl divided by the number of completion tokens (pooled over samples)",
    "kl_sample_per_token": "kl_sample divided by the number of completion tokens (pooled over samples)",
    "kl_ref_pi_per_token": "exact KL(pi_ref || pi) per completion token at the policy's own prefixes "
                           "(the axis of the paper's IMDb reward-vs-KL plots, as we read it)",
    "completion_length": "mean number of tokens the policy generated per completion",
    "eos_fraction": "share of the policy's completions that ended with the end-of-sequence token",
    "n": "number of (prompt, sample) pairs scored",
    "n_prompts": "number of held-out prompts",
    "n_samples_per_prompt": "completions sampled per held-out prompt",
    "seed": "the training and sampling seed of this run",
}

TRL_NOTE = ("trl/* keys are TRL's training logs: trl/rewards/* is beta * log(pi/pi_ref) on the training "
            "pairs, not the gold reward above")


def define(key: str) -> str:
    """The one-line definition of ``key`` (a ``trl/`` key gets :data:`TRL_NOTE`), or "" if unknown."""
    if key.startswith("trl/"):
        return TRL_NOTE
    return GLOSSARY.get(key, "")


def markdown() -> str:
    """The glossary as a Markdown list (the README's section is this text)."""
    return "\n".join(f"- `{k}`: {v}" for k, v in GLOSSARY.items()) + f"\n- {TRL_NOTE}\n"
