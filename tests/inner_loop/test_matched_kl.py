"""Fitness at matched KL: a beta sweep per seed, the gold reward read off at KL = kl_budget by linear
interpolation (upper envelope of the beta path), no extrapolation. A fake run_candidate checks the
arithmetic and the failures; one real tiny run checks the whole path."""

from __future__ import annotations

import json
import math

import pytest

from inner_loop import matched_kl
from inner_loop.matched_kl import beta_folder, reward_at, run_matched_kl
from inner_loop.train_config import TrainResult

TABLE = {  # beta -> (kl, reward): KL falls with beta, as it usually does
    0.05: (20.0, 3.0), 0.1: (12.0, 2.4), 0.2: (6.0, 1.6), 0.5: (2.0, 0.8)}


class FakeRuns:
    """Stands in for run_candidate: beta -> (kl, reward) or a failure reason; records its calls."""

    def __init__(self, table: dict, ref_reward: float | None = 0.5, n_prompts: int = 4):
        self.table, self.ref_reward, self.n_prompts, self.calls = table, ref_reward, n_prompts, []

    def __call__(self, objective, task="synthetic", beta=None, seed=0, out_dir=None, **kw):
        self.calls.append({"objective": objective, "task": task, "beta": beta, "seed": seed, "out_dir": out_dir, **kw})
        row = self.table[beta]
        seconds = {"train": 1.0, "eval": 0.5, "total": 2.0}
        if isinstance(row, str):
            return TrainResult(status="failed", reason=row, seconds=seconds, config={"objective": objective})
        kl, reward = row
        # per prompt: reward +- 1 around the mean, so the per-prompt interpolation can be checked
        per = [reward + (1.0 if k % 2 else -1.0) * (k + 1) / self.n_prompts for k in range(self.n_prompts)]
        per = [x - (sum(per) / len(per) - reward) for x in per]
        metrics = {"kl": kl, "reward": reward, "win_rate": 0.5 + reward / 10, "kl_direction": "KL(pi||pi_ref)",
                   "per_prompt": {"reward": per, "win_rate": [0.5] * self.n_prompts, "prompt_set": "p"}}
        if self.ref_reward is not None:
            metrics["reward_gain"] = reward - self.ref_reward
            metrics["per_prompt"]["reward_gain"] = [x - self.ref_reward for x in per]
        if out_dir:
            from pathlib import Path
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / "result.json").write_text("{}")
        return TrainResult(status="done", metrics=metrics, losses=[beta, beta / 2], steps=2, seconds=seconds,
                           config={"objective": objective, "beta": beta})


@pytest.fixture
def fake(monkeypatch):
    def install(table=TABLE, **kw):
        runs = FakeRuns(table, **kw)
        monkeypatch.setattr(matched_kl, "run_candidate", runs)
        return runs
    return install


def test_interpolates_between_the_bracketing_runs_by_hand(fake, tmp_path):
    runs = fake()
    r = run_matched_kl("dpo", beta=0.1, seed=3, out_dir=str(tmp_path), kl_budget=9.0, learning_rate=1e-3)
    assert r.ok, r.reason
    # KL 9 lies between beta 0.2 (kl 6, reward 1.6) and beta 0.1 (kl 12, reward 2.4): halfway
    assert r.metrics["reward_at_kl"] == pytest.approx(2.0)
    assert r.metrics["reward_gain_at_kl"] == pytest.approx(1.5)
    assert r.metrics["interpolation"] == {"betas": [0.1, 0.2], "weights": [pytest.approx(0.5), pytest.approx(0.5)]}
    assert r.metrics["kl_budget"] == 9.0 and r.metrics["kl_key"] == "kl"
    assert [p["beta"] for p in r.metrics["points"]] == [0.05, 0.1, 0.2, 0.5]
    assert r.metrics["points"][1] == {"beta": 0.1, "kl": 12.0, "reward": 2.4, "reward_gain": pytest.approx(1.9),
                                      "win_rate": pytest.approx(0.74)}
    # the campaign's beta is ignored; each beta's run got the seed and the overrides
    assert [c["beta"] for c in runs.calls] == [0.05, 0.1, 0.2, 0.5]
    assert all(c["seed"] == 3 and c["learning_rate"] == 1e-3 and c["objective"] == "dpo" for c in runs.calls)
    assert r.config["beta_ignored"] == 0.1 and r.config["kl_key"] == "kl" and "upper envelope" in r.config["interpolation"]
    # the reference run is the one with KL closest to 9 (beta 0.2 at 6 and beta 0.1 at 12 tie: lower beta)
    assert r.metrics["reference_beta"] == 0.1 and r.metrics["reward"] == 2.4 and r.losses == [0.1, 0.05]
    assert r.seconds == {"train": 4.0, "eval": 2.0, "total": 8.0}


