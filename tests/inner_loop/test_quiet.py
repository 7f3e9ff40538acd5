"""What ``disco train`` prints for a person: every metric with its definition, TRL's keys under trl/,
no per-prompt arrays; ``--quiet`` keeps the run's own prints off the terminal; sampling passes an
attention mask and the current cache keyword (no transformers warning); the CLI's warning filters."""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings

import pytest
import torch

import inner_loop.runner
from discovery import cli
from discovery.cli import main
from inner_loop.glossary import GLOSSARY, TRL_NOTE, define

# what inner_loop.metrics.evaluate_policy returns (values of the synthetic task's dpo run, seed 0)
METRICS = {"reward": 0.5601, "reward_se": 0.0123, "ref_reward": 0.5007, "kl": 5.3201, "kl_se": 0.2408,
           "kl_sample": 5.5661, "kl_sample_se": 0.3566, "kl_per_token": 0.2853, "kl_sample_per_token": 0.2985,
           "kl_ref_pi_per_token": 0.1802, "kl_direction": "KL(pi||pi_ref), summed over completion tokens",
           "win_rate": 0.6035, "win_rate_se": 0.0278, "n": 256, "n_prompts": 128, "n_samples_per_prompt": 2,
           "seed": 0, "max_completion_len": 24, "completion_length": 18.6484, "eos_fraction": 0.9102,
           "seconds": 0.611, "per_prompt": {"win_rate": [0.75, 0.25] * 64, "reward": [0.123456] * 128,
                                            "kl": [5.4321] * 128, "prompt_set": "abcdef012345"}}


@dataclasses.dataclass
class Result:
    status: str = "done"
    reason: str | None = None
    metrics: dict | None = None
    losses: list = dataclasses.field(default_factory=lambda: [0.6931, 0.65])
    steps: int = 32
    seconds: dict = dataclasses.field(default_factory=lambda: {"train": 3.2, "eval": 0.6, "total": 4.2})

    def to_dict(self):
        return dataclasses.asdict(self)


def fake_runner(metrics, chatter=False):
    def run(objective, **kw):
        if chatter:  # what the Trainer and the libraries print during a run
            print({"loss": "0.6978", "rewards/chosen": "-0.2629"})
            print("[transformers] some library chatter", file=sys.stderr)
        return Result(metrics=dict(metrics))
    return run


