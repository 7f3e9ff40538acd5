"""evaluation.compare: every objective on every setting, typed failures, paired intervals, the CLI."""

import json

import pytest

from discovery.cli import main
from evaluation import analysis_commands
from evaluation.compare import (Run, Setting, difference, format_table, per_prompt, resolve_objectives,
                                run_grid, summarise)
from evaluation.stats import Estimate
from tests.evaluation.fakes import FakeRunner

GOOD = "def good(rho, beta):\n    return -torch.nn.functional.logsigmoid(beta * rho)\n"
BOOM = "def boom(rho, beta):\n    return rho * float('nan')\n"


def settings(seeds, **kw):
    return [Setting(seed=s, **kw) for s in seeds]


def test_every_objective_runs_on_every_setting_with_the_setting_passed_through():
    fake = FakeRunner()
    runs = run_grid({"dpo": "dpo", "good": GOOD}, settings([0, 1], beta=0.2, overrides=(("n_train", 32),)),
                    runner=fake)
    assert [(r.objective, r.setting.seed) for r in runs] == [("dpo", 0), ("good", 0), ("dpo", 1), ("good", 1)]
    assert fake.calls[1] == dict(objective=GOOD, task="synthetic", beta=0.2, seed=0, out_dir=None, n_train=32)


def test_the_difference_to_a_baseline_is_paired_by_seed():
    # the fake gives good - dpo = 0.10 exactly on every seed, whatever the seed's offset
    runs = run_grid({"dpo": "dpo", "good": GOOD}, settings([0, 1, 2, 3, 4]), runner=FakeRunner())
    table = summarise(runs, "win_rate", baselines=("dpo",))
    good = next(r for r in table.rows if r.objective == "good")
    est = good.vs["dpo"]
    assert est.pairing == "setting" and est.n_units == 5
    assert est.mean == pytest.approx(0.10) and est.lo == pytest.approx(0.10) and est.hi == pytest.approx(0.10)
    assert good.se > 0  # the objective's own mean still carries the seed spread
    dpo = next(r for r in table.rows if r.objective == "dpo")
    assert "dpo" not in dpo.vs  # no row is compared with itself


def test_per_prompt_outcomes_switch_to_prompt_pairing():
    runs = run_grid({"dpo": "dpo", "good": GOOD}, settings([0, 1]), runner=FakeRunner(per_prompt=50))
    est = difference([r for r in runs if r.objective == "good"], [r for r in runs if r.objective == "dpo"],
                     "win_rate", n_boot=500)
    assert isinstance(est, Estimate)
    assert est.pairing == "prompt-within-setting" and est.n_prompts == 100 and est.n_units == 2
    assert est.lo < 0.1 + 1e-9 and est.hi > 0.1 - 0.05


def test_failures_are_typed_rows_and_never_averaged_in():
    runs = run_grid({"dpo": "dpo", "good": GOOD, "boom": BOOM, "raise": "def raise(rho, beta): ..."},
                    settings([0, 1, 2]), runner=FakeRunner(fail_seeds={2}))
    table = summarise(runs, "win_rate", baselines=("dpo",))
    rows = {r.objective: r for r in table.rows}
    assert rows["boom"].n_done == 0 and rows["boom"].n_failed == 3
    assert rows["boom"].vs["dpo"] == "no setting where both finished"
    assert rows["raise"].failures[0]["reason"] == "RuntimeError: worker died"
    # seed 2 failed for everyone: good's mean is over seeds 0 and 1 only, and so is the interval
    assert rows["good"].n_done == 2 and rows["good"].mean == pytest.approx(0.70 + 0.025)
    assert rows["good"].vs["dpo"].n_units == 2
    text = format_table(table)
    assert "failed: boom on synthetic/beta=default/seed=0: non-finite loss" in text
    assert "n/a (no setting where both finished)" in text
    assert "nan" not in text.replace("non-finite loss (nan)", "")


def test_a_run_that_finished_without_the_metric_is_a_failure():
    s = Setting(seed=0)
    runs = [Run("dpo", s, "done", metrics={"win_rate": 0.5}), Run("x", s, "done", metrics={"kl": 1.0})]
    row = next(r for r in summarise(runs, "win_rate", baselines=("dpo",)).rows if r.objective == "x")
    assert row.n_done == 0 and "without a finite 'win_rate'" in row.failures[0]["reason"]


def test_resolve_objectives_adds_the_baselines_and_labels_files_by_stem(tmp_path):
    f = tmp_path / "my_loss.py"
    f.write_text(GOOD)
    got = resolve_objectives(["dpo", str(f)])
    assert list(got) == ["dpo", "my_loss", "ipo", "lrml"]
    assert got["my_loss"] == GOOD and got["ipo"] == "ipo"
    with pytest.raises(KeyError, match="did you mean 'dpo'"):
        resolve_objectives(["dpp"])


