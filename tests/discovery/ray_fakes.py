"""A train function with faults on demand, for the Ray executor's tests (test_ray_executor.py), and
``python -m ray_fakes run|resume DIR ADDRESS MARKERS SLEEP``: a campaign driver on a Ray cluster.

Ray workers import :func:`train` by name (tests/discovery is on the cluster's ``PYTHONPATH``). Its
controls come as keywords (the spec's ``train_kwargs``), because a worker's environment is fixed
when its node starts. Each call appends ``start|end KEY SEED NODE PID JOB`` to the file ``markers``, KEY
being the candidate's folder name (the worker's output folder is
``.../disco-ray-seeds/<pid>-<folder>-XXXX/seed-<k>``).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import campaign_fakes


def key_of(out_dir: str) -> str:
    """The candidate folder's name of a worker's output folder."""
    parent = Path(out_dir).parent
    if parent.parent.name != "disco-ray-seeds":
        return parent.name
    return parent.name.split("-", 1)[1].rsplit("-", 1)[0]  # PID-<folder>-XXXX


def _where() -> str:
    """``NODE PID JOB``: this worker's node, process and the Ray job (driver) it works for."""
    try:
        import ray
        context = ray.get_runtime_context()
        node, job = context.get_node_id(), context.get_job_id()
    except Exception:  # noqa: BLE001 - not in a Ray worker
        node, job = "-", "-"
    return f"{node} {os.getpid()} {job}"


def _mark(markers, line: str) -> None:
    if markers:
        with open(markers, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def _first_start(flags: str, key: str, seed: int) -> bool:
    """True the first time (key, seed) starts: a flag file in the folder ``flags`` remembers it."""
    Path(flags).mkdir(parents=True, exist_ok=True)
    try:
        (Path(flags) / f"{key}-seed-{seed}").touch(exist_ok=False)
        return True
    except FileExistsError:
        return False


def train(objective, task="synthetic", beta=None, seed=0, out_dir=None, markers=None, sleep=0.0,
          die=None, die_always=False, hold=None, fail_seed=None, big=0, env=None, **kw):
    """:func:`campaign_fakes.train` after ``sleep`` seconds, with faults: ``die`` (a folder): the first
    start of each (candidate, seed) kills its own process (``die_always``: every start does);
    ``hold`` (a folder): the first start waits up to 60 s (for its node to be removed); ``fail_seed``:
    that seed returns a failed result at once; ``big``: a file of that many bytes and
    ``metrics["model_dir"]`` pointing into the output folder; ``env``: a variable's value in this
    process as ``metrics["env_seen"]`` (None when unset)."""
    key, where = key_of(out_dir), _where()
    _mark(markers, f"start {key} {seed} {where}")
    if die and (die_always or _first_start(die, key, seed)):
        os.kill(os.getpid(), signal.SIGKILL)
    if fail_seed is not None and seed == fail_seed:
        _mark(markers, f"end {key} {seed} {where}")
        return {"status": "failed", "reason": "non-finite loss (nan) at step 3", "steps": 3}
    if hold and _first_start(hold, key, seed):
        time.sleep(60)
    time.sleep(float(sleep))
    result = campaign_fakes.train(objective, task=task, beta=beta, seed=seed, out_dir=out_dir, **kw)
    if big:
        model = Path(out_dir) / "model"
        model.mkdir(parents=True, exist_ok=True)
        (model / "weights.bin").write_bytes(b"\0" * int(big))
        result["metrics"]["model_dir"] = str(model)
    if env:
        result["metrics"]["env_seen"] = os.environ.get(env)
    _mark(markers, f"end {key} {seed} {where}")
    return result


def markers(path) -> list[tuple[str, str, int, str, int, str]]:
    """The lines of a markers file as (event, key, seed, node, pid, job)."""
    if not Path(path).exists():
        return []
    out = []
    for line in Path(path).read_text().splitlines():
        event, key, seed, node, pid, job = line.split(" ")
        out.append((event, key, int(seed), node, int(pid), job))
    return out


SETTINGS = dict(candidates=3, seeds=[0, 1], baselines=["dpo"], proposer="evolve", seed=3, workers=2)


def main(argv) -> int:
    """``run|resume DIR ADDRESS MARKERS SLEEP``: a campaign with the fakes, trained on the Ray cluster
    at ADDRESS through :func:`discovery.executors.make_executor`."""
    from discovery.archive import Archive
    from discovery.campaign import resume_campaign, run_campaign
    from discovery.config import CampaignConfig
    from discovery.executors import make_executor
    command, directory, address, marks, sleep = argv
    campaign_fakes.install()
    if command == "run":
        config = campaign_fakes.fake_config(**SETTINGS, **{"execution.executor": "ray",
                                                          "execution.ray_address": address})
    else:
        with Archive.open(directory) as a:
            config = CampaignConfig.from_dict(a.config, warn=False)
    import dataclasses

    import ray_fakes  # by its module name, not as __main__: the workers import it by that name
    seams = dataclasses.replace(campaign_fakes.seams(config), train=ray_fakes.train,
                                train_kwargs={"markers": marks, "sleep": float(sleep)})
    executor = make_executor(config)
    try:
        if command == "run":
            run_campaign(directory, config, seams=seams, executor=executor, progress=False)
        else:
            resume_campaign(directory, seams=seams, executor=executor, progress=False)
    finally:
        executor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