def test_per_prompt_values_use_the_same_weights(fake):
    fake()
    r = run_matched_kl("dpo", kl_budget=10.0)
    w = (10.0 - 6.0) / (12.0 - 6.0)  # weight of beta 0.1's run
    rows = r.metrics["per_prompt"]["reward_at_kl"]
    a, b = FakeRuns(TABLE)("x", beta=0.1).metrics["per_prompt"]["reward"], \
        FakeRuns(TABLE)("x", beta=0.2).metrics["per_prompt"]["reward"]
    assert rows == pytest.approx([w * x + (1 - w) * y for x, y in zip(a, b)])
    assert sum(rows) / len(rows) == pytest.approx(r.metrics["reward_at_kl"]) == pytest.approx(w * 2.4 + (1 - w) * 1.6)
    sd = math.sqrt(sum((x - sum(rows) / 4) ** 2 for x in rows) / 3)
    assert r.metrics["reward_at_kl_se"] == pytest.approx(sd / 2)
    assert r.metrics["per_prompt"]["prompt_set"] == "p"


def test_budget_on_a_measured_point_is_that_runs_reward(fake):
    fake()
    assert run_matched_kl("dpo", kl_budget=6.0).metrics["reward_at_kl"] == pytest.approx(1.6)
    assert run_matched_kl("dpo", kl_budget=20.0).metrics["reward_at_kl"] == pytest.approx(3.0)


@pytest.mark.parametrize("budget", [1.0, 25.0])
def test_budget_outside_the_measured_range_fails_without_extrapolating(fake, budget):
    fake()
    r = run_matched_kl("dpo", kl_budget=budget)
    assert not r.ok and r.metrics.get("reward_at_kl") is None
    assert r.reason.startswith(f"matched KL: kl_budget {budget:g} is outside the measured KL range [2, 20]")
    assert "no extrapolation" in r.reason and "\n" not in r.reason
    assert len(r.metrics["points"]) == 4


def test_a_failed_beta_is_left_out_and_its_neighbours_joined(fake):
    fake({**TABLE, 0.1: "non-finite loss (nan) at step 3"})
    r = run_matched_kl("dpo", kl_budget=9.0)
    assert r.ok, r.reason
    # now between beta 0.05 (kl 20, reward 3.0) and beta 0.2 (kl 6, reward 1.6)
    assert r.metrics["reward_at_kl"] == pytest.approx(1.6 + (9 - 6) / (20 - 6) * (3.0 - 1.6))
    assert r.metrics["failed_betas"] == [{"beta": 0.1, "reason": "non-finite loss (nan) at step 3"}]
    assert [p["beta"] for p in r.metrics["points"]] == [0.05, 0.2, 0.5]


def test_failed_betas_that_leave_no_bracket_fail_with_the_reasons(fake):
    fake({**TABLE, 0.05: "timeout after 600 s", 0.1: "non-finite loss (nan)\nat step 3"})
    r = run_matched_kl("dpo", kl_budget=9.0)
    assert not r.ok
    assert "outside the measured KL range [2, 6]" in r.reason
    assert "failed: beta 0.05 (timeout after 600 s), beta 0.1 (non-finite loss (nan) at step 3)" in r.reason
    assert "\n" not in r.reason


def test_every_beta_failing_is_a_failure(fake, tmp_path):
    fake({b: "objective did not load: boom" for b in TABLE})
    r = run_matched_kl("dpo", kl_budget=9.0, out_dir=str(tmp_path))
    assert not r.ok and r.reason.startswith("matched KL: no beta run finished")
    assert r.seconds["total"] == 8.0
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "failed"


def test_non_monotone_kl_takes_the_highest_crossing(fake):
    # KL is not monotone in beta: 0.05 -> 10, 0.1 -> 4, 0.2 -> 8, 0.5 -> 2. The beta path crosses
    # KL = 6 three times: 0.05-0.1 (reward 2 + (6-4)/(10-4)*(4-2) = 2.667), 0.1-0.2 (2 + 0.5*(3-2) = 2.5),
    # 0.2-0.5 (1 + (6-2)/(8-2)*(3-1) = 2.333): the highest, 2.667, is taken
    fake({0.05: (10.0, 4.0), 0.1: (4.0, 2.0), 0.2: (8.0, 3.0), 0.5: (2.0, 1.0)})
    r = run_matched_kl("dpo", kl_budget=6.0)
    assert r.metrics["reward_at_kl"] == pytest.approx(2.0 + 2 / 6 * 2.0)
    assert r.metrics["interpolation"]["betas"] == [0.05, 0.1]
    assert r.metrics["reward_gain_at_kl"] == pytest.approx(r.metrics["reward_at_kl"] - 0.5)


