"""evaluation.frontier and ``disco sweep``: beta labels that do not overlap, the SFT point, output
where --out says, and betas that are not > 0 refused."""

import itertools
import json
from pathlib import Path

import pytest

from discovery.cli import main
from evaluation.frontier import figure, sft_point, sweep
from tests.evaluation.fakes import SEED_EFFECT, FakeRunner


@pytest.fixture
def fake(monkeypatch):
    from evaluation import analysis_commands

    runner = FakeRunner()
    monkeypatch.setattr(analysis_commands, "RUNNER", runner)
    return runner


def crowded_points():
    """Three objectives whose points nearly coincide at every beta: their labels would pile up."""
    pts = []
    for i, name in enumerate(("dpo", "ipo", "lrml")):
        for b in (0.025, 0.05, 0.1, 0.25, 0.5, 1.0):
            pts.append({"objective": name, "beta": b, "kl": 2 / b + 0.01 * i, "kl_se": 0.1,
                        "reward": 1 - 0.1 * b + 0.001 * i, "reward_se": 0.01, "n_done": 2, "n_failed": 0})
    return pts


def test_beta_labels_do_not_overlap_and_every_beta_has_a_marker_in_the_legend():
    fig = figure(crowded_points(), sft={"objective": "SFT", "kl": 0.0, "kl_se": 0.0, "reward": 0.8,
                                        "reward_se": 0.01, "n_seeds": 2})
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in ax.texts]
    assert boxes and "SFT" in [b[0] for b in boxes]
    for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), f"labels {ta!r} and {tb!r} overlap"
    legends = [c for c in ax.get_children() if type(c).__name__ == "Legend"]
    entries = {t.get_text() for lg in legends for t in lg.get_texts()}
    assert {f"β={b:g}" for b in (0.025, 0.05, 0.1, 0.25, 0.5, 1.0)} <= entries
    assert {"dpo", "ipo", "lrml", "SFT model (reference, KL 0)"} <= entries
    markers = {ln.get_marker() for ln in ax.lines if len(ln.get_xdata()) == 1 and ln.get_color() != "black"}
    assert len(markers) == 6  # one marker shape per beta


def test_the_sft_model_is_a_point_at_kl_zero_with_the_reference_reward(tmp_path):
    result = sweep({"dpo": "dpo", "ipo": "ipo"}, betas=[0.1, 0.5], seeds=[0, 1, 2], out_dir=tmp_path,
                   runner=FakeRunner())
    sft = json.loads((tmp_path / "sweep.json").read_text())["sft"]
    refs = [1.0 + SEED_EFFECT[s] for s in (0, 1, 2)]  # the fake reference's reward per seed
    assert sft["kl"] == 0 and sft["n_seeds"] == 3 and sft == result["sft"]
    assert sft["reward"] == pytest.approx(sum(refs) / 3) and sft["reward_se"] > 0
    fig = figure(result["points"], sft=sft)
    star = [ln for ln in fig.axes[0].lines if ln.get_marker() == "*"]
    assert star and list(star[0].get_xdata()) == [0.0] and star[0].get_ydata()[0] == pytest.approx(sft["reward"])


def test_no_reference_reward_no_sft_point():
    from evaluation.compare import Run, Setting
    assert sft_point([Run("dpo", Setting(seed=0, beta=0.1), "done", metrics={"kl": 1.0, "reward": 0.5})]) is None


def test_sweep_writes_into_out_and_nowhere_else(tmp_path, fake, capsys):
    out = tmp_path / "runs" / "sweep"
    assert main(["sweep", "--objectives", "dpo", "--betas", "0.1", "--seeds", "0", "--out", str(out)]) == 0
    assert "SFT (ref)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["frontier.png", "sweep.json"]  # FakeRunner writes nothing
    run_dirs = {Path(c["out_dir"]) for c in fake.calls}
    assert run_dirs == {out / "runs" / "dpo" / "synthetic_beta=0.1_seed=0"}
    assert not any("sweep/sweep" in str(d) for d in run_dirs)


@pytest.mark.parametrize("betas", [["0"], ["0.1", "-0.5"], ["nan"], ["inf"]])
def test_betas_must_be_above_zero(tmp_path, fake, capsys, betas):
    assert main(["sweep", "--objectives", "dpo", "--betas", *betas, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("disco sweep: --betas must be in 0 < beta < inf")
    assert not fake.calls and not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="0 < beta"):
        sweep({"dpo": "dpo"}, betas=[0.0], out_dir=tmp_path / "o", runner=FakeRunner())


def test_the_printed_points_say_what_their_plus_minus_is(tmp_path, fake):
    from evaluation.frontier import format_points
    result = sweep({"dpo": "dpo"}, betas=[0.1], seeds=[0, 1], out_dir=tmp_path, runner=fake)
    text = format_points(result["points"], sft=result["sft"])
    assert " ± " in text
    assert "± = standard error over those runs (sample sd / sqrt(runs)" in text
    assert "SFT: the reference model's reward on the same prompts, mean ± se over seeds" in text
