"""What the language model is shown: the task card, per-entry diagnostics, the complete history
table and the lessons, sent through the real ``openai`` client to a fake endpoint."""

from __future__ import annotations

import json
import re

import pytest

from discovery import history
from discovery.archive import Archive
from discovery.config import CampaignConfig, PromptLimits
from discovery.llm import LLMProposer, render_prompt
from fake_openai import FakeOpenAI, reply

GOOD = {"idea": "a steeper logistic loss near zero", "thought": "steeper " * 5 + "because it sharpens",
        "name": "steep_dpo", "code": "def steep(rho, beta):\n    return -F.logsigmoid(2 * beta * rho)\n"}


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("DISCO_TEST_KEY", "sk-test-abc")


def metrics(values: dict[int, float], kl: float = 10.0, length: float = 15.0, reward: float = 0.5,
            margins: tuple[float, float] | None = None) -> dict:
    """A row's metrics as the campaign stores them: the mean and one entry per finished seed."""
    per_seed = []
    for seed, v in values.items():
        entry = {"seed": seed, "status": "done", "metrics": {"win_rate": v, "kl": kl, "completion_length": length,
                                                             "reward": reward}}
        if margins:  # a run's record as inner_loop.trainer writes it (discovery.pilot compacts it)
            entry["margins"] = {"quantity": "rho", "pooled_levels": [0.0, 0.5, 1.0], "n": 64,
                                "pooled": [margins[0] + seed, 0.0, margins[1] - seed],
                                "step": [1], "step_levels": [0.0, 1.0], "per_step": [[margins[0], margins[1]]]}
        per_seed.append(entry)
    mean = {"win_rate": sum(values.values()) / len(values), "kl": kl, "completion_length": length, "reward": reward}
    return {"mean": mean, "per_seed": per_seed}


DPO = {0: 0.60, 1: 0.62, 2: 0.58}


def archive_with(tmp_path, rows: list[tuple[str, str, dict | None, dict]]) -> Archive:
    """An archive with the three baselines (DPO finished with DPO's metrics) and ``rows``:
    (name, status, metrics, extra fields)."""
    archive = Archive.create(tmp_path / "c", CampaignConfig().to_dict())
    for name in ("dpo", "ipo", "lrml"):
        cid = archive.add(kind="baseline", name=name, code="def b(rho, beta): return rho")
        values = DPO if name == "dpo" else {s: v - 0.05 for s, v in DPO.items()}
        archive.update(cid, status="done", fitness=sum(values.values()) / 3, metrics=metrics(values))
    for name, status, m, extra in rows:
        cid = archive.add(kind="candidate", name=name, code="def f(rho, beta):\n    return -F.logsigmoid(beta * rho)\n",
                          thought=extra.get("thought", f"the idea behind {name}"), idea=extra.get("idea", ""),
                          parents=extra.get("parents", ()))
        fields = {"status": status}
        if m is not None:
            fields.update(metrics=m, fitness=m["mean"]["win_rate"])
        if "reason" in extra:
            fields["reason"] = extra["reason"]
        archive.update(cid, **fields)
    return archive


def prompt_of(archive: Archive, config: CampaignConfig | None = None, **limits) -> str:
    """The user prompt as the real client sends it to a fake endpoint."""
    config = (config or CampaignConfig()).resolved()
    limits = PromptLimits(**limits) if limits else config.prompt
    context = archive.context(task=config.training.task, beta=config.training.beta, metric="win_rate",
                              n_best=limits.n_best, n_recent=limits.n_recent, n_failures=limits.n_failures)
    context = history.enrich(context, archive, config)
    with FakeOpenAI([reply(json.dumps(GOOD))]) as server:
        proposer = LLMProposer(model="fake", base_url=server.url, api_key_env="DISCO_TEST_KEY", limits=limits,
                               sleep=lambda s: None)
        proposal = proposer.propose(context)
        user = server.requests[0]["body"]["messages"][1]["content"]
    assert proposal.error is None and proposal.idea == GOOD["idea"]
    assert render_prompt(context, limits) == user  # what is archived (prompt.md) is what was sent
    return user


def test_every_prompt_carries_the_task_card(tmp_path):
    config = CampaignConfig.from_dict({"training": {"seeds": [0, 1, 2], "overrides": {"num_epochs": 1}}})
    archive = archive_with(tmp_path, [])
    archive.set_meta("noise", {"min_detectable": 0.031, "paired_se": 0.011, "n_seeds": 3,
                               "label": "from a calibration file", "source": "calibration"})
    text = prompt_of(archive, config)
    card = text.split("## The task", 1)[1].split("## Lessons", 1)[0]
    assert "Task `synthetic`" in card and "gold reward" in card            # what is generated and judged
    assert "about 32 optimizer steps" in card and "AdamW" in card          # 2000 pairs / 64 = 32 steps x 1 epoch
    assert "learning rate 0.0005" in card and "3 seeds" in card
    assert "smallest detectable difference 0.0310" in card                 # the calibrated noise floor
    assert "beta = 0.1" in card and "constant factor" in card
    assert "batch-coupled losses" in card and "allowed" in card
    assert "# Experiment 1 of 6" in text and "5 experiment(s) remain" in text


