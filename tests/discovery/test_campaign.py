"""The campaign loop with fake validator, fingerprinter and trainer (fast, no sandbox, no training)."""

import dataclasses
import json
import os
from pathlib import Path

import pytest

import campaign_fakes
from campaign_fakes import fake_config
from discovery.archive import Archive
from discovery.campaign import resume_campaign, run_campaign
from discovery.proposal import Proposal
from fake_openai import FakeOpenAI, reply

DPO_AGAIN = "def again(rho, beta):\n    return F.softplus(-beta * rho)\n"  # DPO, written otherwise


class Scripted:
    """A fake proposer that hands out a fixed list of proposals and records each context."""

    name = "scripted"

    def __init__(self, codes):
        self.codes, self.contexts = list(codes), []

    def propose(self, context):
        self.contexts.append(context)
        code = self.codes[len(self.contexts) - 1]
        return Proposal(thought=f"idea {len(self.contexts)}", name=f"s{len(self.contexts)}", code=code,
                        proposer=self.name)


def steep(k):
    return f"def steep(rho, beta):\n    return -F.logsigmoid({k} * beta * rho)\n"


def test_baselines_first_then_candidates_with_fitness(tmp_path):
    proposer = Scripted([steep(2), steep(3)])
    result = run_campaign(tmp_path / "c", fake_config(candidates=2), proposer=proposer, progress=False)
    with Archive.open(tmp_path / "c") as a:
        rows, seams = a.rows(), a.meta("seams")
    assert [(r["kind"], r["name"]) for r in rows[:3]] == [("baseline", "dpo"), ("baseline", "ipo"),
                                                          ("baseline", "lrml")]
    assert all(r["status"] == "done" and r["fitness"] is not None for r in rows)
    assert len(rows) == 5 and result["counts"]["done"] == 2
    assert {b.name for b in proposer.contexts[0].baselines} == {"dpo", "ipo", "lrml"}
    assert all(b.fitness is not None for b in proposer.contexts[0].baselines)
    row = rows[3]
    assert len(row["metrics"]["per_seed"]) == 2 and row["fitness_se"] is not None
    assert row["config"]["training"]["seeds"] == [0, 1] and seams["train"] == "campaign_fakes:train"
    folder = tmp_path / "c" / row["folder"]
    assert (folder / "proposal.md").is_file() and (folder / "seed-1" / "result.json").is_file()
    assert (tmp_path / "c" / "campaign.log").read_text().count("done: fitness") == 5


def test_invalid_duplicate_and_failed_are_typed_outcomes(tmp_path):
    codes = ["def broken(rho, beta):\n    return torch.log(rho)\n",  # NaN for rho < 0
             DPO_AGAIN,
             "def f(rho, beta):\n    # FAIL_TRAINING\n    return -F.logsigmoid(1.5 * beta * rho)\n",
             "import os\ndef f(rho, beta):\n    return rho\n"]
    run_campaign(tmp_path / "c", fake_config(candidates=4), proposer=Scripted(codes), progress=False)
    with Archive.open(tmp_path / "c") as a:
        rows = a.rows(kind="candidate")
    assert [r["status"] for r in rows] == ["invalid", "duplicate", "failed", "invalid"]
    assert "non-finite" in rows[0]["reason"]
    assert rows[1]["reason"] == "computes the same function as #1 dpo" and rows[1]["duplicate_of"] == 1
    assert rows[2]["reason"] == "seed 0: non-finite loss (nan) at step 3" and rows[2]["fitness"] is None
    assert "os" in rows[3]["reason"]
    assert all(r["finished_at"] for r in rows)


