"""One campaign through the real pieces: sandbox validation, fingerprints, inspection plots and
run_candidate training on a tiny synthetic task (built into a temporary cache)."""

import pytest

from discovery.archive import Archive
from discovery.campaign import run_campaign
from discovery.config import CampaignConfig, TrainingConfig

TINY = dict(corpus_size=400, sft_steps=20, n_train_pairs=32, n_heldout_prompts=16, max_steps=4,
            batch_size=8)


@pytest.mark.real_seams
@pytest.mark.timeout(300)
def test_evolve_campaign_through_the_real_pieces(tmp_path):
    config = CampaignConfig(candidates=2, baselines=("dpo", "lrml"), training=TrainingConfig(
        seeds=(0,), beta=None, overrides={**TINY, "cache_dir": str(tmp_path / "cache")}))
    result = run_campaign(tmp_path / "c", config, progress=False)
    with Archive.open(tmp_path / "c") as a:
        rows = a.rows()
        assert a.config["training"]["beta"] == 0.1  # resolved from the task
    assert [r["status"] for r in rows[:2]] == ["done", "done"], [r["reason"] for r in rows]
    candidates = rows[2:]
    assert len(candidates) == 2 and result["counts"]["done"] + result["counts"]["duplicate"] == 2, \
        [(r["status"], r["reason"]) for r in candidates]
    for r in rows:
        if r["status"] == "done":
            # the default fitness, reward_gain, is a difference of two gold rewards in [0, 1]
            assert -1 <= r["fitness"] <= 1 and r["fingerprint_key"]
            assert "win_rate" in r["metrics"]["mean"]
    trained = [r for r in candidates if r["status"] == "done"]
    assert trained and trained[0]["checks"]["valid"] is True
    assert list((tmp_path / "c" / trained[0]["folder"]).rglob("*.png")), trained[0]["inspection"]
