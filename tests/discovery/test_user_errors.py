"""A user's mistake is one line, ``disco: error: ...``, exit 2, never a traceback (``--debug`` shows
it); Ctrl-C is one line, exit 130, with ``disco resume DIR`` once a campaign has started; values out
of range are refused with the valid range; ``disco status`` tells running, stopped and finished apart;
``disco run`` writes DIR/config.yaml."""

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from campaign_fakes import fake_config
from discovery.archive import Archive
from discovery.campaign import run_campaign
from discovery.cli import main
from discovery.config import CampaignConfig, UserError, merge
from inner_loop.overrides import nest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def one_error(capsys, *words) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("disco: error: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def campaign_yaml(tmp_path, **changes) -> Path:
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(fake_config(**changes).to_dict()))
    return path


@pytest.fixture
def small_campaign(tmp_path):
    out = tmp_path / "done"
    run_campaign(out, fake_config(candidates=1, seeds=(0,)), progress=False)
    return out


# -- 1. one line, exit 2 ---------------------------------------------------------------------------

def test_unknown_names_are_one_line_with_did_you_mean(capsys):
    assert main(["compare", "--objectives", "dpoo"]) == 2
    one_error(capsys, "unknown objective 'dpoo'; did you mean 'dpo'")
    assert main(["train", "--task", "synthetc"]) == 2
    one_error(capsys, "unknown task 'synthetc'; did you mean 'synthetic'")
    assert main(["train", "--objective", "lrm"]) == 2
    one_error(capsys, "did you mean 'lrml'")
    assert main(["train", "--objective", "missing.py"]) == 2
    one_error(capsys, "no such objective file: missing.py")
    assert main(["train", "--recipe", "zephyr"]) == 2
    one_error(capsys, "did you mean 'zephyr-gemma'")


def test_an_unknown_set_key_names_the_valid_keys_of_training_runner_and_task(capsys):
    assert main(["train", "--set", "max_stepz=3"]) == 2
    err = one_error(capsys, "unknown --set key 'max_stepz'; did you mean 'max_steps'?")
    assert "learning_rate" in err and "memory_mb" in err and "data_seed" in err  # all three groups
    assert main(["train", "--set", "max_steps=many"]) == 2
    one_error(capsys, "--set max_steps must be an integer, not 'many'")
    assert main(["train", "--set", "seed=3"]) == 2
    one_error(capsys, "use --seed")
    assert main(["train", "--set", "n_nouns=99"]) == 2
    one_error(capsys, "n_nouns <= 24")
    assert main(["compare", "--objectives", "dpo", "--set", "learning_rat=1"]) == 2
    one_error(capsys, "did you mean 'learning_rate'")
    assert main(["compare", "--objectives", "dpo", "--metric", "win_rat"]) == 2
    one_error(capsys, "did you mean 'win_rate'")


def test_a_campaign_with_an_unknown_override_is_refused_before_it_starts(tmp_path, capsys):
    cfg = tmp_path / "real.yaml"
    cfg.write_text(yaml.safe_dump({"training": {"overrides": {"max_stepz": 3}}}))
    assert main(["run", "--out", str(tmp_path / "c"), "--config", str(cfg), "--quiet"]) == 2
    one_error(capsys, "did you mean 'max_steps'")
    assert not (tmp_path / "c").exists()


def test_debug_shows_the_traceback():
    from objectives.registry import UnknownNameError
    with pytest.raises(UnknownNameError):
        main(["--debug", "train", "--task", "nosuchtask"])


def test_a_bug_keeps_its_traceback(monkeypatch):
    import inner_loop.runner
    monkeypatch.setattr(inner_loop.runner, "run_candidate", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["train", "--quiet"])


# -- 3. values out of range ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["train", "--beta", "-1"], "--beta must be a number > 0, not -1.0"),
    (["train", "--beta", "nan"], "--beta must be a number > 0"),
    (["train", "--timeout", "0"], "--timeout must be a number > 0"),
    (["compare", "--objectives", "dpo", "--beta", "0"], "--beta must be a number > 0"),
    (["compare", "--objectives", "dpo", "--seeds", "1", "1"], "--seeds must be distinct"),
    (["compare", "--objectives", "dpo", "--n-boot", "0"], "--n-boot must be an integer >= 1"),
    (["heldout", "nowhere", "--betas", "0.1", "-1"], "each of --betas must be a number > 0"),
    (["heldout", "nowhere", "--top", "0"], "--top must be an integer >= 1"),
])
def test_flags_out_of_range_name_the_valid_range(argv, words, capsys):
    assert main(argv) == 2
    one_error(capsys, words)


@pytest.mark.parametrize("flags, settings, words", [
    (["--candidates", "-1"], {}, "candidates must be an integer >= 0, not -1"),
    (["--workers", "0"], {}, "workers must be an integer >= 1, not 0"),
    (["--beta", "0"], {}, "beta must be a number > 0"),
    ([], {"training.seeds": []}, "seeds must hold at least one"),
    ([], {"training.seeds": [0, 0]}, "seeds must be distinct"),
    ([], {"training.timeout": 0}, "training.timeout must be a number > 0"),
    ([], {"execution.validate_timeout": -1}, "validate_timeout must be a number > 0"),
    ([], {"training.isolation": "sandbx"}, "isolation must be one of auto, none, process, sandbox"),
    ([], {"candidates": "six"}, "candidates must be an integer >= 0, not 'six'"),
])
def test_campaign_settings_out_of_range_are_refused_before_anything_is_made(tmp_path, capsys, flags, settings,
                                                                             words):
    cfg = campaign_yaml(tmp_path, candidates=1)
    data = merge(yaml.safe_load(cfg.read_text()), nest(settings))
    cfg.write_text(yaml.safe_dump(data))
    out = tmp_path / "c"
    assert main(["run", "--out", str(out), "--config", str(cfg), "--quiet", *flags]) == 2
    one_error(capsys, words)
    assert not out.exists()