def test_resume_finishes_interrupted_rows_exactly_once(tmp_path):
    run_campaign(tmp_path / "c", fake_config(candidates=1), proposer=Scripted([steep(2)]), progress=False)
    with Archive.open(tmp_path / "c") as a:  # forge the states a crash leaves behind
        cut = a.add(kind="candidate", name="cut", code=steep(4))
        a.start_training(cut)
        (a.dir / a.get(cut)["folder"] / "seed-0").mkdir()
        (a.dir / a.get(cut)["folder"] / "seed-0" / "partial.bin").write_text("half a model")
        pending = a.add(kind="candidate", name="pending", code=steep(5))
        dead = a.add(kind="candidate", name="dead", code=steep(6))
        a.start_training(dead)
        a.start_training(dead)  # it already killed its process twice
    resume_campaign(tmp_path / "c", proposer=Scripted([]), progress=False, candidates=4)
    with Archive.open(tmp_path / "c") as a:
        by_name = {r["name"]: r for r in a.rows(kind="candidate")}
        folder = a.dir / by_name["cut"]["folder"]
        assert a.config["candidates"] == 4
    # a start is counted per stage: the crashed one, then the one-seed pilot and the other seeds
    assert by_name["cut"]["status"] == "done" and by_name["cut"]["attempts"] == 3
    assert not (folder / "seed-0" / "partial.bin").exists()
    assert by_name["pending"]["status"] == "done" and by_name["pending"]["attempts"] == 2
    assert by_name["dead"]["status"] == "failed" and "interrupted 2 times" in by_name["dead"]["reason"]
    assert len(by_name) == 4


def test_context_is_rebuilt_from_the_archive(tmp_path):
    proposer = Scripted([steep(2), "def bad(rho, beta):\n    return torch.log(rho)\n", steep(3)])
    run_campaign(tmp_path / "c", fake_config(candidates=3), proposer=proposer, progress=False)
    last = proposer.contexts[-1]
    assert last.n_proposed == 2
    assert [e.name for e in last.failures] == ["s2"] and "non-finite" in last.failures[0].reason
    assert [e.name for e in last.best] == ["s1"]


