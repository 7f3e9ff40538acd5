"""The campaign's search steps around the proposer: a one-seed pilot that reproduces an earlier
row's training ends the candidate as "trains like #k" (its other seeds unspent, the model told),
near-duplicates are refused before validation, a candidate that beats DPO gets its constants swept
without a model call, several proposals per request are all recorded before any is trained, and
the proposer is given the parents selection chose."""

from __future__ import annotations

import math

import pytest
import torch

import campaign_fakes
from campaign_fakes import fake_config
from discovery.archive import Archive
from discovery.campaign import run_campaign
from test_campaign import Scripted, steep

# DPO but flat below z = -1.5: the (fake) fingerprint's grid reaches there, training (here) does not
CLAMPED_DPO = "def clamped(rho, beta):\n    return F.softplus(-torch.clamp(beta * rho, min=-1.5))\n"


FAKE_TRAIN = campaign_fakes.train


def train_with_margins(objective, task="synthetic", beta=None, seed=0, out_dir=None, **kw):
    """The fake trainer, plus a margin record that follows the loss's slope and curvature at rho = 0
    (two losses with the same local shape 'train' identically here, as the clamped DPO and DPO do
    where training never reaches the clamp)."""
    result = FAKE_TRAIN(objective, task=task, beta=beta, seed=seed, out_dir=out_dir, **kw)
    obj = campaign_fakes._load(objective)
    rho = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    values = obj.of_rho(rho, beta or 0.1)
    (grad,) = torch.autograd.grad(values.sum(), rho)
    spread = float(grad[0] - grad[2]) * 100 + seed
    per_step = [[-spread * s, -0.1 * s, 0.0, 0.1 * s, spread * s] for s in range(3)]
    result["margins"] = {"quantity": "rho", "step_levels": [0, 0.05, 0.5, 0.95, 1], "step": [1, 2, 3],
                         "per_step": per_step, "pooled_levels": [0, 0.5, 1], "pooled": [-spread, 0.0, spread], "n": 48}
    return result


@pytest.fixture
def margins_trainer(monkeypatch):
    monkeypatch.setattr(campaign_fakes, "train", train_with_margins)


def test_a_candidate_that_trains_like_dpo_is_told_so_and_its_other_seeds_are_not_spent(tmp_path, margins_trainer):
    proposer = Scripted([CLAMPED_DPO, steep(3), steep(4)])
    config = fake_config(candidates=3, **{"training.seeds": [0, 1, 2]})
    run_campaign(tmp_path / "c", config, proposer=proposer, progress=False)
    with Archive.open(tmp_path / "c") as a:
        rows = {r["name"]: r for r in a.rows(kind="candidate")}
    clamped = rows["s1"]
    assert clamped["status"] == "duplicate" and clamped["duplicate_of"] == 1
    assert clamped["reason"].startswith("trains like #1 dpo: its one-seed pilot reproduced")
    assert [p["seed"] for p in clamped["metrics"]["per_seed"]] == [0]         # seeds 1 and 2 never trained
    assert [p["seed"] for p in rows["s2"]["metrics"]["per_seed"]] == [0, 1, 2]  # a real change trains on all
    told = [e for e in proposer.contexts[-1].history if e.name == "s1"][0]
    from discovery.feedback import safe_reason
    assert safe_reason(told.reason, told.code) == told.reason                  # the model sees the words as is


def test_near_duplicates_are_refused_before_validation(tmp_path):
    renamed = "def my_dpo(rho, beta):\n    z = beta * rho\n    return -F.logsigmoid(z * 1.0)\n"
    proposer = Scripted([steep(2), renamed, "def again(rho, beta):\n    return -F.logsigmoid(2 * (beta * rho))\n"])
    run_campaign(tmp_path / "c", fake_config(candidates=3), proposer=proposer, progress=False)
    with Archive.open(tmp_path / "c") as a:
        rows = a.rows(kind="candidate")
    assert [r["status"] for r in rows] == ["done", "duplicate", "duplicate"]
    assert rows[1]["duplicate_of"] == 1 and rows[2]["duplicate_of"] == rows[0]["id"]
    assert rows[1]["reason"].startswith("near-duplicate of #1 dpo before validation")
    assert rows[1]["checks"] is None                                            # no sandbox time spent


