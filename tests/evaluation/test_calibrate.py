"""evaluation.calibrate / `disco calibrate`: the noise floor, checked against numbers worked by hand."""

import json
import math
import re

import pytest

from discovery.cli import main
from discovery.config import CampaignConfig
from evaluation import analysis_commands
from evaluation.calibrate import Z_80, Z_975, calibrate, format_calibration, noise
from evaluation.compare import Run, Setting
from tests.evaluation.fakes import FakeRunner

KEYS = {"metric", "task", "seeds", "n_seeds", "campaign_seeds", "within_seed_se", "seed_sd", "paired_sd",
        "paired_se", "min_detectable", "effect_over_sft", "half_width_ratio", "per_seed"}


def run(objective, seed, win, se, **extra):
    return Run(objective, Setting(seed=seed), "done", metrics={"win_rate": win, "win_rate_se": se, **extra})


# dpo 0.60 0.64 0.59, ipo 0.58 0.60 0.60: differences (in hundredths) 2, 4, -1
RUNS = [run("dpo", 0, 0.60, 0.02), run("ipo", 0, 0.58, 0.03),
        run("dpo", 1, 0.64, 0.02), run("ipo", 1, 0.60, 0.03),
        run("dpo", 2, 0.59, 0.04), run("ipo", 2, 0.60, 0.03)]


def test_the_noise_numbers_by_hand():
    d = noise(RUNS, "win_rate", ["dpo", "ipo"], campaign_seeds=4)
    assert KEYS - {"task"} <= set(d)
    assert d["seeds"] == [0, 1, 2] and d["n_seeds"] == 3 and d["n_paired_seeds"] == 3 and d["campaign_seeds"] == 4
    assert d["within_seed_se"] == pytest.approx((0.02 + 0.03 + 0.02 + 0.03 + 0.04 + 0.03) / 6)
    # dpo: 60, 64, 59 -> mean 61, squared deviations 1 + 9 + 4 = 14, / (3 - 1) = 7
    assert d["seed_sd"] == pytest.approx(0.01 * math.sqrt(7))
    # differences 2, 4, -1 -> mean 5/3, squared deviations (1 + 49 + 64) / 9 = 114/9, / 2 = 19/3
    assert d["paired_mean"] == pytest.approx(0.01 * 5 / 3)
    assert d["paired_sd"] == pytest.approx(0.01 * math.sqrt(19 / 3))
    se = 0.01 * math.sqrt(19 / 3) / math.sqrt(4)
    assert d["paired_se"] == pytest.approx(se)
    assert (Z_975, Z_80) == pytest.approx((1.959964, 0.841621), abs=1e-6)
    assert d["min_detectable"] == pytest.approx((1.959964 + 0.841621) * se, rel=1e-6)
    assert d["half_width"] == pytest.approx(1.959964 * se, rel=1e-6)
    assert d["half_width_t"] == pytest.approx(3.182446 * se, rel=1e-6)  # t(0.975, 3 df)
    # win rate: SFT scores 0.5; dpo's mean 0.61 -> effect 0.11
    assert d["effect_over_sft"] == pytest.approx(0.11)
    assert d["half_width_ratio"] == pytest.approx(1.959964 * se / 0.11, rel=1e-6)
    # no per-prompt outcomes: the evaluation part of a difference is sqrt(se_a^2 + se_b^2)
    assert d["within_seed_paired_se"] == pytest.approx(
        (math.hypot(0.02, 0.03) * 2 + math.hypot(0.04, 0.03)) / 3)
    assert "independent" in d["what"]["within_seed_paired_se"]
    assert d["per_seed"][1] == {"seed": 1, "values": {"dpo": 0.64, "ipo": 0.60}, "se": {"dpo": 0.02, "ipo": 0.03},
                                "failed": {}, "sft": 0.5, "diff": pytest.approx(0.04),
                                "effect_over_sft": pytest.approx(0.14)}
    assert "3 seeds" in d["what"]["paired_sd"] and "6 runs" in d["what"]["within_seed_se"]
    json.dumps(d, allow_nan=False)  # strict JSON as it stands