def test_train_defines_every_metric_where_it_is_shown_and_prints_no_arrays(capsys, monkeypatch):
    monkeypatch.setattr(inner_loop.runner, "run_candidate", fake_runner(METRICS))
    assert main(["train", "--objective", "dpo"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for key in ("reward", "ref_reward", "kl", "kl_sample", "kl_per_token", "kl_ref_pi_per_token", "win_rate",
                "completion_length", "eos_fraction"):
        line = next(x for x in lines if x.split() and x.split()[0] == key)
        assert define(key)[:30] in " ".join(line.split()), (key, line)  # its definition, on its line
    win = next(x for x in lines if x.startswith("win_rate"))
    assert "0.6035 ± 0.0278" in win  # the standard error folded in, not a row of its own
    assert not any(x.split() and x.split()[0] in ("win_rate_se", "seed", "n", "n_prompts", "per_prompt")
                   for x in lines)
    assert "128 held-out prompts x 2 samples" in out and "sampling seed 0" in out
    assert 'README.md, section "Metrics"' in out
    assert "0.75, 0.25" not in out and "0.123456" not in out  # per-prompt arrays: --json / result.json only
    assert "per-prompt values: --json" in out


def test_train_json_keeps_the_per_prompt_arrays(capsys, monkeypatch):
    import json
    monkeypatch.setattr(inner_loop.runner, "run_candidate", fake_runner(METRICS))
    assert main(["train", "--objective", "dpo", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["per_prompt"]["win_rate"][:2] == [0.75, 0.25]


def test_trl_log_keys_are_never_shown_unlabelled(capsys, monkeypatch):
    # metrics that are a TRL training-log row (an older recipe result.json's)
    trl_row = {"loss": 0.69, "rewards/chosen": -0.22, "rewards/margins": 0.04, "logps/chosen": -25.3, "epoch": 1.0}
    monkeypatch.setattr(inner_loop.runner, "run_candidate", fake_runner(trl_row))
    assert main(["train", "--objective", "dpo"]) == 0
    out = capsys.readouterr().out
    assert "trl/rewards/chosen" in out and "trl/loss" in out
    assert " ".join(TRL_NOTE.split()) in " ".join(out.split())
    assert all(x.startswith("trl/") for x in out.splitlines() if "rewards/" in x or "logps/" in x
               if not x.startswith(("trl/*", "  ")))


def test_quiet_train_sends_the_runs_own_prints_to_its_log(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(inner_loop.runner, "run_candidate", fake_runner(METRICS, chatter=True))
    assert main(["train", "--objective", "dpo", "--quiet", "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "rewards/chosen" not in captured.out and "chatter" not in captured.out
    assert captured.out.startswith("status   done")
    log = (tmp_path / "run" / "train.log").read_text()
    assert "'rewards/chosen'" in log and "library chatter" in log
    assert main(["train", "--objective", "dpo", "--quiet", "--json"]) == 0  # no folder: dropped
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.startswith("{")


def test_show_lists_metric_means_with_definitions_and_not_the_seed(tmp_path, capsys):
    from discovery.archive import Archive
    from discovery.config import CampaignConfig
    from discovery.training import summarise
    per_seed = [{"seed": s, "status": "done", "losses": [0.7, 0.6], "metrics": {**METRICS, "seed": s}}
                for s in (0, 1)]
    with Archive.create(tmp_path / "c", CampaignConfig().to_dict()) as a:
        cid = a.add(kind="candidate", name="steep", code="def steep(rho, beta):\n    return -F.logsigmoid(rho)\n")
        a.update(cid, status="done", metrics=summarise(per_seed), fitness=0.6035, fitness_se=0.0)
    assert main(["show", str(tmp_path / "c"), str(cid)]) == 0
    out = capsys.readouterr().out
    section = out.split("metrics (mean over", 1)[1]
    assert section.startswith(" 2 seed(s): 0, 1)")
    for bad in ("seed:", "  seed ", "  n ", "n_prompts", "n_samples_per_prompt", "max_completion_len", "0.5\n"):
        assert bad not in section, bad  # the seed used to be averaged in as "seed: 0.5"
    win = next(x for x in section.splitlines() if x.strip().startswith("win_rate"))
    assert define("win_rate")[:30] in " ".join(win.split())


# -- sampling: the attention mask and the cache keyword ------------------------------------------

def tiny_gpt2(pad_is_eos=True):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=12, n_positions=32, n_embd=16, n_layer=2, n_head=2, eos_token_id=11,
                        bos_token_id=11, pad_token_id=11 if pad_is_eos else None)
    return GPT2LMHeadModel(config).eval()


def test_sampling_passes_an_attention_mask_and_the_current_cache_keyword():
    from inner_loop import sampling
    model = tiny_gpt2()
    calls = []

    def hook(module, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        calls.append({**kwargs, "past": cache.get_seq_length() if cache is not None else 0})

    model.register_forward_pre_hook(hook, with_kwargs=True)
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8], [1, 1]]
    out = sampling.sample_completions(model, prompts, max_new_tokens=8, eos_token_id=11, n_per_prompt=3,
                                      generator=torch.Generator().manual_seed(0))
    assert len(out) == 12 and calls
    for kw in calls:
        mask = kw.get("attention_mask")
        assert mask is not None and bool((mask == 1).all())
        assert mask.shape[1] == kw["input_ids"].shape[1] + kw["past"]
    forward_params = __import__("inspect").signature(model.forward).parameters
    if "cache" in forward_params:  # transformers 5.x: past_key_values is a deprecated alias that warns
        assert not any("past_key_values" in kw for kw in calls)
        assert any(kw.get("cache") is not None for kw in calls)
    again = sampling.sample_completions(model, prompts, max_new_tokens=8, eos_token_id=11, n_per_prompt=3,
                                        generator=torch.Generator().manual_seed(0))
    assert again == out


def test_sampling_with_the_mask_matches_sampling_without_the_cache():
    """The explicit all-ones mask and the cache change nothing sampled: the same tokens as a plain
    full forward at every step with the same uniforms."""
    from inner_loop import sampling
    model = tiny_gpt2()
    prompts = [[1, 2, 3], [4, 5, 6]]
    u = torch.rand(2, 8, generator=torch.Generator().manual_seed(3))
    got = sampling._sample_batch(model, torch.tensor(prompts), u, 11)
    want = []
    with torch.no_grad():
        for row, uu in zip(prompts, u):
            seq, completion = list(row), []
            for t in range(8):
                probs = model(input_ids=torch.tensor([seq])).logits[0, -1].float().softmax(-1)
                cdf = probs.cumsum(-1)
                nxt = int(torch.searchsorted(cdf, (uu[t:t + 1] * cdf[-1:]).contiguous()).clamp(max=11))
                completion.append(nxt)
                seq.append(nxt)
                if nxt == 11:
                    break
            want.append(completion)
    assert got == want


# -- the CLI's warning filters ------------------------------------------------------------------

def test_cli_filters_the_gradient_checkpointing_future_warning_only(tmp_path, monkeypatch):
    from transformers import TrainingArguments
    monkeypatch.delenv("PYTHONWARNINGS", raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cli.quiet_library_warnings()
        TrainingArguments(output_dir=str(tmp_path), gradient_checkpointing=True, report_to="none")
        warnings.warn("something else about to change", FutureWarning)
    texts = [str(w.message) for w in seen]
    assert not any("gradient_checkpointing" in t for t in texts), texts
    assert "something else about to change" in texts  # not a blanket ignore
    assert "gradient_checkpointing" in os.environ["PYTHONWARNINGS"]  # the training jobs inherit it


@pytest.mark.parametrize("command", ["train", "compare", "sweep", "heldout", "run", "resume"])
def test_every_long_command_has_quiet(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--quiet" in capsys.readouterr().out
