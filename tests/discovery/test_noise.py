"""discovery.noise: paired differences to DPO with intervals checked by hand, the noise record from a
calibration file or the campaign's own baselines, and what status prints for one seed."""

import json
import math
import statistics

import pytest

from discovery import noise
from discovery.config import UserError

T975_2 = 4.302652729911275   # t(0.975, df=2)
Z = 1.959963984540054


def row(name, values, kind="candidate", per_prompt=None, se=0.01):
    """An archive row whose seed i scored values[i] (a dict seed -> value, or a list for seeds 0..)."""
    values = values if isinstance(values, dict) else dict(enumerate(values))
    per_seed = [{"seed": s, "status": "done",
                 "metrics": {"win_rate": v, "win_rate_se": se,
                             **({"per_prompt": {"win_rate": per_prompt[s]}} if per_prompt else {})}}
                for s, v in values.items()]
    return {"id": hash(name) % 1000, "name": name, "kind": kind, "status": "done", "metrics": {"per_seed": per_seed}}


def test_paired_difference_over_seeds_is_a_t_interval_on_shared_seeds():
    dpo = row("dpo", [0.60, 0.64, 0.58], kind="baseline")
    cand = row("c", {0: 0.66, 1: 0.67, 2: 0.63, 3: 0.99})  # seed 3 is not DPO's: left out
    p = noise.paired_to(cand, dpo, "win_rate")
    d = [0.06, 0.03, 0.05]
    se = statistics.stdev(d) / math.sqrt(3)
    assert p["seeds"] == [0, 1, 2] and p["n_seeds"] == 3 and p["basis"] == "seeds"
    assert p["diff"] == pytest.approx(statistics.fmean(d)) and p["se"] == pytest.approx(se)
    assert (p["lo"], p["hi"]) == pytest.approx((statistics.fmean(d) - T975_2 * se, statistics.fmean(d) + T975_2 * se))
    assert p["what"] == "95% CI over 3 seeds (t, paired by seed)"
    assert p["within_noise"] is False and noise.interval_text(p) == "+0.0467 [+0.0087, +0.0846]"
    assert noise.paired_to(cand, None, "win_rate") is None
    assert noise.paired_to(row("x", {7: 0.5}), dpo, "win_rate") is None  # no shared seed


def test_one_seed_uses_held_out_prompts_and_says_training_noise_is_not_included():
    a, b = [0.7, 0.6, 0.8, 0.5], [0.6, 0.6, 0.7, 0.6]
    cand, dpo = row("c", [0.65], per_prompt=[a]), row("dpo", [0.625], kind="baseline", per_prompt=[b])
    p = noise.paired_to(cand, dpo, "win_rate")
    d = [x - y for x, y in zip(a, b)]
    se = statistics.stdev(d) / 2
    assert p["basis"] == "prompts" and p["diff"] == pytest.approx(0.025)
    assert (p["lo"], p["hi"]) == pytest.approx((0.025 - Z * se, 0.025 + Z * se))
    assert "one seed" in p["what"] and "evaluation noise only, training noise not included" in p["what"]
    # with a calibration stored, its seed term widens the interval, and the words say so
    cal = {"source": "calibration", "paired_sd": 0.03, "min_detectable": 0.05}
    w = noise.paired_to(cand, dpo, "win_rate", cal)
    assert w["se"] == pytest.approx(math.sqrt(se ** 2 + 0.03 ** 2)) and "widened by the calibration" in w["what"]
    assert w["within_noise"] is True  # |0.025| < 0.05, and the interval holds 0
    # neither per-prompt values nor a calibration: a difference without an interval
    bare = noise.paired_to(row("c", [0.65]), row("dpo", [0.6], kind="baseline"), "win_rate")
    assert bare["lo"] is None and bare["basis"] == "none" and "no interval" in bare["what"]
    assert bare["within_noise"] is None and noise.noise_mark(bare) == "?"
    assert noise.within_noise(bare, {"min_detectable": 0.1}) is True
    assert noise.within_noise(bare, {"min_detectable": 0.01}) is False
    assert not noise.clearly_negative(bare)


def test_the_noise_record_from_the_baselines_or_unknown():
    rows = [row("dpo", [0.60, 0.64, 0.58], kind="baseline"), row("ipo", [0.59, 0.61, 0.60], kind="baseline"),
            row("lrml", [0.1, 0.1, 0.1], kind="baseline")]
    rec = noise.from_baselines(rows, "win_rate")
    sd = statistics.stdev([0.01, 0.03, -0.02])
    assert rec["source"] == "baselines" and rec["pair"] == ["dpo", "ipo"] and rec["n_seeds"] == 3
    assert rec["paired_sd"] == pytest.approx(sd) and rec["paired_se"] == pytest.approx(sd / math.sqrt(3))
    assert rec["min_detectable"] == pytest.approx((Z + 0.8416212335729143) * sd / math.sqrt(3))
    assert "DPO - IPO per seed over 3 seeds" in rec["label"] and rec["within_seed_se"] == pytest.approx(0.01)
    one = noise.from_baselines([row("dpo", [0.6], kind="baseline"), row("ipo", [0.5], kind="baseline")], "win_rate")
    assert one == {"source": "unknown", "metric": "win_rate", "label": "unknown (one seed: run `disco calibrate`)"}
    assert noise.floor_line(one) == "noise floor: unknown (one seed: run `disco calibrate`)"
    assert noise.floor_line(rec).startswith(f"noise floor: smallest detectable difference {rec['min_detectable']:.4f}")


def test_a_calibration_file_is_read_scaled_to_the_campaigns_seeds_and_checked(tmp_path):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"metric": "win_rate", "seeds": [0, 1, 2, 3, 4], "n_seeds": 5, "within_seed_se": 0.01,
                                "seed_sd": 0.02, "paired_sd": 0.02, "min_detectable": 0.025, "effect_over_sft": 0.1}))
    rec = noise.load_calibration(path, "win_rate", n=4)
    assert rec["source"] == "calibration" and rec["calibrated_seeds"] == 5 and rec["n_seeds"] == 4
    assert rec["paired_se"] == pytest.approx(0.01) and rec["min_detectable"] == pytest.approx(0.028016, abs=1e-6)
    assert str(path) in rec["label"] and "disco calibrate" in rec["label"]
    with pytest.raises(UserError, match="measured 'win_rate', but the campaign's fitness metric is 'reward_gain'"):
        noise.load_calibration(path, "reward_gain")
    for text, words in (("{", "is not JSON"), ("[1]", "expected a JSON object"), ('{"metric": "win_rate"}', "neither")):
        path.write_text(text)
        with pytest.raises(UserError, match=words) as err:
            noise.load_calibration(path)
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="cannot read it"):
        noise.load_calibration(tmp_path / "missing.json")


def test_fitness_words_never_call_a_one_seed_error_a_seed_level_pm():
    three, one = row("a", [0.6, 0.62, 0.64]), row("b", [0.6])
    three.update(fitness=0.62, fitness_se=0.0115)
    one.update(fitness=0.6, fitness_se=0.01)
    assert noise.fitness_text(three) == "0.6200 ± 0.0115 (se over 3 seeds)"
    assert noise.fitness_text(one) == ("0.6000 (one seed: no seed-level ±; within-seed eval se 0.0100, "
                                       "training noise not included)")
    assert noise.se_words(three) == "± se over 3 seeds" and noise.se_words(one, metric="win_rate").startswith(
        "one seed: no seed-level ±; win_rate_se is the within-seed eval se")
