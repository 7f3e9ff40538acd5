"""Budget caps (tokens, cost, wall time, training seconds): a campaign stops cleanly at a cap, says
why (run output, archive meta, `disco status`), and `disco resume --set budget.X=N` continues."""

import json

import pytest
import yaml

import campaign_fakes
from campaign_fakes import fake_config
from discovery import budget
from discovery.archive import Archive
from discovery.campaign import resume_campaign, run_campaign
from discovery.cli import main
from discovery.config import BudgetConfig
from discovery.proposal import Proposal
from fake_openai import FakeOpenAI, reply


def steep(k):
    return f"def steep(rho, beta):\n    return -F.logsigmoid({k} * beta * rho)\n"


def replies(n=12):
    """Distinct proposals, 120 prompt + 80 completion tokens each."""
    return [reply(json.dumps({"thought": f"steeper {k}", "name": f"steep{k}", "code": steep(k)}))
            for k in range(2, 2 + n)]


class Scripted:
    name = "scripted"

    def __init__(self, codes, tokens=None):
        self.codes, self.contexts, self.tokens = list(codes), [], tokens

    def propose(self, context):
        self.contexts.append(context)
        k = len(self.contexts)
        return Proposal(thought=f"idea {k}", name=f"s{k}", code=self.codes[k - 1], proposer=self.name,
                        prompt_tokens=self.tokens, completion_tokens=0 if self.tokens else None)


class SlowExecutor:
    """Workers in this process: a job's results come on its third poll (it "runs" meanwhile)."""

    def __init__(self):
        self.polls, self.cancelled = {}, []

    def submit(self, spec):
        from discovery.training import train_seeds
        handle = len(self.polls)
        self.polls[handle] = [0, train_seeds(spec, campaign_fakes.train)]
        return handle

    def poll(self, handle):
        self.polls[handle][0] += 1
        return self.polls[handle][1] if self.polls[handle][0] >= 3 else None

    def cancel(self, handle):
        self.cancelled.append(handle)


def llm_config(tmp_path, server, **changes):
    path = tmp_path / "campaign.yaml"
    changes.setdefault("prompt.lessons_every", 0)  # no lessons requests: every request here is a proposal
    cfg = fake_config(candidates=6, proposer="openai", base_url=server.url, model="fake", **changes)
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def candidates(out):
    with Archive.open(out) as a:
        return a.rows(kind="candidate")


def status_json(out, capsys):
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_token_cap_stops_after_the_crossing_proposal_and_resume_raises_it(tmp_path, capsys):
    out = tmp_path / "c"
    with FakeOpenAI(replies()) as server:
        cfg = llm_config(tmp_path, server)
        assert main(["run", "--out", str(out), "--config", str(cfg), "--set", "budget.max_tokens=500",
                     "--quiet"]) == 0
        printed = capsys.readouterr().out
        # 200 tokens a proposal: the third crosses 500, and no fourth is asked for
        assert len(server.requests) == 3 and len(candidates(out)) == 3
        assert all(r["status"] == "done" for r in candidates(out))  # the crossing one is trained too
        assert "stopped: budget.max_tokens reached: 600 of 500 tokens" in printed
        assert f"disco resume {out} --set budget.max_tokens=1100" in printed
        with Archive.open(out) as a:
            stopped, wall = a.meta("stopped"), a.meta("wall_seconds")
        assert stopped["cap"] == "budget.max_tokens" and stopped["at"] > 0 and wall > 0
        assert "budget.max_tokens reached: 600 of 500 tokens" in (out / "campaign.log").read_text()

        s = status_json(out, capsys)
        assert s["state"] == "stopped" and s["stopped"]["reason"].startswith("budget.max_tokens reached")
        assert s["budget"]["spent"]["tokens"] == 600 and s["budget"]["caps"]["max_tokens"] == 500
        assert s["budget"]["caps"]["max_cost"] is None
        assert main(["status", str(out)]) == 0
        text = capsys.readouterr().out
        assert "stopped at a budget cap: budget.max_tokens reached: 600 of 500 tokens" in text
        assert "budget: tokens 600 of 500 (reached); cost $0.00 (no cap)" in text
        assert "(fake unpriced: not in budget.prices)" in text

        # the same cap: stops at once, no request made
        assert main(["resume", str(out), "--quiet"]) == 0
        assert "stopped: budget.max_tokens reached: 600 of 500 tokens" in capsys.readouterr().out
        assert len(server.requests) == 3 and len(candidates(out)) == 3

        # a higher cap: continues to the candidate count
        assert main(["resume", str(out), "--set", "budget.max_tokens=5000", "--quiet"]) == 0
        assert "stopped:" not in capsys.readouterr().out
    assert len(server.requests) == 6 and [r["status"] for r in candidates(out)] == ["done"] * 6
    s = status_json(out, capsys)
    assert s["state"] == "finished" and s["stopped"] is None and s["budget"]["spent"]["tokens"] == 1200
    assert s["config"]["budget"]["max_tokens"] == 5000


def test_cost_cap_prices_the_model_per_million_tokens(tmp_path, capsys):
    out = tmp_path / "c"
    prices = json.dumps({"fake": [1000, 2000]})  # 120 * 1000/1e6 + 80 * 2000/1e6 = $0.28 a proposal
    with FakeOpenAI(replies()) as server:
        cfg = llm_config(tmp_path, server)
        assert main(["run", "--out", str(out), "--config", str(cfg), "--set", "budget.max_cost=0.5",
                     "--set", f"budget.prices={prices}", "--quiet"]) == 0
        assert len(server.requests) == 2 and len(candidates(out)) == 2
        assert "stopped: budget.max_cost reached: $0.56 of $0.50" in capsys.readouterr().out
        s = status_json(out, capsys)
        assert s["budget"]["spent"]["cost"] == pytest.approx(0.56) and s["budget"]["spent"]["unpriced"] == []
        assert s["stopped"]["continue"] == f"disco resume {out} --set budget.max_cost=1.06"
        assert main(["resume", str(out), "--set", "budget.max_cost=1", "--quiet"]) == 0
    assert len(candidates(out)) == 4  # $1.12 >= $1 after the fourth


