"""evaluation.tldr: the TL;DR recipe's summaries judged pairwise (against the references and the SFT
model), ``disco eval tldr`` through a real HTTP fake, and held-out runs of recipe:tldr judged after
training so that --metric win_rate reads the judge's numbers."""

from __future__ import annotations

import json
import re

import pytest

from evaluation import alpaca, analysis_commands, tldr
from evaluation.heldout import HeldoutError, evaluate_heldout
from evaluation.judge import FakeJudge
from tests.evaluation.fake_openai_server import FakeOpenAIServer, Reply, chat_body
from tests.evaluation.fakes import FakeResult, make_campaign

N_POSTS = 8
POSTS = [f"SUBREDDIT: r/test\nTITLE: story {i}\nPOST: a long story number {i} about a cat and a dog" for i in range(N_POSTS)]
REFERENCE = ["the cat met the dog " + "x" * (3 * i) for i in range(N_POSTS)]   # 20 .. 41 characters
SFT = ["sft says " + "y" * 26 for _ in range(N_POSTS)]                           # 35 characters


def write_outputs(folder, model, reference=REFERENCE, sft=SFT):
    folder.mkdir(parents=True, exist_ok=True)
    for name, outs, generator in (("model_outputs.json", model, "policy"), ("sft_outputs.json", sft, "sft"),
                                  ("reference_outputs.json", reference, "human")):
        rows = [{"instruction": p, "output": o, "generator": generator} for p, o in zip(POSTS, outs)]
        (folder / name).write_text(json.dumps(rows))
    return folder


def summaries(text: str) -> tuple[str, str]:
    """(summary m, summary M) as the annotator prompt shows them."""
    m = re.search(r"## Summary m\n\n(.*?)\n\n## Summary M\n\n(.*?)\n\nWhich summary", text, re.S)
    return m.group(1), m.group(2)


def shorter(messages) -> str:
    """A judge that always prefers the shorter summary."""
    first, second = summaries(messages[-1]["content"])
    return "m" if len(first) < len(second) else "M"


MODEL = ["short " + "z" * (7 * i) for i in range(N_POSTS)]   # 6 .. 55 characters: no ties


def expected_shorter_win_rate(model, other) -> float:
    return sum(len(a) < len(b) for a, b in zip(model, other)) / len(model)


def test_annotator_prompt_carries_the_post_and_both_summaries(tmp_path):
    judge = FakeJudge(shorter)
    tldr.judge_outputs(write_outputs(tmp_path / "tldr", MODEL), judge)
    assert len(judge.calls) == 2 * N_POSTS
    system, user = judge.calls[0]
    assert system["role"] == "system" and "summar" in system["content"]
    assert POSTS[0] in user["content"] and "{" not in user["content"]
    assert set(summaries(user["content"])) == {MODEL[0], REFERENCE[0]}
    assert "m or M" in user["content"]


def test_a_judge_preferring_the_shorter_summary_gives_the_expected_win_rates(tmp_path):
    folder = write_outputs(tmp_path / "tldr", MODEL)
    judge = FakeJudge(shorter)
    metrics = tldr.judge_outputs(folder, judge)
    vs_human, vs_sft = expected_shorter_win_rate(MODEL, REFERENCE), expected_shorter_win_rate(MODEL, SFT)
    assert (vs_human, vs_sft) == (0.5, 0.625)
    assert metrics["win_rate"] == pytest.approx(vs_human) and metrics["win_rate_vs_sft"] == pytest.approx(vs_sft)
    # the order was swapped for some posts: reading "M" as "the policy won" everywhere would be wrong
    swapped = [alpaca.is_swapped(p) for p in POSTS]
    assert any(swapped) and not all(swapped)
    naive = sum((shorter([{"content": c[-1]["content"]}]) == "M") for c in judge.calls[:N_POSTS]) / N_POSTS
    assert naive != pytest.approx(vs_human)
    assert metrics["n_judged"] == 2 * N_POSTS and metrics["n_failed"] == 0 and metrics["n_eval"] == N_POSTS
    assert metrics["win_rate_se"] > 0 and 0 <= metrics["lc_win_rate"] <= 1 and metrics["lc_glm"] == alpaca.GLM_MINIMAL
    assert metrics["avg_length"] == int(sum(map(len, MODEL)) / N_POSTS)
    assert metrics["per_prompt"]["win_rate"] == [float(len(a) < len(b)) for a, b in zip(MODEL, REFERENCE)]
    board = json.loads((folder / "leaderboard.json").read_text())
    assert board["vs_human"]["win_rate"] == pytest.approx(100 * vs_human) and board["metrics"]["n_judged"] == 16
    annotations = json.loads((folder / "annotations_vs_sft.json").read_text())
    assert {a["generator_1"] for a in annotations} == {"sft"} and {a["generator_2"] for a in annotations} == {"policy"}
    # judged again: every reply comes from the folder's cache
    again = FakeJudge(shorter)
    assert tldr.judge_outputs(tmp_path, again)["win_rate"] == metrics["win_rate"] and again.calls == []


