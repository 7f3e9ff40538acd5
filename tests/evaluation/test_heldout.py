"""evaluation.heldout: only settings the search never used, the best candidates, heldout.json."""

import json

import pytest

from discovery.cli import main
from evaluation import analysis_commands
from evaluation.campaign import read_campaign, used_settings
from evaluation.heldout import HeldoutError, evaluate_heldout, parse_task, plan_settings
from tests.evaluation.fakes import CONFIG, FLAT_CONFIG, FakeRunner, make_campaign

USED = used_settings(CONFIG)


def test_used_settings_read_from_the_campaign_config():
    assert USED == {"tasks": ["synthetic"], "overrides": (("max_steps", 20),), "seeds": {0}, "betas": {0.1}}
    assert used_settings(FLAT_CONFIG) == USED   # an archive written before the config was nested


def test_default_plan_is_three_new_seeds_with_the_search_budget():
    settings, dropped, warnings = plan_settings(USED)
    assert [s.seed for s in settings] == [1, 2, 3] and not dropped and not warnings
    assert all(s.beta == 0.1 and s.overrides == (("max_steps", 20),) for s in settings)


def test_a_request_made_only_of_used_settings_is_refused():
    with pytest.raises(HeldoutError, match=r"used by the search .*--seeds 1 2 3"):
        plan_settings(USED, seeds=[0], betas=[0.1])


def test_used_settings_are_dropped_with_a_warning_or_kept_on_request():
    settings, dropped, warnings = plan_settings(USED, seeds=[0, 5])
    assert [s.seed for s in settings] == [5] and [s.seed for s in dropped] == [0]
    assert "dropped 1 setting(s)" in warnings[0]
    settings, dropped, warnings = plan_settings(USED, seeds=[0, 5], allow_used=True)
    assert [s.seed for s in settings] == [0, 5] and "in-sample" in warnings[0]


def test_a_new_beta_or_task_variant_on_a_search_seed_is_held_out_with_a_warning():
    settings, _, warnings = plan_settings(USED, seeds=[0], betas=[0.5])
    assert [(s.seed, s.beta) for s in settings] == [(0, 0.5)]
    assert "held out only in their beta or task variant" in warnings[-1]
    settings, _, _ = plan_settings(USED, seeds=[0], tasks=["synthetic:max_completion_len=32"])
    assert settings[0].overrides == (("max_completion_len", 32), ("max_steps", 20))


def test_parse_task_variants():
    assert parse_task("synthetic") == ("synthetic", ())
    assert parse_task("synthetic:polarity_concentration=1.0,max_completion_len=32") == (
        "synthetic", (("max_completion_len", 32), ("polarity_concentration", 1.0)))
    with pytest.raises(HeldoutError):
        parse_task("synthetic:oops")
    with pytest.raises(HeldoutError, match="run_candidate's own argument.*data_seed"):
        parse_task("synthetic:seed=3")  # would collide with the training seed
    assert parse_task("synthetic:data_seed=7") == ("synthetic", (("data_seed", 7),))


def test_disco_heldout_on_a_task_variant_with_another_data_seed(tmp_path, capsys, monkeypatch):
    """The synthetic task's data seed is data_seed, apart from the training seed: a new task variant."""
    d = make_campaign(tmp_path / "c")
    fake = FakeRunner()
    monkeypatch.setattr(analysis_commands, "RUNNER", fake)
    assert main(["heldout", str(d), "--top", "1", "--tasks", "synthetic:data_seed=7", "--seeds", "0",
                 "--n-boot", "200"]) == 0
    assert "held out only in their beta or task variant" in capsys.readouterr().err
    assert fake.calls and all(c["data_seed"] == 7 and c["seed"] == 0 for c in fake.calls)
    saved = json.loads((d / "heldout.json").read_text())
    assert [s["overrides"] for s in saved["settings"]] == [{"data_seed": 7, "max_steps": 20}]


def test_campaign_view_ranks_candidates_not_baselines(tmp_path):
    campaign = read_campaign(make_campaign(tmp_path / "c"))
    assert [r["name"] for r in campaign.top(5)] == ["good", "meh"]
    assert [r["name"] for r in campaign.leaderboard()] == ["good", "lrml", "dpo", "meh", "ipo"]
    assert campaign.metric == "win_rate"


def test_heldout_trains_top_k_and_baselines_on_new_seeds_and_writes_json(tmp_path):
    d = make_campaign(tmp_path / "c")
    fake = FakeRunner()
    result = evaluate_heldout(d, top=1, seeds=[1, 2, 3, 4], runner=fake, n_boot=500, log=lambda m: None)
    assert {c["objective"].split("(")[0] for c in fake.calls} == {"def good", "dpo", "ipo", "lrml"}
    assert {c["seed"] for c in fake.calls} == {1, 2, 3, 4}
    assert all(c["max_steps"] == 20 and c["beta"] == 0.1 for c in fake.calls)
    saved = json.loads((d / "heldout.json").read_text())
    assert saved["candidates"][0]["label"] == "good#4" and saved["used"]["seeds"] == [0]
    good = next(r for r in saved["table"]["rows"] if r["objective"] == "good#4")
    assert good["vs"]["dpo"]["mean"] == pytest.approx(0.10) and good["vs"]["dpo"]["pairing"] == "setting"
    assert list(saved["per_setting"]) == ["synthetic,max_steps=20/beta=0.1"]
    assert result.table.metric == "win_rate"


def test_disco_heldout_refuses_used_settings(tmp_path, capsys, monkeypatch):
    assert main(["heldout", str(tmp_path / "nothing")]) == 2
    assert "no campaign in" in capsys.readouterr().err
    d = make_campaign(tmp_path / "c")
    monkeypatch.setattr(analysis_commands, "RUNNER", FakeRunner())
    assert main(["heldout", str(d), "--top", "2", "--seeds", "0"]) == 2
    assert "every requested setting was used by the search" in capsys.readouterr().err
    assert main(["heldout", str(d), "--top", "2", "--seeds", "1", "2", "--betas", "0.1", "0.5",
                 "--n-boot", "300"]) == 0
    out = capsys.readouterr().out
    assert "good#4" in out and "meh#5" in out and "boom" not in out
    saved = json.loads((d / "heldout.json").read_text())
    assert len(saved["per_setting"]) == 2 and len(saved["runs"]) == 2 * 2 * 5


def test_heldout_corrects_the_top_k_candidates_not_the_baselines_for_multiplicity(tmp_path):
    d = make_campaign(tmp_path / "c")
    result = evaluate_heldout(d, top=2, seeds=[1, 2, 3], runner=FakeRunner(), n_boot=300, log=lambda m: None)
    assert result.table.families == {b: ["good#4", "meh#5"] for b in ("dpo", "ipo", "lrml")}
    saved = json.loads((d / "heldout.json").read_text())
    good = next(r for r in saved["table"]["rows"] if r["objective"] == "good#4")
    assert good["vs"]["dpo"]["corrected"]["m"] == 2
    assert "corrected" not in next(r for r in saved["table"]["rows"] if r["objective"] == "ipo")["vs"]["dpo"]
    assert all(t["families"] for t in saved["per_setting"].values())
    one = evaluate_heldout(d, top=1, seeds=[1, 2, 3], runner=FakeRunner(), n_boot=300, log=lambda m: None)
    assert one.table.families == {}  # one candidate: one comparison per baseline, nothing to correct
