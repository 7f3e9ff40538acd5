"""Successive halving and extra seeds for a would-be best, with the fake trainer's per-seed win rates
set by the test (DISCO_FAKE_WINS / DISCO_FAKE_PER_PROMPT), so every decision is checked by hand; and a
kill -9 in the middle of a promotion, resumed."""

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from campaign_fakes import fake_config, kill_when
from discovery.archive import Archive
from discovery.campaign import resume_campaign, run_campaign
from discovery.cli import main
from discovery.proposal import Proposal

HERE = Path(__file__).resolve().parent
Z = 1.959963984540054


class Named:
    """Proposes the given (name, code) pairs in order."""

    name = "scripted"

    def __init__(self, items):
        self.items = list(items)

    def propose(self, context):
        name, code = self.items.pop(0)
        return Proposal(thought=f"{name} idea", name=name, code=code, proposer=self.name)


def loss(name, k):
    return name, f"def {name}(rho, beta):\n    return -F.logsigmoid({k} * beta * rho)\n"


def seeds_of(r):
    return [p["seed"] for p in r["metrics"]["per_seed"] if p["status"] == "done"]


def script(monkeypatch, wins, per_prompt=None):
    monkeypatch.setenv("DISCO_FAKE_WINS", json.dumps(wins))
    monkeypatch.setenv("DISCO_FAKE_PER_PROMPT", json.dumps(per_prompt or {}))