def test_failed_judgments_are_counted_not_averaged_and_all_failed_is_an_error(tmp_path):
    def flaky(messages):
        return "both are fine" if POSTS[2] in messages[-1]["content"] else shorter(messages)

    folder = write_outputs(tmp_path / "a", MODEL)
    metrics = tldr.judge_outputs(folder, FakeJudge(flaky))
    keep = [i for i in range(N_POSTS) if i != 2]
    assert metrics["n_failed"] == 2 and metrics["n_judged"] == 2 * (N_POSTS - 1)
    assert metrics["failures"] == {"vs_human": {"unparseable": 1}, "vs_sft": {"unparseable": 1}}
    assert metrics["win_rate"] == pytest.approx(
        expected_shorter_win_rate([MODEL[i] for i in keep], [REFERENCE[i] for i in keep]))
    assert "win_rate" not in metrics["per_prompt"]          # no per-post pairing with a hole in it
    with pytest.raises(tldr.TldrJudgeError, match=r"every judgment vs human failed \({'unparseable': 8}\)"):
        tldr.judge_outputs(write_outputs(tmp_path / "b", MODEL), FakeJudge(lambda m: "?"))
    with pytest.raises(tldr.TldrJudgeError, match="no model_outputs.json"):
        tldr.judge_outputs(tmp_path / "nothing", FakeJudge(shorter))


# ------------------------------------------------------------------------------------- CLI
def http_shorter(body, n):
    return Reply(body=chat_body(shorter(body["messages"])))


