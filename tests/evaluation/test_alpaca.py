"""AlpacaEval: leaderboard numbers reproduced from DiscoPOP's real annotations, alpaca_eval's order
swaps, log-prob-weighted and discrete preferences through a loopback fake endpoint, and the CLI."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from evaluation import alpaca
from evaluation.judge import JudgmentCache, OpenAIJudge
from tests.evaluation.fake_openai_server import FakeOpenAIServer, Reply, chat_body

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "alpaca_eval_discopop"
RUNS = sorted(p.parent.name for p in SHARED.glob("*/annotations.json")) if SHARED.is_dir() else []
needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason=f"DiscoPOP AlpacaEval data not at {SHARED}")

# A test prompt in alpaca_eval's ChatML layout (not alpaca_eval's text, which is read from the package).
TEST_PROMPT = ("<|im_start|>system\nPick the better output.\n<|im_end|>\n<|im_start|>user\n"
               "Instruction: {instruction}\n{\n  \"m\": {output_1}\n  \"M\": {output_2}\n}\n"
               "Answer m or M.\n<|im_end|>")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def load(run):
    annotations = json.loads((SHARED / run / "annotations.json").read_text())
    import pandas as pd
    return annotations, pd.read_csv(SHARED / run / "leaderboard.csv", index_col=0).iloc[0]


# ------------------------------------------------------------------ real leaderboard numbers
@needs_data
@pytest.mark.parametrize("run", RUNS)
def test_leaderboard_numbers_are_reproduced_from_annotations(run):
    """Counts and avg_length exactly; rates to 1e-9 points (the largest gap seen is 1.2e-10: the
    JSON stores preferences to ~10 decimals, the csv was computed before that rounding)."""
    annotations, board = load(run)
    row = alpaca.leaderboard_row(annotations)
    for key in ("n_wins", "n_wins_base", "n_draws", "n_total", "avg_length"):
        assert row[key] == board[key], key
    for key in ("win_rate", "standard_error", "discrete_win_rate"):
        assert row[key] == pytest.approx(board[key], rel=0, abs=1e-9), key


@needs_data
def test_download_free_lc_is_not_the_leaderboards_but_within_its_stated_gap_and_keeps_the_ranking():
    """The minimal GLM (no instruction difficulty, no gamed-baseline regulariser) overestimates the
    leaderboard's LC by 1.6-3.4 points on these nine runs; we pin [0, 4] and the same ordering."""
    ours, theirs = [], []
    for run in RUNS:
        annotations, board = load(run)
        lc = alpaca.length_controlled(annotations)
        assert lc["lc_glm"] == "length_controlled_minimal" and lc["lc_standard_error"] is None
        assert 0.0 < lc["length_controlled_winrate"] - board["length_controlled_winrate"] < 4.0, run
        ours.append(lc["length_controlled_winrate"])
        theirs.append(board["length_controlled_winrate"])
    assert list(np.argsort(ours)) == list(np.argsort(theirs))


@needs_data
@pytest.mark.parametrize("run", RUNS)
def test_order_swaps_match_alpaca_evals_own_annotations(run):
    """Recompute each preference from the judge's raw top log-probs in the order it was shown,
    un-swap it with our seeded rule, and land on the stored preference."""
    annotations, _ = load(run)
    checked = 0
    for a in annotations:
        raw = a.get("raw_completion")
        if not isinstance(raw, dict) or not raw.get("logprobs") or a["preference"] is None:
            continue
        top = {t["token"]: t["logprob"] for t in raw["logprobs"]["content"][0]["top_logprobs"]}
        shown = alpaca.preference_from_logprobs(top)
        expected = 3 - shown if alpaca.is_swapped(a["instruction"]) else shown
        assert expected == pytest.approx(a["preference"], abs=1e-6)
        checked += 1
    assert checked > 750


