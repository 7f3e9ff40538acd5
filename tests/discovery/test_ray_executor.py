"""The Ray executor (discovery/ray_executor.py) on a local multi-node cluster: per-seed tasks with
their resources, results and small files back through Ray, large artefacts in storage; a killed
worker, a seed that always dies, a failed seed, a removed node, a killed driver and `resume`.

One cluster for the module (``ray.cluster_utils.Cluster``): a head without CPUs (the drivers) and two
worker nodes of one CPU each; the fault-injecting train function is ray_fakes.train."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import objectives
from campaign_fakes import fake_config, kill_when
from discovery import executors, training
from discovery.archive import Archive
from discovery.commands import executor_settings, resume_changes
from discovery.config import CampaignConfig, UserError
from ray_fakes import markers

HERE = Path(__file__).resolve().parent


# -- settings and flags (no cluster) -------------------------------------------------------------

def test_execution_settings_and_flags():
    e = fake_config(**{"execution.executor": "ray", "execution.storage": "s3://bucket/runs"}).execution
    assert (e.executor, e.ray_address, e.storage, e.max_seed_attempts) == ("ray", None, "s3://bucket/runs", 3)
    assert e.seed_resources("synthetic") == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert e.seed_resources("recipe:zephyr-gemma") == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert e.seed_resources("recipe:zephyr-gemma", 4) == {"num_cpus": 1.0, "num_gpus": 4.0}
    e = fake_config(**{"execution.num_cpus": 2, "execution.num_gpus": 0}).execution
    assert e.seed_resources("recipe:zephyr-gemma") == {"num_cpus": 2.0, "num_gpus": 0.0}
    for bad, words in [({"execution.executor": "slurm"}, "execution.executor must be one of local, ray"),
                       ({"execution.ray_address": ""}, "execution.ray_address must be a non-empty string"),
                       ({"execution.max_seed_attempts": 0}, "execution.max_seed_attempts must be an integer >= 1"),
                       ({"execution.num_gpus": -1}, "execution.num_gpus must be a number >= 0")]:
        with pytest.raises(UserError, match=words):
            fake_config(**bad)
    # the resolved config round-trips (the archive keeps it; resume rebuilds it)
    config = fake_config(**{"execution.executor": "ray", "execution.ray_address": "auto"})
    assert CampaignConfig.from_dict(config.to_dict()) == config

    from discovery.cli import build_parser
    parse = build_parser().parse_args
    args = parse(["run", "--out", "x", "--ray-address", "10.0.0.1:6379"])
    assert executor_settings(args) == {"execution.executor": "ray", "execution.ray_address": "10.0.0.1:6379"}
    with pytest.raises(UserError, match="--ray-address .* goes with --executor ray"):
        executor_settings(parse(["resume", "x", "--executor", "local", "--ray-address", "auto"]))
    assert executor_settings(parse(["resume", "x", "--executor", "ray"])) == {"execution.executor": "ray"}
    assert executor_settings(parse(["run", "--out", "x"])) == {}
    assert resume_changes(["execution.storage=/shared/disco", "execution.max_seed_attempts=5"]) == {
        "execution.storage": "/shared/disco", "execution.max_seed_attempts": 5}

    local = fake_config(workers=3)
    executor = executors.make_executor(local)
    assert isinstance(executor, training.LocalExecutor) and executors.rows_in_flight(executor, local) == 3
    assert not executors.remote(local)


def test_ray_missing_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UserError, match=r"Ray is not installed: pip install 'disco-pop\[ray\]'"):
        executors.make_executor(fake_config(**{"execution.executor": "ray"}))


def test_storage_copies_a_seed_folder_to_a_path_or_an_fsspec_url_and_paths_follow(tmp_path):
    from discovery.ray_executor import rewrite, small_files, storage_target, store
    seed = tmp_path / "worker" / "seed-0"
    (seed / "model").mkdir(parents=True)
    (seed / "result.json").write_text("{}")
    (seed / "model" / "weights.bin").write_bytes(b"x" * 100)
    (seed / "link").symlink_to(seed / "result.json")
    target = storage_target("file://" + str(tmp_path / "store"), "/runs/camp/candidates/0007-x", 0)
    assert target == f"file://{tmp_path}/store/camp/0007-x/seed-0"
    assert store(seed, target) == target
    assert (tmp_path / "store/camp/0007-x/seed-0/model/weights.bin").read_bytes() == b"x" * 100
    plain = store(seed, str(tmp_path / "shared" / "seed-0"))  # a folder: written beside it, then renamed
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["seed-0"]
    assert (Path(plain) / "result.json").is_file()
    files, left = small_files(seed)
    assert sorted(files) == ["model/weights.bin", "result.json"] and left == []  # links are not followed
    result = {"metrics": {"model_dir": f"{seed}/model", "other": f"{seed}-not-inside", "n": 1}, "l": [str(seed)]}
    assert rewrite(result, str(seed), "/campaign/seed-0") == {
        "metrics": {"model_dir": "/campaign/seed-0/model", "other": f"{seed}-not-inside", "n": 1},
        "l": ["/campaign/seed-0"]}


def test_a_cluster_that_cannot_be_reached_is_one_clear_line(monkeypatch):
    ray = pytest.importorskip("ray")

    def refuse(address=None, **kw):
        raise ConnectionError(f"Could not find any running Ray instance at {address}.\nmore lines")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    config = fake_config(**{"execution.executor": "ray", "execution.ray_address": "10.9.9.9:6379"})
    with pytest.raises(UserError, match=r"^cannot connect to the Ray cluster at '10.9.9.9:6379' \(ConnectionError: "
                                        r"Could not find any running Ray instance at 10.9.9.9:6379.\); check "
                                        r"execution.ray_address \(--ray-address\)"):
        executors.make_executor(config)


# -- on a cluster ------------------------------------------------------------------------------

ray = pytest.importorskip("ray")
SECRET = "DISCO_RAY_TEST_KEY"


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE)] + ([old] if old else []))  # the nodes' workers
    os.environ[SECRET] = "not for workers"  # as an API key in the environment of whoever starts a node
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(2):
            c.add_node(num_cpus=1)
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False, logging_level=logging.WARNING)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        from discovery.ray_executor import sweep
        sweep()  # the seed folders of the workers the tests killed
        os.environ.pop(SECRET, None)
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def spec(folder: Path, seeds, **train_kwargs) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    return training.spec_for(objectives.resolve("dpo"), folder, fake_config(), 0.1, train="ray_fakes:train",
                             seeds=seeds, train_kwargs=train_kwargs)


def executor(**kw):
    from discovery.ray_executor import RayExecutor
    return RayExecutor(**kw)


def wait(ex, handle, timeout=60.0) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        results = ex.poll(handle)
        if results is not None:
            return results
        time.sleep(0.1)
    raise AssertionError("the row never finished")


def record(folder: Path, seed: int) -> dict:
    return json.loads((folder / f"seed-{seed}" / "ray.json").read_text())


def test_seeds_are_ray_tasks_whose_results_and_small_files_come_back(cluster, tmp_path):
    marks, store = tmp_path / "markers", tmp_path / "store"
    stored_row = tmp_path / "camp" / "candidates" / "0001-dpo"
    plain_row = tmp_path / "camp" / "candidates" / "0002-dpo"
    with_storage, without = executor(storage=str(store), drop_env=(SECRET,)), executor()
    assert with_storage.capacity(2) == 1 and with_storage.capacity() == 2  # two 1-CPU nodes
    assert executors.rows_in_flight(with_storage, fake_config(workers=1)) == 2
    assert executors.rows_in_flight(with_storage, fake_config(workers=5)) == 5
    with pytest.raises(UserError, match="no node of the Ray cluster has the 1 CPU and 1 GPU one seed asks for"):
        executor(num_gpus=1)
    recipe = fake_config(**{"execution.executor": "ray", "training.task": "recipe:zephyr-gemma",
                            "training.gpus_per_candidate": 4})  # a recipe seed: one task of N GPUs
    with pytest.raises(UserError, match=r"the 1 CPU and 4 GPU one seed asks for .*execution.num_gpus"):
        executors.make_executor(recipe)
    big = 9 * 2**20  # over the 8 MiB that come back through Ray
    a = with_storage.submit(spec(stored_row, [0, 1], markers=str(marks), sleep=1.0, big=big, env=SECRET))
    b = without.submit(spec(plain_row, [0], markers=str(marks), big=big, env="OPENAI_API_KEY"))
    results = wait(with_storage, a)
    assert [(r["seed"], r["status"]) for r in results] == [(0, "done"), (1, "done")]
    assert all(r["metrics"]["win_rate"] > 0 for r in results)
    assert [r["metrics"]["env_seen"] for r in results] == [None, None]  # the key the node had is dropped
    for seed in (0, 1):
        local, target = stored_row / f"seed-{seed}", store / "camp" / "0001-dpo" / f"seed-{seed}"
        assert (local / "result.json").is_file() and (local / "train.log").exists()
        assert not (local / "model").exists()  # too large to come back ...
        assert (target / "model" / "weights.bin").stat().st_size == big  # ... it is in storage
        assert results[seed]["metrics"]["model_dir"] == str(target / "model")
        assert "not_kept" not in results[seed]
        assert record(stored_row, seed)["attempts"] == 1 and record(stored_row, seed)["stored"] == str(target)
    # one CPU per seed, one CPU per node: the two seeds ran at once, on both nodes
    nodes = {record(stored_row, s)["node"] for s in (0, 1)}
    assert len(nodes) == 2 and nodes <= {n["NodeID"] for n in ray.nodes()}

    [plain] = wait(without, b)
    assert plain["status"] == "done" and plain["metrics"]["model_dir"] == str(plain_row / "seed-0" / "model")
    assert plain["metrics"]["env_seen"] is None  # OPENAI_API_KEY: always dropped
    assert "model/weights.bin" in plain["not_kept"] and "execution.storage" in plain["not_kept"]
    assert (plain_row / "seed-0" / "result.json").is_file()
    m = markers(marks)
    assert sorted((e, k, s) for e, k, s, *_ in m if e == "end") == [
        ("end", "0001-dpo", 0), ("end", "0001-dpo", 1), ("end", "0002-dpo", 0)]


def test_a_killed_worker_is_retried_and_counted_once(cluster, tmp_path):
    marks, row = tmp_path / "markers", tmp_path / "camp" / "candidates" / "0003-dpo"
    ex = executor(max_attempts=3)
    results = wait(ex, ex.submit(spec(row, [0], markers=str(marks), die=str(tmp_path / "flags"))))
    assert [(r["seed"], r["status"]) for r in results] == [(0, "done")]  # one result, not two
    rec = record(row, 0)
    assert rec["attempts"] == 2 and len(rec["failures"]) == 1
    assert "worker process died" in rec["failures"][0]["reason"]
    assert [e for e, *_ in markers(marks)] == ["start", "start", "end"]
    from discovery.ray_executor import SCRATCH  # the killed worker's folder went with the next seed
    assert not [p for p in SCRATCH.iterdir() if "-0003-dpo-" in p.name]


def test_a_seed_that_always_dies_fails_with_its_reason(cluster, tmp_path):
    marks, row = tmp_path / "markers", tmp_path / "camp" / "candidates" / "0004-dpo"
    ex = executor(max_attempts=2)
    [result] = wait(ex, ex.submit(spec(row, [0], markers=str(marks), die=str(tmp_path / "f"), die_always=True)))
    assert result["status"] == "failed" and result["seed"] == 0
    assert "worker process died" in result["reason"] and "given up after 2 attempts" in result["reason"]
    assert [e for e, *_ in markers(marks)] == ["start", "start"] and record(row, 0)["attempts"] == 2


def test_a_failed_seed_cancels_the_rows_other_seeds(cluster, tmp_path):
    marks, row = tmp_path / "markers", tmp_path / "camp" / "candidates" / "0005-dpo"
    ex = executor()
    handle = ex.submit(spec(row, [0, 1], markers=str(marks), fail_seed=0, hold=str(tmp_path / "h")))
    results = wait(ex, handle, timeout=40)  # seed 1 would hold for 60 s
    assert [(r["seed"], r["status"]) for r in results] == [(0, "failed")]
    assert results[0]["reason"] == "non-finite loss (nan) at step 3"
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(handle.seeds[1].ref, timeout=30)


def test_killed_driver_then_resume_redoes_the_cut_off_rows_once(cluster, tmp_path):
    out, marks = tmp_path / "c", tmp_path / "markers"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}

    def driver(command, sleep):
        return subprocess.Popen([sys.executable, "-m", "ray_fakes", command, str(out), cluster.address,
                                 str(marks), str(sleep)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    proc = driver("run", 3.0)  # each seed takes 3 s: the candidates are mid-way when the driver dies

    def candidate_training():
        return [(k, job) for e, k, _, _, _, job in markers(marks) if e == "start" and not k.endswith("-dpo")]

    [(_, killed_job), *_] = kill_when(proc, candidate_training, f"no candidate started training: {markers(marks)}",
                                      timeout=60)
    with Archive.open(out) as a:
        cut_off = {r["id"]: r["folder"].split("/")[-1] for r in a.rows(status="training")}
    assert cut_off

    resumed = driver("resume", 0.5)
    output, _ = resumed.communicate(timeout=90)
    assert resumed.returncode == 0, output.decode()
    with Archive.open(out) as a:
        rows = a.rows()
    assert sorted(r["id"] for r in rows) == list(range(1, 5))  # one baseline, 3 candidates: no duplicate rows
    assert [r["kind"] for r in rows].count("candidate") == 3
    assert all(r["status"] in ("done", "duplicate", "invalid") for r in rows), [r["status"] for r in rows]
    m = markers(marks)
    # Ray ended the dead driver's tasks: none of its seeds that were running ever finished
    assert not [x for x in m if x[0] == "end" and x[5] == killed_job and x[1] in cut_off.values()], m
    for r in rows:
        if r["status"] != "done":
            continue
        key = r["folder"].split("/")[-1]
        assert sorted(p["seed"] for p in r["metrics"]["per_seed"]) == [0, 1]  # each seed counted once
        for seed in (0, 1):
            ends = sum(1 for e, k, s, *_ in m if (e, k, s) == ("end", key, seed))
            starts = sum(1 for e, k, s, *_ in m if (e, k, s) == ("start", key, seed))
            assert ends == 1, (key, seed, m)  # trained to the end once
            assert starts <= (2 if r["id"] in cut_off else 1), (key, seed, m)  # redone once at most
            assert record(out / r["folder"], seed)["attempts"] == 1
    log = (out / "campaign.log").read_text()
    assert all(f"#{cid} " in log for cid in cut_off) and "was cut off while training; training it again" in log


def test_a_removed_node_seed_is_retried_on_the_other_node(cluster, tmp_path):
    # last: it takes a node away from the module's cluster
    marks, row = tmp_path / "markers", tmp_path / "camp" / "candidates" / "0006-dpo"
    ex = executor(max_attempts=3)
    handle = ex.submit(spec(row, [0], markers=str(marks), hold=str(tmp_path / "h")))
    deadline = time.time() + 30
    while not markers(marks) and time.time() < deadline:
        time.sleep(0.1)
    [(_, _, _, node_id, _, _)] = markers(marks)
    [node] = [n for n in cluster.list_all_nodes() if n.node_id == node_id]
    cluster.remove_node(node)
    [result] = wait(ex, handle)
    assert result["status"] == "done"
    rec = record(row, 0)
    assert rec["attempts"] == 2 and "node died or was removed" in rec["failures"][0]["reason"]
    assert rec["node"] != node_id
    assert [(e, n == node_id) for e, _, _, n, _, _ in markers(marks)] == [
        ("start", True), ("start", False), ("end", False)]