def test_reward_at_rule_directly():
    pts = [{"beta": 0.1, "kl": 5.0, "reward": 1.0}, {"beta": 0.2, "kl": 5.0, "reward": 2.0},
           {"beta": 0.4, "kl": 1.0, "reward": 0.0}]
    assert reward_at(pts, 5.0)["value"] == 2.0                       # equal-KL ends on the budget: the better
    assert reward_at(pts, 3.0)["value"] == pytest.approx(1.0)          # 0.2-0.4 segment, halfway
    assert reward_at(list(reversed(pts)), 3.0)["value"] == pytest.approx(1.0)  # order of the input is irrelevant
    with pytest.raises(ValueError, match="outside"):
        reward_at(pts, 5.5)
    with pytest.raises(ValueError, match="no successful"):
        reward_at([], 1.0)


def test_without_reward_gain_there_is_no_gain_at_kl(fake):
    fake(ref_reward=None)
    r = run_matched_kl("dpo", kl_budget=9.0)
    assert r.ok and "reward_gain_at_kl" not in r.metrics and "reward_gain" not in r.metrics["points"][0]


def test_out_dir_layout_and_result(fake, tmp_path):
    runs = fake()
    r = run_matched_kl("dpo", out_dir=str(tmp_path / "seed-0"), kl_budget=9.0, betas=(0.2, 0.05, 0.1, 0.5, 0.1))
    assert [c["out_dir"] for c in runs.calls] == [str(tmp_path / "seed-0" / beta_folder(b)) for b in (0.05, 0.1, 0.2, 0.5)]
    assert sorted(p.name for p in (tmp_path / "seed-0").iterdir()) == [
        "beta-0.05", "beta-0.1", "beta-0.2", "beta-0.5", "result.json"]
    saved = json.loads((tmp_path / "seed-0" / "result.json").read_text())
    assert saved["metrics"]["reward_at_kl"] == pytest.approx(r.metrics["reward_at_kl"])
    assert saved["config"]["betas"] == [0.05, 0.1, 0.2, 0.5]
    assert [x["out_dir"] for x in saved["config"]["runs"]] == [c["out_dir"] for c in runs.calls]


def test_bad_budget_or_betas_raise(fake):
    fake()
    for bad in (None, math.nan, -1.0):
        with pytest.raises(ValueError, match="kl_budget"):
            run_matched_kl("dpo", kl_budget=bad)
    with pytest.raises(ValueError, match="two distinct"):
        run_matched_kl("dpo", kl_budget=1.0, betas=(0.1, 0.1))


def test_real_tiny_sweep(tiny_synthetic_config, tiny_synthetic_cache, tiny_synthetic_task, tmp_path, monkeypatch):
    """The real runner on the tiny task, two betas, a few steps each (trained once: the later sweeps
    reuse those two runs): a clear out-of-range failure, then a finite reward inside the range."""
    from dataclasses import asdict

    from inner_loop.runner import run_candidate
    trained: dict = {}

    def once(objective, beta=None, **kw):
        if beta not in trained:
            trained[beta] = run_candidate(objective, beta=beta, **kw)
        return trained[beta]

    monkeypatch.setattr(matched_kl, "run_candidate", once)
    common = dict(betas=(0.05, 0.5), isolation="none", cache_dir=str(tiny_synthetic_cache), max_steps=3,
                  learning_rate=1e-3, batch_size=8, **asdict(tiny_synthetic_config))
    far = run_matched_kl("dpo", out_dir=str(tmp_path), kl_budget=1e6, **common)
    assert (tmp_path / "beta-0.05" / "result.json").is_file() and (tmp_path / "beta-0.5" / "result.json").is_file()
    kls = [p["kl"] for p in far.metrics["points"]]
    assert len(kls) == 2 and all(math.isfinite(k) and k >= 0 for k in kls), far.reason
    assert not far.ok and far.reason.startswith("matched KL: kl_budget 1e+06 is outside the measured KL range")
    r = run_matched_kl("dpo", kl_budget=(kls[0] + kls[1]) / 2, **common)
    assert r.ok, r.reason
    lo, hi = sorted(p["reward"] for p in r.metrics["points"])
    assert math.isfinite(r.metrics["reward_at_kl"]) and lo <= r.metrics["reward_at_kl"] <= hi
    assert r.config["reference_run"]["task"] == "synthetic" and r.metrics["kl_direction"].startswith("KL(pi||pi_ref)")
    assert len(trained) == 2