# ------------------------------------------------------------------------- formulas by hand
def test_winrate_metrics_by_hand():
    """preferences 1, 2, 1.5, 1.75, None -> p-1 = 0, 1, .5, .75 (None dropped):
    win_rate = 2.25/4 = 56.25; n_wins (>.5) = 2; n_wins_base (<.5) = 1; n_draws (=1.5) = 1;
    discrete rounds to 1, 2, draw, 2 -> (0 + 1 + .5 + 1)/4 = 62.5;
    standard_error = std([0, 1, .5, .75], ddof=1)/2 * 100."""
    m = alpaca.winrate_metrics([1, 2, 1.5, 1.75, None])
    assert m["win_rate"] == pytest.approx(56.25)
    assert (m["n_wins"], m["n_wins_base"], m["n_draws"], m["n_total"]) == (2, 1, 1, 4)
    assert m["discrete_win_rate"] == pytest.approx(62.5)
    assert m["standard_error"] == pytest.approx(np.std([0, 1, .5, .75], ddof=1) / 2 * 100)


def test_preference_from_logprobs_is_one_plus_probability_second_is_better():
    assert alpaca.preference_from_logprobs({"m": math.log(.25), "M": math.log(.75)}) == pytest.approx(1.75)
    assert alpaca.preference_from_logprobs({"M": -0.01, "The": -3.0}) == pytest.approx(2.0)
    assert alpaca.preference_from_logprobs({"m": -5.0}) == pytest.approx(1.0)
    assert alpaca.preference_from_logprobs({"Both": -0.1}) is None


def test_lc_with_a_difficulty_file_uses_the_difficulty_term(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"output_1": "x" * int(rng.integers(10, 200)), "output_2": "y" * int(rng.integers(10, 200)),
             "preference": float(rng.uniform(1, 2))} for _ in range(60)]
    path = tmp_path / "instruction_difficulty.csv"
    path.write_text("index,instruction_difficulty\n" + "".join(f"{i},{rng.normal()}\n" for i in range(60)))
    lc = alpaca.length_controlled(rows, alpaca.load_instruction_difficulty(path))
    assert lc["lc_glm"] == "length_controlled_noreg" and lc["lc_standard_error"] > 0
    assert set(lc["lc_weights"]) == {"np.tanh(std_delta_len)", "instruction_difficulty", "not_gamed_baseline"}


# --------------------------------------------------------------------- judging end to end
def pairs(n=10):
    rows = alpaca.pair_outputs(
        [{"instruction": f"task {i}", "output": f"MODEL-OUTPUT {i}", "generator": "mine"} for i in range(n)],
        [{"instruction": f"task {i}", "output": f"REFERENCE-OUTPUT {i}", "generator": "ref",
          "dataset": "d"} for i in range(n)])
    swaps = {alpaca.is_swapped(r["instruction"]) for r in rows}
    assert swaps == {True, False}, "the test needs both orders"
    return rows


def model_shown_first(body):
    text = body["messages"][-1]["content"]
    return text.index("MODEL-OUTPUT") < text.index("REFERENCE-OUTPUT")