def test_disco_eval_tldr_judges_a_run_folder_over_http(tmp_path, capsys):
    from discovery.cli import main
    run = tmp_path / "run"
    write_outputs(run / "tldr", MODEL)
    with FakeOpenAIServer(http_shorter) as srv:
        argv = ["eval", "tldr", str(run), "--judge-base-url", srv.url, "--judge-model", "judge-x", "--judge-retries", "0"]
        assert main(argv + ["--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert len(srv.requests) == 2 * N_POSTS and all(r["max_tokens"] == 1 and r["logprobs"] for r in srv.requests)
        assert main(argv) == 0                                # the table; the replies come from the cache
        table = capsys.readouterr().out
        assert len(srv.requests) == 2 * N_POSTS
    assert out["win_rate"] == pytest.approx(0.5) and out["win_rate_vs_sft"] == pytest.approx(0.625)
    assert out["judge"] == "judge-x" and "per_prompt" not in out
    assert "vs human reference" in table and "50.0%" in table and "62.5%" in table
    assert (run / "tldr" / "leaderboard.json").is_file() and (run / "tldr" / "judgments.jsonl").is_file()


def test_disco_eval_tldr_without_outputs_is_a_one_line_error(tmp_path, capsys):
    from discovery.cli import main
    assert main(["eval", "tldr", str(tmp_path), "--judge-base-url", "http://127.0.0.1:9/v1",
                 "--judge-model", "j"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no model_outputs.json" in err


# ------------------------------------------------------------------------------------- held out
TLDR_TASK = "recipe:tldr:model=/models/sft,dataset=/data/tldr"
LENGTH = {"dpo": 30, "ipo": 36, "lrml": 24, "good": 8}   # the summary length each objective "learns"


class TldrRunner:
    """Stands in for run_candidate on recipe:tldr: writes the three output files where score() would."""

    def __init__(self):
        self.calls = []

    def __call__(self, objective, task="synthetic", beta=None, seed=0, out_dir=None, **overrides):
        self.calls.append(dict(objective=objective, task=task, seed=seed, **overrides))
        name = objective.split("def ", 1)[1].split("(", 1)[0] if "def " in objective else objective
        folder = write_outputs(__import__("pathlib").Path(out_dir) / "tldr",
                               ["w" * (LENGTH[name] + (seed * 7 + i * 5) % 17) for i in range(N_POSTS)])
        return FakeResult("done", None, {"model_dir": str(out_dir), "outputs_dir": str(folder), "n_eval": N_POSTS})


def test_heldout_recipe_tldr_runs_are_judged_and_win_rate_is_in_the_tables(tmp_path):
    d = make_campaign(tmp_path / "c")
    runner = TldrRunner()
    judge = FakeJudge(shorter)
    result = evaluate_heldout(d, top=1, tasks=[TLDR_TASK], seeds=[1, 2], metric="win_rate", runner=runner,
                              judge=judge, n_boot=200, log=lambda m: None)
    assert {c["task"] for c in runner.calls} == {"recipe:tldr"} and len(runner.calls) == 4 * 2
    assert all(c["model"] == "/models/sft" and c["dataset"] == "/data/tldr" for c in runner.calls)
    assert len(judge.calls) == 8 * 2 * N_POSTS
    saved = json.loads((d / "heldout.json").read_text())
    (stratum, table), = saved["per_setting"].items()
    assert stratum == "recipe:tldr,dataset=/data/tldr,max_steps=20,model=/models/sft/beta=0.1"  # the search's budget
    rows = {r["objective"]: r for r in table["rows"]}
    assert set(rows) == {"good#4", "dpo", "ipo", "lrml"} and all(r["n_done"] == 2 for r in rows.values())
    assert rows["good#4"]["mean"] > rows["lrml"]["mean"] > rows["dpo"]["mean"] > rows["ipo"]["mean"]
    run = next(r for r in saved["runs"] if r["objective"] == "dpo")
    assert {"win_rate", "lc_win_rate", "win_rate_vs_sft", "outputs_dir"} <= set(run["metrics"])
    assert rows["dpo"]["vs"]["ipo"]["pairing"].startswith("prompt")   # per-post outcomes, the same posts
    assert stratum in saved["transfer"] and saved["transfer"][stratum]["metric"] == "win_rate"
    assert (d / "heldout" / "judgments.jsonl").is_file()
    assert result.table.metric == "win_rate"


def test_heldout_recipe_tldr_without_a_judge_is_refused_before_training(tmp_path, capsys, monkeypatch):
    from discovery.cli import main
    d = make_campaign(tmp_path / "c")
    runner = TldrRunner()
    with pytest.raises(HeldoutError, match="recipe:tldr is scored by an LLM judge: pass --judge-base-url"):
        evaluate_heldout(d, top=1, tasks=[TLDR_TASK], seeds=[1], runner=runner, log=lambda m: None)
    assert runner.calls == []
    monkeypatch.setattr(analysis_commands, "RUNNER", runner)
    assert main(["heldout", str(d), "--top", "1", "--tasks", TLDR_TASK, "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("disco: error: recipe:tldr is scored by an LLM judge") and runner.calls == []


def test_disco_heldout_with_judge_flags_judges_over_http(tmp_path, capsys, monkeypatch):
    from discovery.cli import main
    d = make_campaign(tmp_path / "c")
    monkeypatch.setattr(analysis_commands, "RUNNER", TldrRunner())
    with FakeOpenAIServer(http_shorter) as srv:
        assert main(["heldout", str(d), "--top", "1", "--tasks", TLDR_TASK, "--seeds", "1", "--metric",
                     "win_rate_vs_sft", "--judge-base-url", srv.url, "--judge-model", "judge-x",
                     "--judge-retries", "0", "--n-boot", "200", "--quiet", "--cache", str(tmp_path / "j.jsonl")]) == 0
        assert len(srv.requests) == 4 * 2 * N_POSTS
    assert "win_rate_vs_sft" in capsys.readouterr().out
    saved = json.loads((d / "heldout.json").read_text())
    assert saved["metric"] == "win_rate_vs_sft" and all(r["metrics"]["judge"] == "judge-x" for r in saved["runs"])
    assert len((tmp_path / "j.jsonl").read_text().splitlines()) == len(srv.requests)