def test_screening_promotes_or_stops_on_the_paired_interval(tmp_path, monkeypatch, capsys):
    script(monkeypatch, {"dpo": {"0": 0.60, "1": 0.64, "2": 0.58}, "ipo": {"0": 0.59, "1": 0.61, "2": 0.60},
                         "bad": {"0": 0.50, "1": 0.9, "2": 0.9}, "good": {"0": 0.62, "1": 0.66, "2": 0.65}},
           {"dpo": {"0": [0.55, 0.65, 0.60, 0.60]}, "bad": {"0": [0.47, 0.53, 0.52, 0.48]},
            "good": {"0": [0.57, 0.67, 0.62, 0.62]}})
    cfg = fake_config(candidates=2, baselines=("dpo", "ipo"), seeds=(0, 1, 2), **{"training.screen_seeds": 1})
    run_campaign(tmp_path / "c", cfg, proposer=Named([loss("bad", 2), loss("good", 3)]), progress=False)
    with Archive.open(tmp_path / "c") as a:
        rows = {r["name"]: r for r in a.rows()}
    assert seeds_of(rows["dpo"]) == seeds_of(rows["ipo"]) == [0, 1, 2]  # baselines train on every seed

    bad = rows["bad"]
    d = [-0.08, -0.12, -0.08, -0.12]  # per prompt, bad - dpo on seed 0
    half = Z * statistics.stdev(d) / 2
    assert bad["status"] == "done" and seeds_of(bad) == [0] and bad["fitness"] == pytest.approx(0.50)
    assert bad["reason"] == (f"screened out: paired difference to DPO on seed(s) 0 -0.1000 [{-0.1 - half:+.4f}, "
                             f"{-0.1 + half:+.4f}] (one seed: 95% CI over 4 held-out prompts, evaluation noise only, "
                             "training noise not included) is clearly negative; not trained on seed(s) 1, 2")
    stage = bad["metrics"]["stage"]
    assert stage["outcome"] == "screened out" and stage["screen"]["promoted"] is False
    assert not (tmp_path / "c" / bad["folder"] / "seed-1").exists()

    good = rows["good"]
    assert good["status"] == "done" and good["reason"] is None and seeds_of(good) == [0, 1, 2]
    assert good["fitness"] == pytest.approx(statistics.fmean([0.62, 0.66, 0.65]))
    assert good["metrics"]["stage"]["name"] == "full" and good["metrics"]["stage"]["screen"]["promoted"] is True
    assert good["attempts"] == 2  # one start per stage

    assert main(["status", str(tmp_path / "c"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["best"]["name"] == "good"
    by_name = {r["name"]: r for r in s["leaderboard"]}
    assert by_name["bad"]["tags"] == ["screened out"] and by_name["good"]["tags"] == ["promoted"]
    paired = by_name["good"]["vs_dpo"]
    dd = [0.02, 0.02, 0.07]
    assert paired["diff"] == pytest.approx(statistics.fmean(dd))
    assert paired["hi"] - paired["diff"] == pytest.approx(4.302652729911275 * statistics.stdev(dd) / math.sqrt(3))
    assert main(["status", str(tmp_path / "c")]) == 0
    text = capsys.readouterr().out
    assert "screened out" in text and "candidates screened on the first 1 seed(s)" in text
    assert main(["show", str(tmp_path / "c"), "bad"]) == 0
    text = capsys.readouterr().out
    assert "(screened out)" in text and "screening on seed(s) [0]: screened out" in text
    assert "reason: screened out" in text


def test_a_would_be_best_trains_extra_seeds_first(tmp_path, monkeypatch):
    script(monkeypatch, {"dpo": {"0": 0.6, "1": 0.6}, "first": {"0": 0.7, "1": 0.7, "2": 0.6, "3": 0.6},
                         "worse": {"0": 0.62, "1": 0.62}, "better": {"0": 0.8, "1": 0.8, "2": 0.8, "3": 0.7}})
    cfg = fake_config(candidates=3, baselines=("dpo",), seeds=(0, 1), **{"training.best_extra_seeds": 2})
    result = run_campaign(tmp_path / "c", cfg, proposer=Named([loss("first", 2), loss("worse", 3),
                                                               loss("better", 4)]), progress=False)
    with Archive.open(tmp_path / "c") as a:
        rows = {r["name"]: r for r in a.rows()}
    assert seeds_of(rows["dpo"]) == [0, 1]
    assert seeds_of(rows["first"]) == [0, 1, 2, 3] and rows["first"]["fitness"] == pytest.approx(0.65)
    assert rows["first"]["metrics"]["stage"]["fitness_before"] == pytest.approx(0.7)
    assert seeds_of(rows["worse"]) == [0, 1]  # 0.62 < 0.65: not a would-be best
    assert seeds_of(rows["better"]) == [0, 1, 2, 3] and rows["better"]["fitness"] == pytest.approx(0.775)
    assert result["best"]["name"] == "better" and result["best"]["n_seeds"] == 4
    assert result["best"]["vs_dpo"]["seeds"] == [0, 1]  # paired with DPO on the seeds both have
    assert result["best"]["tags"] == ["+2 extra seeds"]


PROMOTE = """
import sys
import campaign_fakes
from campaign_fakes import fake_config
from discovery.campaign import run_campaign
from discovery.proposal import Proposal

class One:
    name = "scripted"
    def propose(self, context):
        return Proposal(thought="t", name="good", proposer="scripted",
                        code="def good(rho, beta):\\n    return -F.logsigmoid(3 * beta * rho)\\n")

campaign_fakes.install()
run_campaign(sys.argv[1], fake_config(candidates=1, baselines=("dpo",), seeds=(0, 1),
             **{"training.screen_seeds": 1}), proposer=One(), progress=False)
"""


def test_kill_9_in_the_middle_of_a_promotion_then_resume(tmp_path, monkeypatch):
    marks = tmp_path / "markers"
    wins = {"dpo": {"0": 0.6, "1": 0.62}, "good": {"0": 0.9, "1": 0.8}}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "DISCO_FAKE_MARKERS": str(marks), "DISCO_FAKE_TRAIN_SLEEP": "0.6", "DISCO_FAKE_WINS": json.dumps(wins)}
    (tmp_path / "promote.py").write_text(PROMOTE)
    out = tmp_path / "c"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "promote.py"), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    def promoting():  # the promoted candidate trains its second seed
        lines = marks.read_text().splitlines() if marks.exists() else []
        return lines and lines[-1].startswith("start") and "good" in lines[-1] and lines[-1].endswith("seed-1")

    kill_when(proc, promoting, f"the promotion never started: {marks.read_text() if marks.exists() else ''}")
    with Archive.open(out) as a:
        cut = a.find("good")
    assert cut["status"] == "training" and cut["metrics"]["stage"]["name"] == "full" and seeds_of(cut) == [0]

    for key in ("DISCO_FAKE_MARKERS", "DISCO_FAKE_WINS"):
        monkeypatch.setenv(key, env[key])
    resume_campaign(out, proposer=Named([]), progress=False)
    with Archive.open(out) as a:
        good = a.find("good")
    assert good["status"] == "done" and seeds_of(good) == [0, 1] and good["fitness"] == pytest.approx(0.85)
    assert good["attempts"] == 3  # screening once, the promotion twice (cut off, then again)
    lines = [tuple(x.split(" ", 1)) for x in marks.read_text().splitlines()]
    for seed, starts in ((0, 1), (1, 2)):
        path = str(out / good["folder"] / f"seed-{seed}")
        assert sum(p == path for k, p in lines if k == "start") == starts
        assert sum(p == path for k, p in lines if k == "end") == 1  # trained to the end exactly once