def test_the_standard_error_scales_with_the_campaigns_seed_count():
    one = noise(RUNS, "win_rate", ["dpo", "ipo"], campaign_seeds=1)
    nine = noise(RUNS, "win_rate", ["dpo", "ipo"], campaign_seeds=9)
    assert one["paired_se"] == pytest.approx(one["paired_sd"]) and one["half_width_t"] is None
    assert nine["paired_se"] == pytest.approx(one["paired_sd"] / 3)
    assert nine["min_detectable"] == pytest.approx(one["min_detectable"] / 3)


def test_per_prompt_outcomes_give_the_paired_evaluation_error():
    a = run("dpo", 0, 0.5, 0.1, per_prompt={"win_rate": [1.0, 0.0, 1.0, 1.0], "prompt_set": "p"})
    b = run("ipo", 0, 0.5, 0.1, per_prompt={"win_rate": [0.0, 0.0, 1.0, 0.0], "prompt_set": "p"})
    c = run("dpo", 1, 0.5, 0.1)
    e = run("ipo", 1, 0.4, 0.1)
    d = noise([a, b, c, e], "win_rate", ["dpo", "ipo"], campaign_seeds=1)
    # seed 0: per-prompt differences 1, 0, 0, 1: sd sqrt(1/3), / sqrt(4); seed 1: hypot(0.1, 0.1)
    assert d["within_seed_paired_se"] == pytest.approx((math.sqrt(1 / 3) / 2 + math.hypot(0.1, 0.1)) / 2)
    assert "mixed" in d["what"]["within_seed_paired_se"]


def test_reward_takes_sfts_score_from_the_runs_ref_reward_and_an_unknown_metric_has_none():
    runs = [run("dpo", s, 0.6, 0.02, reward=r, reward_se=0.01, ref_reward=ref, other=1.0)
            for s, r, ref in ((0, 0.9, 0.5), (1, 1.0, 0.7))]
    runs += [run("ipo", s, 0.6, 0.02, reward=r, ref_reward=ref + 0.1, other=2.0)
             for s, r, ref in ((0, 0.8, 0.5), (1, 0.95, 0.7))]
    d = noise(runs, "reward", ["dpo", "ipo"], campaign_seeds=1)
    # SFT per seed: mean of the seed's ref_reward (0.55, 0.75); dpo - SFT = 0.35, 0.25
    assert [r["sft"] for r in d["per_seed"]] == pytest.approx([0.55, 0.75])
    assert d["effect_over_sft"] == pytest.approx(0.30)
    other = noise(runs, "other", ["dpo", "ipo"], campaign_seeds=1)
    assert other["effect_over_sft"] is None and other["half_width_ratio"] is None
    assert any("no SFT score" in n for n in other["notes"])
    assert other["within_seed_se"] is None  # no other_se reported


def test_a_failed_run_leaves_its_seed_out_of_the_pairing_and_is_listed():
    runs = RUNS[:4] + [Run("dpo", Setting(seed=2), "failed", "non-finite loss"), RUNS[5]]
    d = noise(runs, "win_rate", ["dpo", "ipo"], campaign_seeds=1)
    assert d["n_paired_seeds"] == 2 and d["paired_sd"] == pytest.approx(abs(0.02 - 0.04) / math.sqrt(2))
    assert d["per_seed"][2]["failed"] == {"dpo": "non-finite loss"} and "diff" not in d["per_seed"][2]
    assert any("from 2 seeds only" in n for n in d["notes"])
    lonely = noise(RUNS[:2], "win_rate", ["dpo", "ipo"], campaign_seeds=1)
    assert lonely["paired_sd"] is None and lonely["min_detectable"] is None
    text = format_calibration({**lonely, "task": "synthetic", "beta": None})
    assert "only 1 seed where both dpo and ipo finished: no paired sd" in text
    assert re.search(r"smallest detectable difference\s+—  ", text)