def test_disco_compare_prints_the_table_and_writes_json(tmp_path, capsys, monkeypatch):
    fake = FakeRunner()
    monkeypatch.setattr(analysis_commands, "RUNNER", fake)
    f = tmp_path / "good.py"
    f.write_text(GOOD)
    rc = main(["compare", "--objectives", "dpo", "ipo", "lrml", str(f), "--seeds", "0", "1", "2",
               "--beta", "0.1", "--out", str(tmp_path / "cmp")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "good" in out and "- dpo [95% CI]" in out and "paired by setting (n=3 seed/setting units)" in out
    assert len(fake.calls) == 12 and {c["beta"] for c in fake.calls} == {0.1}
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved["table"]["metric"] == "win_rate" and len(saved["runs"]) == 12
    good = next(r for r in saved["table"]["rows"] if r["objective"] == "good")
    assert good["vs"]["ipo"]["mean"] == pytest.approx(0.15)

    rc = main(["compare", "--objectives", "dpo", str(f), "--seeds", "0", "--json", "--metric", "kl"])
    table = json.loads(capsys.readouterr().out)["table"]
    assert table["metric"] == "kl" and table["higher_is_better"] is False
    assert table["rows"][0]["se"] is None  # one seed: no standard error, null in strict JSON


def test_disco_compare_end_to_end_through_the_real_runner(tmp_path, capsys, monkeypatch):
    """dpo and lrml x 2 seeds on a tiny synthetic task, through inner_loop.runner.run_candidate (~20 s),
    paired by prompt within seed."""
    monkeypatch.setattr(analysis_commands, "RUNNER", None)
    tiny = ["corpus_size=400", "sft_steps=20", "n_train_pairs=32", "n_heldout_prompts=16", "max_steps=4",
            "batch_size=8", f"cache_dir={tmp_path / 'cache'}"]
    argv = ["compare", "--objectives", "dpo", "lrml", "--baselines", "dpo", "lrml", "--seeds", "0", "1",
            "--n-boot", "500", "--json", "--out", str(tmp_path / "out")]
    assert main(argv + [x for item in tiny for x in ("--set", item)]) == 0
    printed = json.loads(capsys.readouterr().out)  # the trainer's own prints went to stderr
    saved = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert printed == saved
    assert [r["status"] for r in saved["runs"]] == ["done"] * 4, [r["reason"] for r in saved["runs"]]
    assert all(0 <= r["metrics"]["win_rate"] <= 1 and r["metrics"]["kl"] >= 0 for r in saved["runs"])
    lrml = next(r for r in saved["table"]["rows"] if r["objective"] == "lrml")
    # the runner reports per-prompt outcomes on one prompt set for every objective and seed, so the
    # interval pairs by prompt within seed
    assert len({r["metrics"]["per_prompt"]["prompt_set"] for r in saved["runs"]}) == 1
    assert all(len(r["metrics"]["per_prompt"]["win_rate"]) == 16 for r in saved["runs"])
    assert lrml["n_done"] == 2 and lrml["vs"]["dpo"]["pairing"] == "prompt-within-setting"
    assert lrml["vs"]["dpo"]["n_units"] == 2 and lrml["vs"]["dpo"]["n_prompts"] == 2 * 16
    assert lrml["vs"]["dpo"]["lo"] <= lrml["vs"]["dpo"]["mean"] <= lrml["vs"]["dpo"]["hi"]


def test_win_rate_is_also_compared_with_the_sft_model_at_one_half():
    """Each row carries win_rate - 0.5 with its interval; the table prints it as a column."""
    runs = run_grid({"dpo": "dpo", "good": GOOD}, settings([0, 1, 2]), runner=FakeRunner(per_prompt=40))
    table = summarise(runs, "win_rate", baselines=("dpo",), n_boot=500)
    for row in table.rows:
        prompts = [per_prompt(r.metrics, "win_rate") for r in runs if r.objective == row.objective]
        assert row.vs_null is not None and row.vs_null.pairing == "prompt-within-setting"
        assert row.vs_null.mean == pytest.approx(sum(p.mean() for p in prompts) / len(prompts) - 0.5)
        assert row.vs_null.lo <= row.vs_null.mean <= row.vs_null.hi
    assert "- 0.5 (SFT) [95% CI]" in format_table(table)
    assert summarise(runs, "kl", baselines=("dpo",), n_boot=200).rows[0].vs_null is None


MEH = "def meh(rho, beta):\n    return rho\n"


def test_several_candidates_against_a_baseline_are_also_corrected_for_the_family():
    runs = run_grid({"dpo": "dpo", "ipo": "ipo", "good": GOOD, "meh": MEH}, settings([0, 1, 2, 3, 4]),
                    runner=FakeRunner(per_prompt=20))
    table = summarise(runs, "win_rate", baselines=("dpo", "ipo"), n_boot=999)
    # the family of a baseline's column: the candidates (not the baselines) compared with it
    assert table.families == {"dpo": ["good", "meh"], "ipo": ["good", "meh"]}
    rows = {r.objective: r for r in table.rows}
    assert rows["dpo"].corrected == {} and rows["ipo"].corrected == {}
    good, meh = rows["good"], rows["meh"]
    for b in ("dpo", "ipo"):
        assert good.corrected[b].m == 2
        # Bonferroni at 1 - 0.05/2 from the same replicates: contains the uncorrected interval
        assert good.corrected[b].lo <= good.vs[b].lo and good.corrected[b].hi >= good.vs[b].hi
    # Holm: the two p-values of the dpo column, adjusted by hand
    p = sorted([(good.vs["dpo"].p_value, "good"), (meh.vs["dpo"].p_value, "meh")])
    first = min(1.0, 2 * p[0][0])
    assert rows[p[0][1]].corrected["dpo"].p_holm == pytest.approx(first)
    assert rows[p[1][1]].corrected["dpo"].p_holm == pytest.approx(max(first, p[1][0]))
    text = format_table(table)
    assert "- dpo [95% CI, Bonferroni-corrected for 2 comparisons] Holm p" in text
    assert "comparisons per family: dpo: 2 (good, meh); ipo: 2 (good, meh)" in text
    assert "not corrected for multiple comparisons" in text  # the uncorrected columns say so
    cell = table.to_dict()["rows"][2]["vs"]["dpo"]
    assert cell["corrected"]["m"] == 2 and "Bonferroni-corrected for 2 comparisons" in cell["corrected"]["what"]
    assert "replicates" not in cell


def test_one_candidate_is_not_corrected_and_a_table_of_baselines_is_its_own_family():
    runs = run_grid({"dpo": "dpo", "ipo": "ipo", "good": GOOD}, settings([0, 1, 2]), runner=FakeRunner())
    one = summarise(runs, "win_rate", baselines=("dpo", "ipo"), n_boot=200)
    assert one.families == {} and "corrected for multiple comparisons (" not in format_table(one)
    only_baselines = summarise([r for r in runs if r.objective != "good"] +
                               run_grid({"lrml": "lrml"}, settings([0, 1, 2]), runner=FakeRunner()),
                               "win_rate", baselines=("dpo",), n_boot=200)
    assert only_baselines.families == {"dpo": ["ipo", "lrml"]}
    named = summarise(runs, "win_rate", baselines=("dpo",), n_boot=200, candidates=["ipo", "good"])
    assert named.families == {"dpo": ["ipo", "good"]}


def test_every_plus_minus_and_interval_in_the_table_says_what_it_is():
    runs = run_grid({"dpo": "dpo", "good": GOOD}, settings([0, 1, 2]), runner=FakeRunner(per_prompt=8))
    table = summarise(runs, "win_rate", baselines=("dpo",), n_boot=200)
    text = format_table(table)
    assert "win_rate mean ± se over runs" in text
    assert "± = standard error over the row's runs, one per seed/setting" in text
    assert "each run scored on 8 samples" in text  # the fake reports n, not prompts x samples
    assert "[95% CI] = 95% paired percentile bootstrap interval" in text
    assert "paired by prompt-within-setting (n=3 seed/setting units, 24 prompts)" in text
    row = table.to_dict()["rows"][0]
    assert row["se_what"].startswith("standard error over the row's runs")
    assert row["vs_null"]["what"].startswith("95% paired percentile bootstrap CI over 3 paired seed/setting units")
    one = summarise(run_grid({"dpo": "dpo"}, settings([0]), runner=FakeRunner()), "win_rate", baselines=())
    assert one.to_dict()["rows"][0]["se_what"] is None  # one run: no seed-level ± and no words for one


def test_on_tldr_a_win_rate_of_one_half_is_a_tie_with_the_human_summary_not_the_sft_model():
    runs = run_grid({"dpo": "dpo", "good": GOOD}, settings([0, 1], task="recipe:tldr"), runner=FakeRunner())
    head = format_table(summarise(runs, "win_rate")).splitlines()[0]
    assert "- 0.5 (a tie with the human summary)" in head and "(SFT)" not in head
    runs = run_grid({"dpo": "dpo", "good": GOOD}, settings([0, 1]), runner=FakeRunner())
    assert "- 0.5 (SFT)" in format_table(summarise(runs, "win_rate")).splitlines()[0]