def prompt_file(tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_text(TEST_PROMPT)
    return path


def test_logprob_weighted_preferences_are_unswapped(tmp_path):
    """The judge gives the model's output P=0.8 wherever it is shown: every preference is 1.8."""
    def judge(body, n):
        first = model_shown_first(body)
        return Reply(body=chat_body("m" if first else "M", {"m": math.log(.8 if first else .2),
                                                            "M": math.log(.2 if first else .8),
                                                            "The": -9.0}))

    rows = pairs()
    with FakeOpenAIServer(judge) as srv:
        out = alpaca.annotate(OpenAIJudge(srv.url, "judge-x", max_retries=0), rows, prompt_file(tmp_path))
    assert [a["preference"] for a in out] == pytest.approx([1.8] * len(rows))
    assert [a["is_switched_outputs"] for a in out] == [alpaca.is_swapped(r["instruction"]) for r in rows]
    assert all(r["max_tokens"] == 1 and r["logprobs"] and r["top_logprobs"] == 5 for r in srv.requests)
    system, user = srv.requests[0]["messages"]
    assert system == {"role": "system", "content": "Pick the better output."}
    assert "{instruction}" not in user["content"] and "task 0" in user["content"]
    assert alpaca.winrate_metrics([a["preference"] for a in out])["win_rate"] == pytest.approx(80.0)


def test_discrete_preferences_without_logprobs_and_unparseable_replies_are_failures(tmp_path):
    def judge(body, n):
        if "task 3" in body["messages"][-1]["content"]:
            return Reply(body=chat_body("Both are good"))
        return Reply(body=chat_body("m" if model_shown_first(body) else "M"))

    rows = pairs()
    with FakeOpenAIServer(judge) as srv:
        out = alpaca.annotate(OpenAIJudge(srv.url, "judge-x", max_retries=0), rows, prompt_file(tmp_path))
    assert [a["preference"] for a in out if a["instruction"] != "task 3"] == [2.0] * 9
    failed = next(a for a in out if a["instruction"] == "task 3")
    assert failed["preference"] is None and failed["failure"] == "unparseable"
    row = alpaca.leaderboard_row(out)
    assert row["n_total"] == 9 and row["win_rate"] == 100.0 and row["failures"] == {"unparseable": 1}


def test_rerun_with_cache_makes_no_requests(tmp_path):
    cache = tmp_path / "cache.jsonl"
    rows = pairs(4)
    with FakeOpenAIServer(lambda body, n: Reply(body=chat_body("M", {"M": -0.1, "m": -2.4}))) as srv:
        judge = OpenAIJudge(srv.url, "judge-x", max_retries=0)
        first = alpaca.annotate(judge, rows, prompt_file(tmp_path), JudgmentCache(cache))
        lines = cache.read_text()
        second = alpaca.annotate(judge, rows, prompt_file(tmp_path), JudgmentCache(cache))
    assert len(srv.requests) == 4 and cache.read_text() == lines and len(lines.splitlines()) == 4
    assert [a["preference"] for a in first] == [a["preference"] for a in second]


def test_model_outputs_file_is_alpaca_evals_format(tmp_path):
    path = tmp_path / "model_outputs.json"
    alpaca.write_model_outputs(path, [{"instruction": "i", "output": "o", "generator": "g", "dataset": "d"},
                                      {"instruction": "j", "output": "p", "generator": "g", "extra": 1}])
    assert json.loads(path.read_text()) == [
        {"dataset": "d", "instruction": "i", "output": "o", "generator": "g"},
        {"instruction": "j", "output": "p", "generator": "g"}]


@pytest.mark.skipif(importlib.util.find_spec("alpaca_eval") is None, reason="alpaca_eval not installed")
def test_installed_alpaca_eval_prompt_is_found_without_importing_it():
    messages = alpaca.chatml_to_messages(alpaca.find_prompt().read_text())
    assert [m["role"] for m in messages] == ["system", "user"]
    for field in ("{instruction}", "{output_1}", "{output_2}"):
        assert messages[1]["content"].count(field) == 1


# ------------------------------------------------------------------------------------- CLI
@needs_data
def test_cli_scores_an_annotations_file(capsys):
    from discovery.cli import main

    annotations, board = load("anonymous-zephyr-7b-g-dpo")
    rc = main(["eval", "alpaca", "--annotations",
               str(SHARED / "anonymous-zephyr-7b-g-dpo" / "annotations.json"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["n_wins"] == 638 and out["win_rate"] == pytest.approx(78.72045066973914)


def test_cli_judges_outputs_against_references(tmp_path, capsys):
    from discovery.cli import main

    rows = pairs(6)
    outputs, reference = tmp_path / "model_outputs.json", tmp_path / "reference.json"
    alpaca.write_model_outputs(outputs, [{"instruction": r["instruction"], "output": r["output_2"],
                                          "generator": "mine"} for r in rows])
    alpaca.write_model_outputs(reference, [{"instruction": r["instruction"], "output": r["output_1"],
                                            "generator": "ref"} for r in rows])
    with FakeOpenAIServer(lambda body, n: Reply(body=chat_body(
            "m" if model_shown_first(body) else "M"))) as srv:
        rc = main(["eval", "alpaca", "--outputs", str(outputs), "--reference", str(reference),
                   "--judge-base-url", srv.url, "--judge-model", "judge-x",
                   "--judge-prompt", str(prompt_file(tmp_path)),
                   "--annotations-out", str(tmp_path / "annotations.json"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["win_rate"] == 100.0 and out["n_total"] == 6
    written = json.loads((tmp_path / "annotations.json").read_text())
    assert {a["generator_2"] for a in written} == {"mine"} and {a["generator_1"] for a in written} == {"ref"}
