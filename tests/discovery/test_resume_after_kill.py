"""A campaign killed with SIGKILL in the middle of training, then resumed: nothing lost, nothing
trained twice (the interrupted run is discarded and redone once), same proposals as a campaign
that was never interrupted."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from campaign_fakes import fake_config, kill_when
from discovery.archive import Archive
from discovery.campaign import run_campaign

HERE = Path(__file__).resolve().parent
SETTINGS = dict(candidates=4, seeds=[0], baselines=["dpo", "hinge"], proposer="evolve", seed=3)


def disco(*args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "fake_disco", *args, "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def markers(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in path.read_text().splitlines() if " " in line]


def test_kill_9_during_training_then_resume(tmp_path):
    config = tmp_path / "campaign.yaml"
    config.write_text(yaml.safe_dump(fake_config(**SETTINGS).to_dict()))
    marks = tmp_path / "markers"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "DISCO_FAKE_MARKERS": str(marks), "DISCO_FAKE_TRAIN_SLEEP": "0.8"}
    out = tmp_path / "c"

    proc = disco("run", "--out", str(out), "--config", str(config), env=env)
    def second_started():  # the second candidate is training: the run that just started is mid-way
        m = markers(marks)
        return m[-1][1] if m and m[-1][0] == "start" and sum("/candidates/" in p and k == "end" for k, p in m) >= 3 \
            else None

    killed_dir = kill_when(proc, second_started, f"training never reached the second candidate: {markers(marks)}")
    with Archive.open(out) as a:
        assert [r["status"] for r in a.rows(status="training")] == ["training"]
    from discovery.commands import status  # its lock file is left behind, held by no one
    assert (out / "campaign.lock").exists() and status(str(out))["state"] == "stopped"

    resumed = disco("resume", str(out), env=env)
    output, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, output.decode()

    with Archive.open(out) as a:
        rows = a.rows()
    candidates = [r for r in rows if r["kind"] == "candidate"]
    assert len(candidates) == 4 and all(r["status"] in ("done", "duplicate", "invalid") for r in candidates)
    m = markers(marks)
    for r in rows:
        if r["status"] != "done":
            continue
        seed_dir = str(out / r["folder"] / "seed-0")
        starts = sum(1 for k, p in m if k == "start" and p == seed_dir)
        ends = sum(1 for k, p in m if k == "end" and p == seed_dir)
        assert ends == 1, (r["name"], m)  # trained to the end exactly once
        assert starts == (2 if seed_dir == killed_dir else 1) and r["attempts"] == starts

    # the interruption changed nothing: an uninterrupted campaign proposes the same candidates
    os.environ.pop("DISCO_FAKE_MARKERS", None)
    run_campaign(tmp_path / "straight", fake_config(**SETTINGS), progress=False)
    with Archive.open(tmp_path / "straight") as a:
        straight = a.rows(kind="candidate")
    assert [r["code"] for r in straight] == [r["code"] for r in candidates]
    assert [r["fitness"] for r in straight] == [r["fitness"] for r in candidates]
