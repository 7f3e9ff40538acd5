"""disco run / resume / status / show, called through the console script's parser."""

import json

import yaml

from campaign_fakes import fake_config
from discovery.cli import main


def write_config(tmp_path, **changes):
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(fake_config(**changes).to_dict()))
    return path


def test_run_status_show_resume(tmp_path, capsys):
    cfg = write_config(tmp_path, candidates=3)
    out = tmp_path / "c"
    assert main(["run", "--out", str(out), "--config", str(cfg), "--candidates", "2", "--seeds", "0",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"disco status {out}" in printed and f"disco show {out} <id>" in printed

    assert main(["status", str(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["config"]["candidates"] == 2 and status["config"]["training"]["seeds"] == [0]  # flags win
    assert set(status["baselines"]) == {"dpo", "ipo", "lrml"}
    assert sum(status["counts"].values()) == 2
    assert status["leaderboard"][0]["fitness"] >= status["leaderboard"][-1]["fitness"]
    assert set(status["leaderboard"][0]["vs_baselines"]) == {"dpo", "ipo", "lrml"}

    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "(baseline)" in text and "vs dpo" in text and "±" in text

    assert main(["show", str(out), "4"]) == 0
    text = capsys.readouterr().out
    assert "hypothesis:" in text and "def " in text and "checks: valid" in text and "win_rate" in text

    assert main(["show", str(out), "dpo", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "baseline"

    assert main(["resume", str(out), "--candidates", "3", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    assert sum(json.loads(capsys.readouterr().out)["counts"].values()) == 3


def test_run_refuses_an_existing_campaign_and_bad_settings(tmp_path, capsys):
    cfg = write_config(tmp_path, candidates=1)
    out = tmp_path / "c"
    assert main(["run", "--out", str(out), "--config", str(cfg), "--quiet"]) == 0
    assert main(["run", "--out", str(out), "--config", str(cfg), "--quiet"]) == 2
    assert "disco resume" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("candidate: 3\n")
    assert main(["run", "--out", str(tmp_path / "d"), "--config", str(bad)]) == 2
    assert "did you mean 'candidates'" in capsys.readouterr().err
    assert main(["run", "--out", str(tmp_path / "e"), "--config", str(cfg), "--proposer", "evolv"]) == 2
    assert "did you mean 'evolve'" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "nowhere")]) == 2


def test_endpoint_failures_stop_cleanly_and_resume_continues(tmp_path, capsys, monkeypatch):
    from fake_openai import FakeOpenAI, error, reply
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    cfg = write_config(tmp_path, candidates=2, max_retries=1)
    out = tmp_path / "c"
    assert main(["run", "--out", str(out), "--config", str(cfg), "--proposer", "openai", "--base-url",
                 "https://api.example.invalid/v1", "--api-key-env", "NO_SUCH_KEY_VAR", "--quiet"]) == 2
    assert "NO_SUCH_KEY_VAR" in capsys.readouterr().err and not out.exists()

    with FakeOpenAI([error(503)]) as down:
        assert main(["run", "--out", str(out), "--config", str(cfg), "--proposer", "openai",
                     "--base-url", down.url, "--quiet"]) == 2
    assert "disco resume" in capsys.readouterr().err
    good = '{"thought": "t", "name": "steeper", "code": "def s(rho, beta):\\n    return -F.logsigmoid(3 * beta * rho)\\n"}'
    with FakeOpenAI([reply(good)]) as up:
        assert main(["resume", str(out), "--base-url", up.url, "--quiet"]) == 0  # the endpoint moved
    from discovery.archive import Archive
    with Archive.open(out) as a:
        assert [r["status"] for r in a.rows(kind="candidate")] == ["done", "duplicate"]
        assert a.config["proposer"]["base_url"] == up.url


def test_show_marks_a_check_that_did_not_run_as_skipped_not_ok(tmp_path, capsys):
    from discovery.archive import Archive
    from discovery.config import CampaignConfig
    with Archive.create(tmp_path / "c", CampaignConfig().to_dict()) as a:
        cid = a.add(kind="candidate", name="typo", code="def typo(rho, beta):\n    return F.logsigmod(rho)\n")
        a.update(cid, status="invalid", reason="output: raised AttributeError", checks={
            "valid": False, "reason": "output: raised AttributeError",
            "checks": [{"name": "output", "passed": False, "reason": "raised AttributeError"},
                       {"name": "direction", "passed": True, "skipped": True,
                        "reason": "not run: the output check failed"}]})
    assert main(["show", str(tmp_path / "c"), str(cid)]) == 0
    out = capsys.readouterr().out
    assert "output: FAILED" in out and "direction: skipped (not run: the output check failed)" in out
    assert "direction: ok" not in out
