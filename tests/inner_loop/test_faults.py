"""Faults are typed failures with a reason, never a crash of the caller: NaN at once, inf after a
few steps, out of memory under an address-space limit, a job killed at its timeout."""

from __future__ import annotations

import pytest

import objectives
from inner_loop import trainer as T
from inner_loop.runner import run_candidate
from test_trainer import quick_config, tiny_model, tiny_tokenizer, token_pairs

NAN = "def f(rho, beta):\n    return -F.logsigmoid(beta * rho) * math.nan\n"
# rho is ~0 at step 1 (policy == reference), then grows: exp(1000 |rho|) overflows float32
INF_LATER = "def f(rho, beta):\n    return -F.logsigmoid(beta * rho) + torch.exp(rho.abs() * 1000.0)\n"
MEMORY_BOMB = "def f(rho, beta):\n    return -F.logsigmoid(beta * rho) + torch.ones(2 ** 33).sum() * 0.0\n"
TINY_TASK = dict(corpus_size=400, sft_steps=20, n_train_pairs=32, n_heldout_prompts=16, max_steps=4, batch_size=8)


def _train(source, **kw):
    model = tiny_model()
    return T.train_objective(model, tiny_tokenizer(), token_pairs(model), objectives.load(source),
                             quick_config(**kw))


def test_nan_loss_fails_at_step_one_before_any_update():
    out = _train(NAN)
    assert (out.status, out.step, out.losses) == ("failed", 1, [])
    assert out.reason == "non-finite loss (nan) at step 1"


def test_inf_after_some_steps_stops_the_run_there():
    out = _train(INF_LATER, max_steps=10)
    assert out.status == "failed" and out.step >= 2, out
    assert out.reason == f"non-finite loss (inf) at step {out.step}"
    assert len(out.losses) == out.step - 1 and all(x < 1e30 for x in out.losses)


def test_time_limit_is_a_failure_with_a_reason():
    out = T.train_objective(tiny_model(), tiny_tokenizer(), token_pairs(tiny_model()), objectives.load("dpo"),
                            quick_config(), time_limit=1e-6)
    assert out.status == "failed" and out.reason.startswith("timeout") and out.steps == 1


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def test_out_of_memory_in_a_memory_limited_job(cache):
    r = run_candidate(MEMORY_BOMB, isolation="process", memory_mb=3000, cache_dir=cache, **TINY_TASK)
    assert r.status == "failed" and r.metrics is None
    assert "memory" in r.reason, r.reason
    assert r.config["isolation"] == "process"


def test_nan_through_the_runner_is_a_typed_result(cache):
    r = run_candidate(NAN, isolation="process", cache_dir=cache, **TINY_TASK)
    assert (r.status, r.step, r.reason) == ("failed", 1, "non-finite loss (nan) at step 1")
    assert r.to_dict()["metrics"] is None


def test_a_job_past_its_timeout_is_killed_and_reported(cache):
    r = run_candidate("dpo", isolation="process", timeout=0.5, cache_dir=cache, **TINY_TASK)
    assert r.status == "failed" and r.reason.startswith("timeout"), r.reason


def test_unknown_objective_and_bad_source_fail_with_reasons(cache):
    assert "did you mean" in run_candidate("dpoo", cache_dir=cache, **TINY_TASK).reason
    r = run_candidate("def f(rho, beta):\n    import os\n    return rho\n", isolation="process",
                      cache_dir=cache, **TINY_TASK)
    assert r.status == "failed" and "did not load" in r.reason


def test_sandboxed_job_trains_and_the_parent_scores_it(cache):
    r = run_candidate("def f(rho, beta):\n    return -F.logsigmoid(beta * rho)\n", cache_dir=cache, **TINY_TASK)
    assert r.config["isolation"] == "sandbox"
    assert r.status == "done", r.reason
    assert 0 <= r.metrics["win_rate"] <= 1 and len(r.losses) == 4
    ref = run_candidate("dpo", cache_dir=cache, **TINY_TASK)  # in-process, same seed: same policy
    assert ref.metrics["reward"] == pytest.approx(r.metrics["reward"], abs=1e-6)


def test_two_sandboxed_candidates_in_one_process_whatever_tmpdir_says(cache, monkeypatch):
    """Regression: the job and inputs folders followed $TMPDIR. Where the child cannot see it (here
    /var/tmp, a private tmpfs in the sandbox) every sandboxed run failed; they now go under /tmp."""
    import shutil
    import tempfile
    from pathlib import Path

    from inner_loop import runner

    if not Path("/var/tmp").is_dir():
        pytest.skip("no /var/tmp")
    hidden = Path(tempfile.mkdtemp(prefix="disco-test-tmpdir-", dir="/var/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(hidden))  # as TMPDIR=/var/tmp/... would
    monkeypatch.setattr(runner, "_INPUTS", {})  # inputs made afresh under this TMPDIR
    source = "def f(rho, beta):\n    return -F.logsigmoid(beta * rho)\n"
    try:
        results = [run_candidate(source, seed=seed, cache_dir=cache, **TINY_TASK) for seed in (0, 1)]
        assert [r.config["isolation"] for r in results] == ["sandbox"] * 2
        assert [r.status for r in results] == ["done"] * 2, [r.reason for r in results]
        assert results[0].metrics["reward"] != results[1].metrics["reward"]  # two seeds, two policies
        assert not list(hidden.iterdir()), "job or inputs folder made under $TMPDIR"
    finally:
        shutil.rmtree(hidden, ignore_errors=True)
        for path in runner._INPUTS.values():
            shutil.rmtree(path, ignore_errors=True)


def test_the_measured_kind_travels_with_the_candidate_to_the_job(cache, monkeypatch):
    """run_candidate(kind=...) hands the kind validation measured to the job, which loads the
    objective with it instead of probing the code again."""
    from inner_loop import runner
    seen = {}

    def job(spec, timeout, memory_mb):
        seen.update(spec)
        return {"status": "failed", "reason": "not run"}

    monkeypatch.setattr(runner, "_run_sandbox", job)
    r = run_candidate("def f(rho, beta):\n    return -F.logsigmoid(beta * rho)\n", kind="logratio",
                      cache_dir=cache, **TINY_TASK)
    assert r.reason == "not run" and r.config["isolation"] == "sandbox"
    assert seen["objective"]["kind"] == "logratio" and not seen["objective"]["trusted"]
