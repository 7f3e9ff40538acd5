"""evaluation.heldout: only settings the search never used, the best candidates, heldout.json."""

import json
import math

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
    assert parse_task("recipe:zephyr-gemma") == ("recipe:zephyr-gemma", ())   # the name's own colon
    assert parse_task("recipe:zephyr-gemma:model=/m,dataset=/d") == (
        "recipe:zephyr-gemma", (("dataset", "/d"), ("model", "/m")))


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


# -- transfer: the search ranking against the held-out one --------------------------------------------

def test_transfer_reports_rank_correlations_per_setting_and_who_beats_dpo(tmp_path):
    """The fake's held-out quality orders the objectives as the archive does: rho = tau = +1."""
    d = make_campaign(tmp_path / "c")
    result = evaluate_heldout(d, top=2, seeds=[1, 2, 3], betas=[0.1, 0.5], runner=FakeRunner(), n_boot=300,
                              log=lambda m: None)
    assert list(result.transfer) == ["synthetic,max_steps=20/beta=0.1", "synthetic,max_steps=20/beta=0.5",
                                     "all settings"]
    t = result.transfer["synthetic,max_steps=20/beta=0.1"]
    objs = {o["objective"]: o for o in t["objectives"]}
    assert set(objs) == {"good#4", "meh#5", "dpo", "ipo", "lrml"}      # top K and the baselines
    assert objs["good#4"]["search_fitness"] == 0.71 and objs["dpo"]["search_fitness"] == 0.60
    assert [objs[k]["search_rank"] for k in ("good#4", "lrml", "dpo", "meh#5", "ipo")] == [1, 2, 3, 4, 5]
    assert objs["good#4"]["heldout_mean"] == pytest.approx(0.70 + (0.05 - 0.04 + 0.02) / 3)
    for m in ("spearman", "kendall"):
        assert (t[m]["estimate"], t[m]["lo"], t[m]["hi"]) == (1.0, 1.0, 1.0) and t[m]["n_objectives"] == 5
    assert t["spearman"]["text"] == "Spearman rho over 5 objectives: +1.00 [95% bootstrap CI over seeds: +1.00, +1.00]"
    assert t["beats_dpo"] == ["good#4"] and "Holm" in t["beats_dpo_what"]
    saved = json.loads((d / "heldout.json").read_text())
    assert saved["transfer"]["all settings"]["n_seeds"] == 6 and saved["search_metric"] == "win_rate"


def test_an_inverted_held_out_ranking_gives_minus_one_and_ties_are_averaged(tmp_path, monkeypatch):
    from tests.evaluation import fakes
    d = make_campaign(tmp_path / "c")
    # archive order good > lrml > dpo > meh > ipo; held out: the reverse
    for name, q in {"good": 0.50, "lrml": 0.55, "dpo": 0.60, "meh": 0.65, "ipo": 0.70}.items():
        monkeypatch.setitem(fakes.QUALITY, name, q)
    t = evaluate_heldout(d, top=2, seeds=[1, 2, 3], runner=FakeRunner(), n_boot=200,
                         log=lambda m: None).transfer["synthetic,max_steps=20/beta=0.1"]
    assert t["spearman"]["estimate"] == pytest.approx(-1.0) and t["kendall"]["hi"] == pytest.approx(-1.0)
    assert t["beats_dpo"] == ["meh#5"]   # held out, the search's 4th beats DPO and its best does not
    # ties: good and lrml equal held out -> ranks (1.5, 1.5, 3, 4, 5) against (1, 2, 3, 4, 5)
    for name, q in {"good": 0.70, "lrml": 0.70, "dpo": 0.60, "meh": 0.58, "ipo": 0.55}.items():
        monkeypatch.setitem(fakes.QUALITY, name, q)
    t = evaluate_heldout(d, top=2, seeds=[1, 2, 3], runner=FakeRunner(), n_boot=200,
                         log=lambda m: None).transfer["synthetic,max_steps=20/beta=0.1"]
    assert {o["objective"]: o["heldout_rank"] for o in t["objectives"]}["lrml"] == 1.5
    # rho: centred ranks (-2,-1,0,1,2) and (-1.5,-1.5,0,1,2): 9.5 / sqrt(10 * 9.5); tau-b: 9 of 10 pairs
    # concordant, one tied: 9 / sqrt(10 * 9)
    assert t["spearman"]["estimate"] == pytest.approx(9.5 / math.sqrt(95))
    assert t["kendall"]["estimate"] == pytest.approx(9 / math.sqrt(90))
    assert t["spearman"]["lo"] <= t["spearman"]["estimate"] <= t["spearman"]["hi"]


def test_one_candidate_beats_dpo_without_correction_and_kl_is_ranked_negated(tmp_path):
    d = make_campaign(tmp_path / "c")
    t = evaluate_heldout(d, top=1, seeds=[1, 2, 3], runner=FakeRunner(), n_boot=300,
                         log=lambda m: None).transfer["synthetic,max_steps=20/beta=0.1"]
    assert t["beats_dpo"] == ["good#4"] and "nothing to correct" in t["beats_dpo_what"]
    assert t["spearman"]["n_objectives"] == 4
    # kl: lower is better, so it is ranked negated; the fake's kl grows with quality, so the better an
    # objective's search fitness the worse its held-out kl: -1
    t = evaluate_heldout(d, top=2, seeds=[1, 2, 3], metric="kl", runner=FakeRunner(), n_boot=300,
                         log=lambda m: None).transfer["synthetic,max_steps=20/beta=0.1"]
    assert t["oriented"] and t["spearman"]["estimate"] == pytest.approx(-1.0)
    assert {o["objective"]: o["heldout_mean"] for o in t["objectives"]}["dpo"] == pytest.approx(20.0)


def test_disco_heldout_prints_and_writes_the_rank_correlation(tmp_path, capsys, monkeypatch):
    d = make_campaign(tmp_path / "c")
    monkeypatch.setattr(analysis_commands, "RUNNER", FakeRunner())
    assert main(["heldout", str(d), "--top", "2", "--seeds", "1", "2", "--n-boot", "200", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "does the search ranking transfer?" in out
    assert "Spearman rho over 5 objectives: +1.00 [95% bootstrap CI over seeds: +1.00, +1.00]" in out
    assert "Kendall tau over 5 objectives: +1.00" in out and "beat DPO (Holm-adjusted" in out
    assert "rank search->held-out: good#4 1->1" in out
    assert main(["heldout", str(d), "--top", "2", "--seeds", "1", "2", "--n-boot", "200", "--json", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["transfer"] == json.loads((d / "heldout.json").read_text())["transfer"]
    assert printed["transfer"]["synthetic,max_steps=20/beta=0.1"]["kendall"]["estimate"] == 1.0
