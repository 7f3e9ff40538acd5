"""compare / heldout / sweep: each run's own prints (the Trainer's log dicts, library warnings) go to
the run's train.log, never to the terminal; --quiet also drops the line per run, keeping warnings."""

import sys

from discovery.cli import main
from evaluation import analysis_commands
from tests.evaluation.fakes import FakeRunner, make_campaign

TRL_LINE = "{'loss': '0.6978', 'rewards/chosen': '-0.2629', 'rewards/rejected': '-0.3001'}"


class ChattyRunner(FakeRunner):
    """A FakeRunner that prints what TRL's Trainer prints during a run."""

    def __call__(self, objective, **kw):
        print(TRL_LINE)
        print(TRL_LINE, file=sys.stderr)
        return super().__call__(objective, **kw)


def test_compare_puts_each_runs_prints_in_its_train_log(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(analysis_commands, "RUNNER", ChattyRunner())
    assert main(["compare", "--objectives", "dpo", "ipo", "--baselines", "dpo", "--seeds", "0", "1",
                 "--n-boot", "100", "--out", str(tmp_path / "cmp")]) == 0
    captured = capsys.readouterr()
    assert "rewards/chosen" not in captured.out + captured.err
    assert "dpo seed=0: reward=" in captured.err  # one line per run, still
    logs = sorted((tmp_path / "cmp" / "runs").rglob("train.log"))
    assert len(logs) == 4 and all(log.read_text().count("rewards/chosen") == 2 for log in logs)

    assert main(["compare", "--objectives", "dpo", "ipo", "--baselines", "dpo", "--seeds", "0",
                 "--n-boot", "100", "--quiet"]) == 0  # no --out: nowhere to keep them
    captured = capsys.readouterr()
    assert captured.err == "" and "rewards/chosen" not in captured.out and "dpo" in captured.out


def test_heldout_prints_no_trainer_log_lines_and_quiet_keeps_only_warnings(tmp_path, capsys, monkeypatch):
    d = make_campaign(tmp_path / "c")
    monkeypatch.setattr(analysis_commands, "RUNNER", ChattyRunner())
    assert main(["heldout", str(d), "--top", "1", "--seeds", "0", "--betas", "0.2", "--n-boot", "100"]) == 0
    captured = capsys.readouterr()
    assert "rewards/chosen" not in captured.out + captured.err  # was 36 raw TRL lines
    logs = list((d / "heldout" / "runs").rglob("train.log"))
    assert len(logs) == 4 and "rewards/chosen" in logs[0].read_text()

    assert main(["heldout", str(d), "--top", "1", "--seeds", "0", "--betas", "0.3", "--n-boot", "100",
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines[0].startswith("warning: seed(s) 0 were used by the search")
    assert not any("seed=0:" in x for x in lines)  # no line per run
    assert lines[-1].startswith("wrote ")


def test_sweep_quiet_has_no_line_per_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(analysis_commands, "RUNNER", ChattyRunner())
    assert main(["sweep", "--objectives", "dpo", "--betas", "0.1", "0.2", "--seeds", "0", "--out",
                 str(tmp_path / "s"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "rewards/chosen" not in captured.out + captured.err and "seed=0" not in captured.err
    assert len(list((tmp_path / "s" / "runs").rglob("train.log"))) == 2