def test_diagnostics_tell_apart_what_failed_for_opposite_reasons(tmp_path):
    archive = archive_with(tmp_path, [
        ("clone", "done", metrics(DPO), {}),
        ("timid", "done", metrics({s: v - 0.1 for s, v in DPO.items()}, kl=0.4), {}),
        ("wild", "done", metrics({s: v - 0.1 for s, v in DPO.items()}, kl=64.0, length=5.0, margins=(-3.0, 41.0)), {}),
    ])
    text = prompt_of(archive, n_recent=3)
    blocks = {m.group(1): m.group(2) for m in re.finditer(r"### #\d+ (\w+)\n(.*?)```python", text, re.S)}
    assert "trained identically to DPO" in blocks["clone"] and "within noise" in blocks["clone"]
    assert "barely moved from the reference: KL 0.4 vs DPO 10" in blocks["timid"]
    assert "drifted far: KL 64 vs DPO 10" in blocks["wild"] and "collapsed: completions shortened" in blocks["wild"]
    assert "worse than DPO" in blocks["wild"]
    assert "margins rho reached in training (over steps and seeds): -3 to 41" in blocks["wild"]
    assert "per seed win_rate: 0: 0.5, 1: 0.52, 2: 0.48" in blocks["timid"]
    assert "vs DPO: win_rate -0.1000 [-0.1000, -0.1000]" in blocks["timid"]   # paired by seed, with its interval
    assert "95% CI over 3 seeds" in blocks["timid"]


def test_best_lists_only_candidates_above_dpo(tmp_path):
    archive = archive_with(tmp_path, [
        ("below", "done", metrics({s: v - 0.02 for s, v in DPO.items()}), {}),
        ("above", "done", metrics({0: 0.65, 1: 0.66, 2: 0.64}), {}),
    ])
    best = prompt_of(archive).split("## Best candidates (above DPO)", 1)[1].split("## Chosen to build on", 1)[0]
    assert "above" in best and "below" not in best


def test_a_200_row_archive_keeps_every_candidate_visible_under_the_bound(tmp_path):
    rows = []
    for i in range(200):
        fam = ("steep", "clip", "gate", "poly")[i % 4]
        if i % 5 == 0:
            rows.append((f"{fam}_{i}", "invalid", None, {"reason": "ValueError: bad", "idea": "word " * 40}))
        else:
            shift = (i % 17 - 8) / 400
            rows.append((f"{fam}_{i}", "done", metrics({s: v + shift for s, v in DPO.items()}, kl=5 + i % 9),
                         {"idea": f"{fam} variant number {i} with a long explanation " + "x" * 50}))
    archive = archive_with(tmp_path, rows)
    limits = {"max_prompt_chars": 30_000, "max_history_rows": 40}
    text = prompt_of(archive, **limits)
    assert len(text) <= 30_000
    table = text.split("## Every candidate so far", 1)[1].split("## Best candidates", 1)[0]
    seen = set()
    for a, b in re.findall(r"#(\d+)(?:-#(\d+))?", table):
        seen |= set(range(int(a), int(b or a) + 1))
    ids = [r["id"] for r in archive.rows(kind="candidate")]
    assert set(ids) <= seen, f"candidates missing from the table: {sorted(set(ids) - seen)[:10]}"
    assert "family steep" in table and "grouped by family" in table
    assert f"#{ids[-1]} poly_199" in table                       # the latest keep their own line
    assert "# Experiment 201 of 6" in text or "Experiment 201" in text
    assert "word word word ..." in table or "..." in table          # ideas cut at a word, with an ellipsis


def test_ideas_are_shown_whole_and_hypotheses_cut_at_a_word(tmp_path):
    long = "This loss " + "reshapes the tail of the logistic " * 40 + "end."
    archive = archive_with(tmp_path, [("tail", "done", metrics(DPO), {"idea": "reshape the tail", "thought": long})])
    text = prompt_of(archive, max_thought_chars=120)
    block = text.split("### #4 tail", 1)[1]
    hypothesis = re.search(r"Hypothesis: (.*)", block).group(1)
    assert hypothesis.endswith(" ...") and len(hypothesis) <= 125
    assert hypothesis[:-4].split()[-1] in long.split()               # the last word is whole
    assert "Idea: reshape the tail" in block
    assert "| reshape the tail |" in text                             # the table shows the idea, not the thought


