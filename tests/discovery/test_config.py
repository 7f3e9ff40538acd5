"""The nested CampaignConfig: sections, the flat keys of earlier versions, --set, old archives."""

import json
import logging

import pytest
import yaml

from campaign_fakes import fake_config
from discovery.archive import Archive
from discovery.cli import main
from discovery.config import CampaignConfig, JudgeConfig, ProposerConfig, TrainingConfig, UserError

# what an archive written before the config was nested holds in meta.config (fake_config's values)
FLAT = {
    "proposer": "evolve", "candidates": 1, "seed": 0, "task": "synthetic", "seeds": [0], "beta": 0.1,
    "baselines": ["dpo", "ipo", "lrml"], "metric": "win_rate", "fitness": "mean_metric", "workers": 1,
    "train_timeout": 600.0, "validate_timeout": 20.0, "isolation": "auto", "max_attempts": 2,
    "overrides": {}, "inspect": False, "dedupe": "training", "base_url": None, "model": "gpt-4o-mini",
    "api_key_env": "OPENAI_API_KEY", "temperature": 1.0, "max_tokens": 2048, "request_timeout": 120.0,
    "max_retries": 5, "retry_base_delay": 0.01, "retry_max_delay": 0.05, "judge_base_url": None,
    "judge_model": "gpt-4", "judge_api_key_env": "OPENAI_API_KEY", "fastchat_data": None,
    "mt_bench_questions": [], "alpaca_reference": None, "alpaca_instructions": None,
    "alpaca_judge_prompt": None, "max_new_tokens": 1024, "n_best": 5, "n_recent": 3, "n_failures": 3,
    "max_code_chars": 1500, "max_error_chars": 400, "trainer": "inner_loop.runner:run_candidate",
    "validator": "objectives.validate:validate", "fingerprinter": "objectives.fingerprint",
    "inspector": "objectives.inspection:inspect_objective"}


def test_nested_round_trip_and_sections():
    config = fake_config(**{"training.max_attempts": 3, "fitness.judge.model": "gpt-4o"})
    assert CampaignConfig.from_dict(config.to_dict()) == config
    assert config.training.max_attempts == 3 and config.fitness.judge.model == "gpt-4o"
    assert isinstance(config.proposer, ProposerConfig) and isinstance(config.fitness.judge, JudgeConfig)
    assert yaml.safe_load(yaml.safe_dump(config.to_dict())) == config.to_dict()


def test_flat_keys_still_work_with_one_deprecation_line(caplog):
    with caplog.at_level(logging.WARNING, logger="discovery.config"):
        config = CampaignConfig.from_dict({"task": "synthetic", "workers": 2, "train_timeout": 30,
                                           "judge_model": "gpt-4o", "request_timeout": 9})
    assert config.training.timeout == 30 and config.execution.workers == 2
    assert config.fitness.judge.model == "gpt-4o"
    assert config.proposer.request_timeout == 9 and config.fitness.judge.request_timeout == 9
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "train_timeout -> training.timeout" in warned[0] and "\n" not in warned[0]


def test_a_nested_key_wins_over_a_flat_one_and_unknown_keys_get_a_hint():
    assert CampaignConfig.from_dict({"seeds": [1], "training": {"seeds": [2]}}, warn=False).training.seeds == (2,)
    with pytest.raises(UserError, match="did you mean 'training.timeout'"):
        CampaignConfig.from_dict({"training": {"timout": 1}})
    with pytest.raises(UserError, match="did you mean 'fitness.judge.model'"):
        CampaignConfig.from_dict({"fitness.judge.modle": "x"})
    with pytest.raises(UserError, match="trainer is no longer a campaign setting"):
        CampaignConfig.from_dict({"trainer": "my.module:train"})
    with pytest.raises(UserError, match="training.timeout must be a number > 0"):
        TrainingConfig(timeout=0)


def test_disco_run_set_and_flags(tmp_path, capsys):
    cfg = tmp_path / "campaign.yaml"
    cfg.write_text(yaml.safe_dump(fake_config(candidates=1, seeds=(0,)).to_dict()))
    out = tmp_path / "c"
    assert main(["run", "--out", str(out), "--config", str(cfg), "--max-steps", "5", "--workers", "1",
                 "--set", "training.max_attempts=3", "--set", "fitness.judge.model=gpt-4o",
                 "--set", "prompt.n-best=2", "--quiet"]) == 0
    with Archive.open(out) as a:
        saved = a.config
    assert saved["training"]["max_attempts"] == 3 and saved["fitness"]["judge"]["model"] == "gpt-4o"
    assert saved["training"]["overrides"] == {"max_steps": 5} and saved["prompt"]["n_best"] == 2
    capsys.readouterr()
    assert main(["run", "--out", str(tmp_path / "d"), "--config", str(cfg), "--set", "training.attempts=3"]) == 2
    assert "did you mean 'training.max_attempts'" in capsys.readouterr().err
    assert main(["run", "--out", str(tmp_path / "d"), "--config", str(cfg), "--set", "candidates"]) == 2
    assert "--set expects KEY=VALUE" in capsys.readouterr().err


def test_an_archive_with_a_flat_config_is_shown_and_resumed(tmp_path, capsys):
    out = tmp_path / "old"
    Archive.create(out, FLAT).close()
    assert main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["training"]["seeds"] == [0]  # shown nested
    assert main(["resume", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    with Archive.open(out) as a:
        rows, config = a.rows(), a.config
    assert [r["status"] for r in rows] == ["done"] * 4
    assert config == CampaignConfig.from_dict(FLAT, warn=False).to_dict()  # saved nested from now on
    assert config["training"]["seeds"] == [0] and config["proposer"]["retry_base_delay"] == 0.01
    assert main(["status", str(out)]) == 0
    assert "state: finished" in capsys.readouterr().out


def test_fitness_and_halving_settings_are_checked():
    config = fake_config(**{"fitness.kl_budget": 2.5, "fitness.metric": None, "training.screen_seeds": 1,
                            "training.best_extra_seeds": 2,
                            "training.seeds": [3, 5]})
    assert config.fitness.metric == "reward_at_kl"  # matched KL and no metric set
    assert config.fitness.kl_betas == (0.05, 0.1, 0.2, 0.5) and config.fitness.calibration is None
    assert config.training.screens() and config.training.extra_seeds() == (6, 7)
    assert CampaignConfig.from_dict(config.to_dict()) == config
    assert "at matched KL 2.5" in config.fitness.describe()
    assert fake_config(**{"fitness.kl_budget": 2.5, "fitness.metric": "reward_gain_at_kl"}).fitness.metric == \
        "reward_gain_at_kl"
    assert fake_config().fitness.metric == "win_rate"
    assert not fake_config(**{"training.screen_seeds": 2, "training.seeds": [0, 1]}).training.screens()
    for key, value, words in (("training.screen_seeds", -1, "training.screen_seeds must be an integer >= 0"),
                              ("training.best_extra_seeds", 1.5, "training.best_extra_seeds must be an integer"),
                              ("fitness.kl_budget", 0, "fitness.kl_budget must be a number > 0"),
                              ("fitness.kl_betas", [0.1], "at least two distinct betas"),
                              ("fitness.kl_betas", [0.1, -1], "each of fitness.kl_betas must be a number > 0"),
                              ("fitness.calibration", 3, "fitness.calibration must be the path")):
        with pytest.raises(UserError, match=words):
            fake_config(**{key: value})