def test_unpriced_model_costs_nothing_and_says_so(tmp_path, capsys):
    with FakeOpenAI(replies()) as server:
        cfg = fake_config(candidates=2, proposer="openai", base_url=server.url, model="fake",
                          **{"budget.max_cost": 0.01, "budget.prices": {"other": [1, 1]}})
        result = run_campaign(tmp_path / "c", cfg, progress=False)
    assert result["stopped"] is None and len(candidates(tmp_path / "c")) == 2
    assert "no price for model 'fake'" in (tmp_path / "c" / "campaign.log").read_text()
    with Archive.open(tmp_path / "c") as a:
        spent = budget.spent(a, cfg)
    assert spent.tokens == 400 and spent.cost == 0 and spent.unpriced == ("fake",)
    assert "cost $0.00 of $0.01 ($0.01 left) (fake unpriced" in budget.words(spent, cfg.budget)


def test_train_seconds_cap_and_the_prompt_sees_what_is_left(tmp_path, monkeypatch):
    real = campaign_fakes.train

    def ten_seconds(*args, **kwargs):
        return {**real(*args, **kwargs), "seconds": {"train": 8.0, "total": 10.0}}
    monkeypatch.setattr(campaign_fakes, "train", ten_seconds)
    proposer = Scripted([steep(k) for k in range(2, 8)])
    cfg = fake_config(candidates=4, **{"budget.max_train_seconds": 100})  # 2 seeds: 20 s a row
    result = run_campaign(tmp_path / "c", cfg, proposer=proposer, progress=False)
    # baselines 60 s, then 80 s, 100 s: no third proposal
    assert len(proposer.contexts) == 2 and len(candidates(tmp_path / "c")) == 2
    assert result["stopped"]["reason"] == "budget.max_train_seconds reached: 100 of 100 s"
    assert proposer.contexts[0].budget_left == "training time 60 of 100 s (40 s left)"
    assert proposer.contexts[1].budget_left == "training time 80 of 100 s (20 s left)"

    result = resume_campaign(tmp_path / "c", proposer=proposer, progress=False,
                             **{"budget.max_train_seconds": None})  # no cap
    assert result["stopped"] is None and len(candidates(tmp_path / "c")) == 4
    assert proposer.contexts[-1].budget_left == ""  # no cap, nothing to say


def test_at_a_cap_running_jobs_finish_and_nothing_is_cancelled(tmp_path):
    executor = SlowExecutor()
    cfg = fake_config(candidates=6, workers=2, baselines=("dpo",), seeds=(0,), **{"budget.max_tokens": 250})
    result = run_campaign(tmp_path / "c", cfg, proposer=Scripted([steep(k) for k in range(2, 8)], tokens=100),
                          executor=executor, progress=False)
    assert result["stopped"]["reason"] == "budget.max_tokens reached: 300 of 250 tokens"
    assert [r["status"] for r in candidates(tmp_path / "c")] == ["done"] * 3  # two were running at the cap
    assert executor.cancelled == [] and len(executor.polls) == 4


def test_wall_time_adds_up_over_resumes_and_caps_them(tmp_path):
    run_campaign(tmp_path / "c", fake_config(candidates=1), proposer=Scripted([steep(2)]), progress=False)
    with Archive.open(tmp_path / "c") as a:
        first = a.meta("wall_seconds")
        a.set_meta("wall_seconds", first + 100)  # as if it had run 100 s longer
    proposer = Scripted([steep(3)])
    result = resume_campaign(tmp_path / "c", proposer=proposer, progress=False, candidates=3,
                             **{"budget.max_wall_seconds": 50})
    assert proposer.contexts == [] and len(candidates(tmp_path / "c")) == 1
    assert result["stopped"]["reason"].startswith("budget.max_wall_seconds reached: 10")
    with Archive.open(tmp_path / "c") as a:
        assert a.meta("wall_seconds") >= first + 100


def test_bad_budget_values_are_one_line_errors_and_nothing_is_made(tmp_path, capsys):
    cfg = tmp_path / "campaign.yaml"
    cfg.write_text(yaml.safe_dump(fake_config(candidates=1).to_dict()))
    out = tmp_path / "c"
    for setting, words in [("budget.max_tokens=0", "budget.max_tokens must be an integer >= 1, not 0"),
                           ("budget.max_cost=-1", "budget.max_cost must be a number > 0, not -1"),
                           ('budget.prices={"m": [1]}', "budget.prices.m must be [price per 1M prompt tokens"),
                           ("budget.max_token=5", "did you mean 'budget.max_tokens'")]:
        assert main(["run", "--out", str(out), "--config", str(cfg), "--set", setting, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
        assert not out.exists()
    assert main(["run", "--out", str(out), "--config", str(cfg), "--quiet"]) == 0
    for setting, words in [("budget.max_wall_seconds=nan", "budget.max_wall_seconds must be a number > 0"),
                           ("training.seeds=[0]", "disco resume --set cannot change 'training.seeds'")]:
        capsys.readouterr()
        assert main(["resume", str(out), "--set", setting, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    with Archive.open(out) as a:
        assert a.config["budget"]["max_wall_seconds"] is None and a.config["training"]["seeds"] == [0, 1]
    with pytest.raises(ValueError, match="budget.prices must map model names"):
        budget.check_prices(BudgetConfig(prices=[1, 2]))