def test_workers_train_in_separate_processes(tmp_path, monkeypatch):
    here = str(Path(__file__).resolve().parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("DISCO_FAKE_MARKERS", str(tmp_path / "markers"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-in-a-worker")
    monkeypatch.setenv("DISCO_FAKE_TRAIN_SLEEP", "0.5")
    cfg = fake_config(candidates=2, workers=2, baselines=("dpo",), seeds=(0,))
    run_campaign(tmp_path / "c", cfg, proposer=Scripted([steep(2), steep(3)]), progress=False)
    with Archive.open(tmp_path / "c") as a:
        rows = a.rows()
    assert [r["status"] for r in rows] == ["done"] * 3
    assert sorted(line.split()[0] for line in (tmp_path / "markers").read_text().splitlines()) == \
        ["end"] * 3 + ["start"] * 3
    assert all((tmp_path / "c" / r["folder"] / name).is_file() for r in rows
               for name in ("worker.log", "worker.json", "worker-result.json"))


def test_llm_campaign_feeds_errors_back_and_never_writes_the_key(tmp_path, monkeypatch, capfd):
    secret = "sk-DISTINCTIVE-9f8e7d6c5b4a"
    monkeypatch.setenv("DISCO_SECRET_KEY", secret)
    good = {"thought": "steeper", "name": "steeper", "code": steep(2)}
    nan = {"thought": "log margin", "name": "log_margin",
           "code": "def log_margin(rho, beta):\n    return torch.log(rho)\n"}
    script = [reply(json.dumps(nan)), reply("not json at all {"), reply(json.dumps(good), 200, 30)]
    with FakeOpenAI(script) as server:
        cfg = fake_config(candidates=3, proposer="openai", base_url=server.url, model="fake",
                          api_key_env="DISCO_SECRET_KEY")
        run_campaign(tmp_path / "c", cfg, progress=True)
    prompts = server.prompts()
    assert "non-finite" in prompts[1] and "log_margin" in prompts[1]  # the validation error came back
    assert "could not be parsed" in prompts[2]                      # and so did the parse error
    with Archive.open(tmp_path / "c") as a:
        rows = a.rows(kind="candidate")
    assert [r["status"] for r in rows] == ["invalid", "invalid", "done"]
    assert (rows[2]["prompt_tokens"], rows[2]["completion_tokens"]) == (200, 30)
    assert all(server.requests[i]["headers"]["authorization"] == f"Bearer {secret}" for i in range(3))
    out, err = capfd.readouterr()
    assert secret not in out + err
    files = [p for p in (tmp_path / "c").rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


def test_fitness_is_a_seam(tmp_path):
    seams = dataclasses.replace(campaign_fakes.seams(), fitness=campaign_fakes.lowest_kl)
    run_campaign(tmp_path / "c", fake_config(candidates=1), proposer=Scripted([steep(2)]), seams=seams,
                 progress=False)
    with Archive.open(tmp_path / "c") as a:
        rows = a.rows()
        assert a.meta("seams")["fitness"] == "campaign_fakes:lowest_kl"
    assert all(r["fitness"] == pytest.approx(-r["metrics"]["mean"]["kl"]) for r in rows)
    assert all(r["fitness_se"] is None for r in rows)


@pytest.mark.real_seams
def test_the_default_seams_are_the_projects_own_functions():
    from discovery.seams import Seams
    seams = Seams.default(fake_config()).describe()
    assert seams == {"validate": "objectives.validate:validate",
                     "fingerprint": "objectives.fingerprint:fingerprint",
                     "fingerprint_from_dict": "objectives.fingerprint:Fingerprint.from_dict",
                     "find_duplicate": "objectives.fingerprint:find_duplicate",
                     "inspect": None,  # fake_config turns inspection off
                     "fitness": "discovery.seams:mean_metric",
                     "train": "inner_loop.runner:run_candidate"}
    assert Seams.default(fake_config(**{"execution.inspect": True})).describe()["inspect"] == \
        "objectives.inspection:inspect_objective"


def test_workers_need_a_train_function_a_worker_can_import(tmp_path):
    def local_train(*args, **kwargs):
        return campaign_fakes.train(*args, **kwargs)

    seams = dataclasses.replace(campaign_fakes.seams(), train=local_train)
    with pytest.raises(ValueError, match="cannot be imported by a worker process"):
        run_campaign(tmp_path / "c", fake_config(workers=2), proposer=Scripted([]), seams=seams,
                     progress=False)
    assert not (tmp_path / "c").exists()


def test_the_measured_kind_reaches_the_trainer(tmp_path, monkeypatch):
    kinds = []

    def validate(source, beta=0.1, timeout=20.0):  # a report that measured the kind
        report = campaign_fakes.validate(source, beta, timeout)
        return {**report.to_dict(), "kind": "pointwise"}

    def train(objective, kind=None, **kwargs):
        kinds.append(kind)
        return campaign_fakes.train(objective, kind=kind, **kwargs)

    seams = dataclasses.replace(campaign_fakes.seams(), validate=validate, train=train)
    run_campaign(tmp_path / "c", fake_config(candidates=1, baselines=(), seeds=(0,)),
                 proposer=Scripted([steep(2)]), seams=seams, progress=False)
    assert kinds == ["pointwise"]


def test_a_running_campaign_cannot_be_resumed_twice(tmp_path):
    import fcntl

    from discovery.archive import ArchiveError
    run_campaign(tmp_path / "c", fake_config(candidates=1), proposer=Scripted([steep(2)]), progress=False)
    with open(tmp_path / "c" / "campaign.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a live `disco run` holds it
        with pytest.raises(ArchiveError, match="another process"):
            resume_campaign(tmp_path / "c", proposer=Scripted([]), progress=False, candidates=2)
        with Archive.open(tmp_path / "c") as a:
            assert a.config["candidates"] == 1  # the refused resume changed nothing
    resume_campaign(tmp_path / "c", proposer=Scripted([steep(3)]), progress=False, candidates=2)


@pytest.mark.real_seams
def test_matched_kl_fitness_trains_through_run_matched_kl_with_its_budget():
    from discovery.seams import Seams, import_name, train_at_matched_kl
    seams = Seams.default(fake_config(**{"fitness.kl_budget": 3.0, "fitness.kl_betas": [0.1, 0.3]}))
    described = seams.describe()
    assert described["train"] == "discovery.seams:train_at_matched_kl"
    assert described["train_kwargs"] == {"kl_budget": 3.0, "betas": [0.1, 0.3]}
    assert import_name(described["train"]) is train_at_matched_kl  # a worker imports it by name


def test_train_kwargs_reach_every_train_call_through_the_worker_spec(tmp_path):
    from discovery import training
    calls = []

    def train(objective, **kwargs):
        calls.append(kwargs)
        return campaign_fakes.train(objective, **{k: v for k, v in kwargs.items()
                                                  if k not in ("kl_budget", "betas")})

    seams = dataclasses.replace(campaign_fakes.seams(), train=train,
                                train_kwargs={"kl_budget": 2.0, "betas": [0.1, 0.5]})
    run_campaign(tmp_path / "c", fake_config(candidates=0, baselines=("dpo",), seeds=(0, 1)),
                 proposer=Scripted([]), seams=seams, progress=False)
    assert [(c["seed"], c["kl_budget"], c["betas"]) for c in calls] == [(0, 2.0, [0.1, 0.5]), (1, 2.0, [0.1, 0.5])]
    spec = training.spec_for(campaign_fakes._load("dpo") and __import__("objectives").resolve("dpo"), tmp_path,
                             fake_config(), 0.1, train="m:f", seeds=[4], train_kwargs={"kl_budget": 2.0})
    assert spec["seeds"] == [4] and json.loads(json.dumps(spec))["train_kwargs"] == {"kl_budget": 2.0}


def test_a_calibration_file_is_the_campaigns_noise_floor(tmp_path):
    from discovery.config import UserError
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({"metric": "win_rate", "n_seeds": 5, "paired_sd": 0.02, "min_detectable": 0.025}))
    run_campaign(tmp_path / "c", fake_config(candidates=1, **{"fitness.calibration": str(cal)}),
                 proposer=Scripted([steep(2)]), progress=False)
    with Archive.open(tmp_path / "c") as a:
        noise = a.meta("noise")
    assert noise["source"] == "calibration" and noise["n_seeds"] == 2 and noise["paired_se"] == pytest.approx(0.02 / 2 ** 0.5)
    with pytest.raises(UserError, match="cannot read it"):
        run_campaign(tmp_path / "d", fake_config(**{"fitness.calibration": str(tmp_path / "none.json")}),
                     proposer=Scripted([]), progress=False)
    assert not (tmp_path / "d").exists()  # refused before anything was made


def test_a_one_seed_campaign_prints_no_seed_level_pm(tmp_path, capsys):
    from discovery.cli import main
    run_campaign(tmp_path / "c", fake_config(candidates=1, seeds=(0,)), proposer=Scripted([steep(2)]), progress=False)
    assert main(["status", str(tmp_path / "c")]) == 0
    text = capsys.readouterr().out
    import re
    assert not re.search(r"± \d", text), text
    assert "noise floor: unknown (one seed: run `disco calibrate`)" in text and "eval se" in text
    assert "one seed: 95% CI over 8 held-out prompts, evaluation noise only, training noise not included" in text
    assert main(["show", str(tmp_path / "c"), "4"]) == 0
    text = capsys.readouterr().out
    fitness = next(line for line in text.splitlines() if line.startswith("fitness:"))
    assert not re.search(r"± \d", fitness) and "within-seed eval se 0.0100, training noise not included" in fitness
    # the metric lines' ± is the evaluation se over held-out prompts, and is labelled so
    assert "± is the standard error over held-out prompts (one seed's evaluation noise only)" in text