def test_a_candidate_that_beats_dpo_gets_its_constants_swept_without_a_model_call(tmp_path):
    proposer = Scripted([steep(3)])  # one proposal: every other row must come from the sweep
    config = fake_config(candidates=3, **{"proposer.sweep_constants": 2})
    run_campaign(tmp_path / "c", config, proposer=proposer, progress=False)
    with Archive.open(tmp_path / "c") as a:
        rows = a.rows(kind="candidate")
    assert len(proposer.contexts) == 1 and len(rows) == 3
    assert [r["proposer"] for r in rows] == ["scripted", "sweep", "sweep"]
    assert all(r["parents"] == ["s1"] for r in rows[1:])
    assert "1.5 * beta" in rows[1]["code"] and "6.0 * beta" in rows[2]["code"]  # x0.5 and x2 of the 3
    assert all(r["status"] == "done" for r in rows)


def test_several_proposals_per_request_are_recorded_before_any_trains(tmp_path):
    from discovery.evolve import EvolveProposer
    config = fake_config(candidates=4, **{"proposer.proposals_per_request": 2})
    run_campaign(tmp_path / "c", config, proposer=EvolveProposer.from_config(config), progress=False)
    with Archive.open(tmp_path / "c") as a:
        rows = a.rows(kind="candidate")
    assert len(rows) == 4
    for first, second in (rows[0:2], rows[2:4]):  # each request's rows exist before either trains
        started = [r["started_at"] for r in (first, second) if r["started_at"]]
        assert started and second["created_at"] < min(started)
    assert rows[2]["created_at"] > max(r["started_at"] or 0 for r in rows[:2])  # the next request came after


def test_the_proposer_is_given_the_parents_selection_chose(tmp_path):
    proposer = Scripted([steep(k) for k in range(2, 8)])
    run_campaign(tmp_path / "c", fake_config(candidates=6, **{"proposer.islands": 2}), proposer=proposer,
                 progress=False)
    islands = [c.island for c in proposer.contexts]
    assert islands == [0, 1, 0, 1, 0, 1]
    last = proposer.contexts[-1]
    assert last.parents and all(p.status == "done" for p in last.parents)
    own = {e.id for i, e in enumerate(last.history) if i % 2 == 1}
    baselines = {e.id for e in last.baselines}
    assert last.parents[0].id in own | baselines                       # the parent is from its island
    assert not math.isnan(last.parents[0].fitness)


CALLS = []


def fake_distributed(objective, *, nproc, drop_env=(), **kw):
    """Stands in for inner_loop.distributed.run_distributed: records how it was called."""
    CALLS.append({"nproc": nproc, "drop_env": list(drop_env), "isolation": kw.get("isolation")})
    return campaign_fakes.train(objective, **kw)


def test_gpus_per_candidate_trains_each_seed_as_one_multi_process_job(tmp_path, monkeypatch):
    from discovery import stages
    from discovery.config import UserError
    monkeypatch.setattr(stages, "DISTRIBUTED", f"{__name__}:fake_distributed")
    CALLS.clear()
    config = fake_config(candidates=1, baselines=("dpo",), **{"training.gpus_per_candidate": 2,
                                                              "training.isolation": "process"})
    run_campaign(tmp_path / "c", config, proposer=Scripted([steep(3)]), progress=False)
    assert CALLS and all(c["nproc"] == 2 and c["isolation"] == "process" for c in CALLS)
    assert "OPENAI_API_KEY" in CALLS[0]["drop_env"]                     # the keys never reach the ranks
    with Archive.open(tmp_path / "c") as a:
        assert [r["status"] for r in a.rows()] == ["done", "done"]
    # the sandbox cannot hold a multi-process job: the user must accept plain processes
    with pytest.raises(UserError, match="training.isolation: process"):
        run_campaign(tmp_path / "d", fake_config(**{"training.gpus_per_candidate": 2}),
                     proposer=Scripted([steep(3)]), progress=False)
