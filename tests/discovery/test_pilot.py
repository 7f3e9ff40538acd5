"""The one-seed pilot (issue 12): a candidate whose first seed reproduces an earlier row's training is
"trains like #k"; the margins training visits make the fingerprint see what training sees.

Real training on the tiny synthetic task (tests/inner_loop/conftest.py's config, 8 steps): DPO on
seeds 0 and 1, ``softplus(-clamp(z, min=-2.5))`` (DPO wherever training goes: z never drops below
-2.5 here), IPO and DPO at 1.3 x beta on seed 0 (in this process: the test's code is trusted). The isolated
job's side, the margins it writes into its result file, is checked by calling the job in this
process (a sandbox or process start costs more than this whole file)."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from discovery import pilot, training
from inner_loop.runner import run_candidate
from inner_loop.train_config import margins_record
from objectives.fingerprint import Fingerprint, measure, visited_grid
from objectives.loader import from_source, get
from tests.inner_loop.conftest import TINY_SYNTHETIC

CLAMPED = ("import torch\nimport torch.nn.functional as F\n\n"
           "def dpo_clamped(rho, beta):\n    return F.softplus(-torch.clamp(beta * rho, min=-2.5))\n")
STEEPER = "import torch.nn.functional as F\n\ndef dpo_steeper(rho, beta):\n    return F.softplus(-1.3 * beta * rho)\n"
BETA = 0.1


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    over = {**TINY_SYNTHETIC, "cache_dir": str(tmp_path_factory.mktemp("cache")), "max_steps": 8,
            "batch_size": 32}

    def train(objective, seed=0, isolation="none", out_dir=None):
        r = run_candidate(objective, task="synthetic", beta=BETA, seed=seed, isolation=isolation,
                          out_dir=out_dir, **over)
        assert r.ok, r.reason
        return {"seed": seed, **json.loads(json.dumps(r.to_dict()))}  # as train_seeds returns it

    clamped_dir = tmp_path_factory.mktemp("clamped")
    return {"dpo": [train("dpo", 0), train("dpo", 1)], "ipo": [train("ipo")], "steeper": train(STEEPER),
            "clamped": train(CLAMPED, out_dir=str(clamped_dir)), "clamped_dir": clamped_dir, "over": over}


def row(ident: int, name: str, results: list[dict], status: str = "done") -> dict:
    """An archive row as the campaign writes it, its per-seed entries carrying compact margins."""
    metrics = training.summarise(results)
    for entry, r in zip(metrics["per_seed"], results):
        entry["margins"] = pilot.compact_margins(r.get("margins"))
    return json.loads(json.dumps({"id": ident, "name": name, "status": status, "metrics": metrics}))


@pytest.fixture(scope="module")
def rows(runs):
    return [row(1, "dpo", runs["dpo"]), row(2, "ipo", runs["ipo"])]


def test_the_clamp_never_fires_so_the_clamped_loss_trains_like_dpo(runs, rows):
    dpo, clamped = runs["dpo"][0], runs["clamped"]
    assert BETA * pilot.margin_range(dpo["margins"])[0] > -2.5  # DPO's training never reaches the clamp
    assert len(clamped["margins"]["per_step"]) == 8
    # the margins reached the TrainResult and the run's result.json
    saved = json.loads((runs["clamped_dir"] / "result.json").read_text())
    assert saved["margins"] == clamped["margins"]
    assert pilot.trains_like(clamped, rows) == (1, "dpo")
    assert pilot.trains_like(clamped, rows[1:]) is None  # not like IPO
    # equal within rounding, not bit for bit: softplus(-z) and -logsigmoid(z) round differently
    steps = np.array(clamped["margins"]["per_step"]) - np.array(dpo["margins"]["per_step"])
    assert 0 < np.abs(steps).max() < 1e-3


def test_other_losses_and_other_seeds_are_not_called_the_same(runs, rows):
    assert pilot.trains_like(runs["ipo"][0], rows[:1]) is None
    assert pilot.trains_like(runs["steeper"], rows) is None  # DPO at another effective beta
    assert pilot.differs(runs["steeper"], rows[0]["metrics"]["per_seed"][0]).startswith(("reward", "kl", "win"))
    assert pilot.margins_differ(runs["steeper"]["margins"], runs["dpo"][0]["margins"]) is not None
    assert pilot.trains_like(runs["dpo"][1], [row(1, "dpo", runs["dpo"][:1])]) is None  # seed 1 vs seed 0
    assert pilot.trains_like(runs["dpo"][1], rows) == (1, "dpo")  # the same seed of the row
    # the pilot's margins and metrics both count: a difference in either is no match
    moved = {**runs["clamped"], "margins": {**runs["clamped"]["margins"], "per_step": [
        [v + 0.5 for v in r] for r in runs["clamped"]["margins"]["per_step"]]}}
    assert pilot.trains_like(moved, rows) is None
    assert pilot.trains_like({**runs["clamped"], "margins": None}, rows) is None
    old = row(1, "dpo", [{**r, "margins": None} for r in runs["dpo"]])  # trained before margins were kept
    assert pilot.trains_like(runs["clamped"], [old]) is None
    assert pilot.trains_like(runs["clamped"], [{**rows[0], "status": "duplicate"}]) is None


def test_the_message_is_the_template():
    """discovery/feedback.py shows the proposer only known templates: it must list pilot.TEMPLATE."""
    assert pilot.message(1, "dpo") == ("trains like #1 dpo: its one-seed pilot reproduced that row's training "
                                       "(metrics and margins equal); the other seeds were not spent")
    assert pilot.TEMPLATE.format(n=1, name="dpo") == pilot.message(1, "dpo")
    assert pilot.visited_message(1, "dpo", (-1.0956, 0.0, 1.41746)) == (
        "computes the same function as #1 dpo on the margins DPO's training visits (z = beta * rho from -1.1 to 1.42)")


def test_the_fingerprint_on_dpos_visited_margins_sees_what_training_sees(runs):
    grid = visited_grid([r["margins"] for r in runs["dpo"]], BETA)
    assert len(grid) >= 10 and grid[0] > -2.5
    dpo, clamped, ipo = get("dpo"), from_source(CLAMPED), get("ipo")

    def fp(obj, grid_z=None, betas=(BETA,)):  # in this process: the test's own code is trusted
        return Fingerprint.from_dict(json.loads(json.dumps(measure(obj, betas, grid_z))))

    assert fp(clamped, grid).same_function(fp(dpo, grid))
    assert fp(clamped, grid).key == fp(dpo, grid).key != fp(dpo).key
    assert not fp(ipo, grid).same_function(fp(dpo, grid))
    assert not fp(clamped).same_function(fp(dpo))  # the fixed grid reaches z = -6
    with pytest.raises(ValueError, match="grids differ"):
        fp(dpo).same_function(fp(dpo, grid))


def test_compact_margins_keeps_first_last_and_evenly_spaced_steps():
    per_step = [[-s, -s / 2, 0.0, s / 2, s] for s in range(200)]
    full = margins_record(per_step, [float(i) for i in range(11)], 800)
    small = pilot.compact_margins(full)
    assert len(small["per_step"]) == pilot.MAX_POINTS and small["step"][0] == 1 and small["step"][-1] == 200
    assert all(full["per_step"][s - 1] == r for s, r in zip(small["step"], small["per_step"]))
    assert pilot.margins_differ(full, small) is None and pilot.margins_differ(small, small) is None
    assert pilot.margins_differ(small, full) == "margins recorded at other steps"
    assert pilot.compact_margins(None) is None
    assert pilot.describe_margins(full).startswith("margins rho from 0 to 10 (p05 2, median 5, p95 8; 800")


def test_an_isolated_jobs_margins_come_back_through_its_result_file(runs, tmp_path):
    """What the job (inner_loop.trainer.train_job, run here instead of in the sandbox) writes to
    job.json, read back as run_candidate reads it, is the margin record of an in-process run."""
    from inner_loop.job_output import JOB_RESULT
    from inner_loop.runner import job_inputs
    from inner_loop.tasks import get_task
    from inner_loop.train_config import TrainConfig, clean_margins
    from inner_loop.trainer import train_job
    from objectives.candidate import resolve

    over = runs["over"]
    task = get_task("synthetic", **{k: v for k, v in over.items() if k not in ("max_steps", "batch_size")})
    train = asdict(TrainConfig(**{**task.train_defaults, "max_steps": 8, "batch_size": 32, "beta": BETA, "seed": 0}))
    train_job({"objective": resolve(CLAMPED).to_dict(), "inputs": str(job_inputs(task)), "out": str(tmp_path),
               "train": train, "progress": False})
    claimed = json.loads((tmp_path / JOB_RESULT).read_text())
    assert claimed["status"] == "done"
    assert clean_margins(claimed["margins"]) == runs["clamped"]["margins"]