def test_calibrate_trains_every_objective_on_every_seed_with_the_campaigns_settings():
    fake = FakeRunner()
    d = calibrate("synthetic", [0, 1, 2], (("max_steps", 4),), "win_rate", runner=fake)
    assert KEYS <= set(d) and d["command"] == "calibrate"
    assert [(c["objective"], c["seed"]) for c in fake.calls] == [(o, s) for s in (0, 1, 2) for o in ("dpo", "ipo")]
    defaults = CampaignConfig()
    assert all(c["max_steps"] == 4 and c["beta"] == defaults.training.beta for c in fake.calls)
    assert d["campaign_seeds"] == len(defaults.training.seeds)
    # the fake: dpo - ipo = 0.05 on every seed (a shared seed effect), so the paired sd is 0
    assert d["paired_mean"] == pytest.approx(0.05) and d["paired_sd"] == pytest.approx(0.0, abs=1e-12)
    assert d["seed_sd"] > 0.02 and d["effect_over_sft"] == pytest.approx(0.10 + (0.0 + 0.05 - 0.04) / 3)
    assert d["metric"] == "win_rate" and d["failures"] == []
    text = format_calibration(d)
    for label in ("within-seed evaluation se", "seed-to-seed sd (dpo)", "paired sd (dpo - ipo)",
                  "95% two-sided test with 80% power", "over 3 seeds", "dpo's effect over SFT"):
        assert label in text


def test_disco_calibrate_prints_labelled_numbers_and_writes_the_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(analysis_commands, "RUNNER", FakeRunner())
    out = tmp_path / "noise" / "calibration.json"
    assert main(["calibrate", "--seeds", "0", "1", "2", "3", "--set", "max_steps=4", "--campaign-seeds", "4",
                 "--metric", "reward", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "smallest detectable difference" in printed and "paired se at 4 campaign seeds" in printed
    saved = json.loads(out.read_text())
    assert KEYS <= set(saved) and saved["metric"] == "reward" and saved["campaign_seeds"] == 4
    assert saved["overrides"] == {"max_steps": 4} and saved["n_seeds"] == 4
    assert main(["calibrate", "--seeds", "0", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["metric"] == CampaignConfig().fitness.metric and d["objectives"] == ["dpo", "ipo"]


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "--seeds needs at least 2 seeds"),
    (["--seeds", "0", "0"], "--seeds"),
    (["--objectives", "dpo"], "--objectives needs two different objectives"),
    (["--objectives", "dpo", "dpp"], "did you mean 'dpo'"),
    (["--metric", "win_rat"], "did you mean 'win_rate'"),
    (["--campaign-seeds", "0"], "--campaign-seeds must be"),
    (["--beta", "-1"], "--beta must be"),
    (["--task", "synthetc"], "synthetic"),
])
def test_disco_calibrate_mistakes_are_one_line_errors(argv, message, capsys, monkeypatch):
    fake = FakeRunner()
    monkeypatch.setattr(analysis_commands, "RUNNER", fake)
    assert main(["calibrate"] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("disco: error:") and "\n" not in err and message in err
    assert fake.calls == []  # refused before any training


def test_disco_calibrate_end_to_end_through_the_real_runner(tmp_path, capsys, monkeypatch):
    """dpo and ipo x 2 seeds on a tiny synthetic task through inner_loop.runner.run_candidate (~20 s)."""
    monkeypatch.setattr(analysis_commands, "RUNNER", None)
    tiny = ["corpus_size=400", "sft_steps=20", "n_train_pairs=32", "n_heldout_prompts=16", "max_steps=4",
            "batch_size=8", f"cache_dir={tmp_path / 'cache'}"]
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--seeds", "0", "1", "--isolation", "none", "--quiet", "--metric", "win_rate",
                 "--out", str(out)] + [x for item in tiny for x in ("--set", item)]) == 0
    d = json.loads(out.read_text())
    assert d["failures"] == [] and d["n_paired_seeds"] == 2
    assert d["evaluation"]["n_prompts"] == 16
    assert 0 < d["within_seed_se"] < 0.5 and d["paired_sd"] >= 0 and d["within_seed_paired_se"] > 0
    assert "per-prompt" in d["what"]["within_seed_paired_se"]  # same prompts for both: paired by prompt
    assert d["min_detectable"] == pytest.approx((Z_975 + Z_80) * d["paired_se"])
    assert "noise floor of win_rate on synthetic" in capsys.readouterr().out