def test_rule_lessons_are_stored_and_shown_in_later_prompts(tmp_path):
    archive = archive_with(tmp_path, [
        ("clone", "done", metrics(DPO), {}),
        ("wild", "done", metrics({s: v - 0.1 for s, v in DPO.items()}, kl=64.0), {}),
        ("broken", "invalid", None, {"reason": "output: returned shape [] for a batch of 8"}),
    ])
    assert history.lessons_due(archive, every=3) == 6 and history.lessons_due(archive, every=4) is None
    context = history.enrich(archive.context(task="synthetic", beta=0.1, metric="win_rate", n_best=5, n_recent=3,
                                             n_failures=3), archive, CampaignConfig().resolved())
    text = history.rule_lessons(context.history, history.reference_entry(context), context.noise, "win_rate")
    assert "3 candidates so far: 2 trained, 1 failed or invalid" in text
    assert "trained identically to DPO: #4" in text and "drifted far: #5" in text
    assert "clearly worse: #5 wild" in text and "output (1)" in text
    history.add_note(archive, kind=history.LESSONS, after_id=6, text=text, author="rules")
    assert history.lessons_due(archive, every=1) is None
    shown = prompt_of(archive).split("## Lessons so far", 1)[1].split("## Reference objectives", 1)[0]
    assert "drifted far: #5" in shown


def _steep(k: int) -> dict:
    return {"idea": f"logistic with slope {k}", "thought": f"a steeper logistic loss, {k} times",
            "name": f"steep{k}", "code": f"def steep(rho, beta):\n    return -F.logsigmoid({k} * beta * rho)\n"}


def test_a_campaign_archives_full_prompts_and_writes_lessons_every_few_candidates(tmp_path):
    from campaign_fakes import fake_config
    from discovery.cli import main
    import yaml
    # requests in order: proposals 1-2, lessons, proposals 3-4, lessons, proposal 5
    script = [reply(json.dumps(_steep(2))), reply(json.dumps(_steep(3))),
              reply("- lesson one: steeper is better (#4, #5)", prompt_tokens=50, completion_tokens=10),
              reply(json.dumps(_steep(4))), reply(json.dumps(_steep(5))),
              reply("- lesson two: slope 5 is the best so far (#7)", prompt_tokens=50, completion_tokens=10),
              reply(json.dumps(_steep(6)))]
    out = tmp_path / "c"
    with FakeOpenAI(script) as server:
        cfg = fake_config(candidates=5, proposer="openai", base_url=server.url, model="fake",
                          **{"prompt.lessons_every": 2, "training.seeds": [0, 1, 2]})
        path = tmp_path / "campaign.yaml"
        path.write_text(yaml.safe_dump(cfg.to_dict()))
        assert main(["run", "--out", str(out), "--config", str(path), "--quiet"]) == 0
        assert len(server.requests) == 7
        lessons_request = server.requests[2]["body"]["messages"][1]["content"]
    assert "Write the new lessons summary" in lessons_request and "#5 steep3" in lessons_request
    with Archive.open(out) as archive:
        notes = history.notes(archive)
        rows = archive.rows(kind="candidate")
        usage = archive.meta("other_usage")
    assert [(n["after_id"], n["author"]) for n in notes] == [(rows[1]["id"], "model fake"), (rows[3]["id"], "model fake")]
    assert usage == {"fake": [100, 20]}                      # the lessons calls count toward the budget
    assert [r["idea"] for r in rows] == [f"logistic with slope {k}" for k in range(2, 7)]
    fifth = (out / rows[4]["folder"] / "prompt.md").read_text()
    assert "# Experiment 5 of 5" in fifth and "0 experiment(s) remain" in fifth
    assert "lesson two: slope 5 is the best so far" in fifth and "lesson one" not in fifth
    assert "Task `synthetic`" in fifth and "Noise floor" in fifth
    table = fifth.split("## Every candidate so far", 1)[1].split("## Best candidates", 1)[0]
    assert all(f"#{r['id']} {r['name']} | logistic with slope" in table for r in rows[:4])
    assert "vs DPO: win_rate" in fifth and "95% CI over 3 seeds" in fifth
    third = (out / rows[2]["folder"] / "prompt.md").read_text()
    assert "lesson one" in third


def test_without_a_model_the_lessons_are_written_by_rules(tmp_path):
    from campaign_fakes import fake_config
    from discovery.campaign import run_campaign
    config = fake_config(candidates=4, **{"prompt.lessons_every": 2})
    run_campaign(tmp_path / "c", config, progress=False)
    with Archive.open(tmp_path / "c") as archive:
        notes = history.notes(archive)
    assert [n["author"] for n in notes] == ["rules", "rules"]
    assert "2 candidates so far" in notes[0]["text"] and "4 candidates so far" in notes[1]["text"]