def test_resume_refuses_a_bad_change_and_leaves_the_campaign_as_it_was(small_campaign, capsys):
    assert main(["resume", str(small_campaign), "--workers", "0", "--quiet"]) == 2
    one_error(capsys, "workers must be an integer >= 1, not 0")
    with Archive.open(small_campaign) as a:
        assert a.config["execution"]["workers"] == 1
    assert not (small_campaign / "campaign.lock").exists()


def test_config_checks_every_range():
    with pytest.raises(UserError, match="max_attempts must be an integer >= 1"):
        CampaignConfig(training={"max_attempts": 0})
    with pytest.raises(UserError, match="temperature must be a number >= 0"):
        CampaignConfig(proposer={"temperature": -0.5})
    assert CampaignConfig(training={"beta": None, "seeds": [3, 1]}).training.seeds == (3, 1)


# -- Ctrl-C ---------------------------------------------------------------------------------------------

def test_ctrl_c_in_a_campaign_is_one_line_with_the_resume_command(tmp_path, capsys, monkeypatch):
    import campaign_fakes
    real, calls = campaign_fakes.train, []

    def interrupted_on_the_third_run(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(campaign_fakes, "train", interrupted_on_the_third_run)
    out = tmp_path / "c"
    assert main(["run", "--out", str(out), "--config", str(campaign_yaml(tmp_path, candidates=2, seeds=[0])),
                 "--quiet"]) == 130
    err = capsys.readouterr().err
    assert err == f"disco: interrupted; what is done is saved: continue with `disco resume {out}`\n"
    assert not (out / "campaign.lock").exists()
    assert main(["status", str(out)]) == 0
    assert f"state: stopped (not finished; resume with: disco resume {out})" in capsys.readouterr().out
    assert main(["resume", str(out), "--quiet"]) == 0
    assert main(["status", str(out), "--json"]) == 0
    assert '"state": "finished"' in capsys.readouterr().out


def test_ctrl_c_in_train_is_one_line(monkeypatch, capsys):
    import inner_loop.runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(inner_loop.runner, "run_candidate", interrupted)
    assert main(["train", "--quiet"]) == 130
    assert capsys.readouterr().err == "disco: interrupted\n"


def test_sigint_stops_disco_run_cleanly(tmp_path):
    marks = tmp_path / "markers"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)]),
           "DISCO_FAKE_MARKERS": str(marks), "DISCO_FAKE_TRAIN_SLEEP": "5"}
    out = tmp_path / "c"
    proc = subprocess.Popen([sys.executable, "-m", "fake_disco", "run", "--out", str(out), "--config",
                             str(campaign_yaml(tmp_path, candidates=2, seeds=[0])), "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.time() + 120
    while not (marks.exists() and marks.read_text()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    from discovery.commands import status
    assert status(str(out))["state"] == "running" and status(str(out))["pid"] == str(proc.pid)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr == f"disco: interrupted; what is done is saved: continue with `disco resume {out}`\n"
    assert status(str(out))["state"] == "stopped" and not (out / "campaign.lock").exists()


# -- 2. status: running, stopped, finished ----------------------------------------------------------------

def test_status_tells_a_crashed_campaign_from_a_running_one(small_campaign, capsys):
    assert main(["status", str(small_campaign)]) == 0
    assert "state: finished" in capsys.readouterr().out
    assert not (small_campaign / "campaign.lock").exists()  # removed on a normal exit

    with Archive.open(small_campaign) as a:  # as after kill -9 mid-training: a row left in training ...
        a.update(a.rows(kind="candidate")[0]["id"], status="training")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (small_campaign / "campaign.lock").write_text(str(dead.pid))  # ... and its lock file, held by no one
    assert main(["status", str(small_campaign)]) == 0
    assert (f"state: stopped (not finished; resume with: disco resume {small_campaign})"
            in capsys.readouterr().out)

    with open(small_campaign / "campaign.lock", "a+") as held:  # a live process holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.seek(0)
        held.truncate()
        held.write("4242")
        held.flush()
        assert main(["status", str(small_campaign)]) == 0
        assert "state: running (pid 4242)" in capsys.readouterr().out
        assert main(["status", str(small_campaign), "--json"]) == 0
        assert '"state": "running"' in capsys.readouterr().out


def test_status_counts_a_campaign_short_of_its_candidates_as_stopped(small_campaign, capsys):
    with Archive.open(small_campaign) as a:  # e.g. the endpoint went down before the last proposal
        a.set_meta("config", {**a.config, "candidates": 3})
    assert main(["status", str(small_campaign)]) == 0
    assert "state: stopped" in capsys.readouterr().out


# -- 4. DIR/config.yaml ------------------------------------------------------------------------------------

def test_run_writes_the_resolved_config_as_yaml(tmp_path, capsys):
    cfg = campaign_yaml(tmp_path, candidates=1, seeds=[0], beta=None)
    out = tmp_path / "c"
    assert main(["run", "--out", str(out), "--config", str(cfg), "--beta", "0.2", "--quiet"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    with Archive.open(out) as a:
        assert saved == a.config and saved["training"]["beta"] == 0.2 and saved["training"]["seeds"] == [0]
    assert main(["resume", str(out), "--candidates", "2", "--quiet"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["candidates"] == 2
