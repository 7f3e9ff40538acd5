"""compare / heldout / sweep grids through the campaign's executor seam: each run a job (local worker
processes here; Ray tasks with --executor ray, tested in tests/discovery/test_ray_executor.py for the
backend), the same runs as in-process, in grid order, failures typed."""

from __future__ import annotations

import argparse

import pytest

from evaluation.compare import Setting, run_grid
from tests.evaluation.fakes import FakeRunner

GOOD = "def good(rho, beta):\n    return -torch.nn.functional.logsigmoid(beta * rho)\n"
BOOM = "def boom(rho, beta):\n    return rho * float('nan')\n"


def test_a_grid_through_local_workers_equals_the_grid_in_process(tmp_path):
    from discovery.training import LocalExecutor
    objectives = {"dpo": "dpo", "good": GOOD, "boom": BOOM}
    settings = [Setting(seed=s, beta=0.2) for s in (0, 1)]
    here = run_grid(objectives, settings, runner=FakeRunner(per_prompt=8))
    there = run_grid(objectives, settings, executor=LocalExecutor(), in_flight=3, out_dir=tmp_path,
                     train="tests.evaluation.fakes:FAKE_RUNNER")
    assert [(r.objective, r.setting, r.status) for r in there] == [(r.objective, r.setting, r.status) for r in here]
    for a, b in zip(here, there):
        assert a.metrics == b.metrics and a.reason == b.reason
    assert there[2].status == "failed" and "non-finite" in there[2].reason
    assert (tmp_path / "runs" / "good" / settings[1].key.replace("/", "_") / "seed-1" / "train.log").exists()


def test_the_flags_build_the_executor_and_a_judged_task_refuses_it(tmp_path):
    from evaluation.analysis_commands import _runner_kwargs
    from evaluation.heldout import HeldoutError, evaluate_heldout
    from tests.evaluation.fakes import make_campaign
    args = argparse.Namespace(isolation="auto", timeout=60.0, executor="local", ray_address=None, workers=3)
    kwargs = _runner_kwargs(args)
    assert type(kwargs["executor"]).__name__ == "LocalExecutor" and kwargs["in_flight"] == 3
    assert "executor" not in _runner_kwargs(argparse.Namespace(isolation="auto", timeout=60.0, executor=None,
                                                                ray_address=None, workers=2))
    campaign = make_campaign(tmp_path / "c")
    with pytest.raises(HeldoutError, match="runs in this process, not through --executor"):
        evaluate_heldout(campaign, tasks=["recipe:tldr:model=m,dataset=d"], seeds=[7], **kwargs)
