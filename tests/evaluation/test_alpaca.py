"""AlpacaEval: leaderboard numbers reproduced from DiscoPOP's real annotations by alpaca_eval's own
metric functions, its LC GLM code run without the network, alpaca_eval's order swaps, log-prob-weighted
and discrete preferences through a loopback fake endpoint, and the CLI."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation import alpaca
from evaluation.judge import JudgmentCache, OpenAIJudge
from tests.evaluation.fake_openai_server import FakeOpenAIServer, Reply, chat_body

alpaca_eval = alpaca.alpaca_eval_package()
glm_winrate = alpaca_eval.metrics.glm_winrate

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
    """alpaca_eval's ``length_controlled_minimal`` GLM (no instruction difficulty, no gamed-baseline
    regulariser, since both need df_gamed.csv from the hub) is NOT the leaderboard's
    ``length_controlled_v1``: on these nine runs it lands 1.61 (hinge) to 3.42 (dbaql) points above
    the leaderboard's length_controlled_winrate (aql +2.14, cell +3.23, dbaql +3.42, dpo +1.87,
    hinge +1.61, kto +2.10, lrml +3.08, pfl +2.29, hfh4 dpo +2.45). We pin the gap to [1, 4] and the
    same ordering of the nine models, and claim no more."""
    ours, theirs = [], []
    for run in RUNS:
        annotations, board = load(run)
        lc = alpaca.length_controlled(annotations)
        assert lc["lc_glm"] == "length_controlled_minimal" and lc["lc_standard_error"] is None
        assert 1.0 < lc["length_controlled_winrate"] - board["length_controlled_winrate"] < 4.0, run
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


def synthetic_rows(n=60, seed=0):
    """Random lengths; preferences driven by the instruction difficulty of ``difficulties(n, seed)``."""
    rng = np.random.default_rng(seed)
    d = difficulties(n, seed)
    return [{"output_1": "x" * int(rng.integers(10, 200)), "output_2": "y" * int(rng.integers(10, 200)),
             "preference": float(1 + 1 / (1 + np.exp(1.5 * d[i] + 0.3 * rng.normal()))),
             "generator_1": "ref", "generator_2": "mine", "annotator": "judge-x"} for i in range(n)]


def difficulties(n=60, seed=0):
    return np.random.default_rng(seed + 1000).normal(size=n)


def difficulty_file(tmp_path, n=60, seed=0):
    path = tmp_path / "instruction_difficulty.csv"
    path.write_text("index,instruction_difficulty\n" + "".join(f"{i},{float(d)!r}\n"
                                                               for i, d in enumerate(difficulties(n, seed))))
    return path


def test_lc_with_a_difficulty_file_uses_the_difficulty_term(tmp_path):
    lc = alpaca.length_controlled(synthetic_rows(),
                                  alpaca.load_instruction_difficulty(difficulty_file(tmp_path)))
    assert lc["lc_glm"] == "length_controlled_noreg" and lc["lc_standard_error"] > 0
    assert set(lc["lc_weights"]) == {"np.tanh(std_delta_len)", "instruction_difficulty",
                                     "not_gamed_baseline.astype(float)"}
    assert lc["lc_weights"]["instruction_difficulty"] < 0   # harder instructions, fewer wins


# ------------------------------------------------------------- the metrics are alpaca_eval's
def test_win_rates_come_from_alpaca_evals_get_winrate(monkeypatch):
    """A sentinel in place of alpaca_eval.metrics.get_winrate is what winrate_metrics (and so
    leaderboard_row and the alpaca_eval fitness) returns, and it gets the preference frame."""
    seen = []

    def sentinel(annotations):
        seen.append(annotations)
        return {"win_rate": -123.0, "n_total": np.int64(7)}

    monkeypatch.setattr(alpaca_eval.metrics, "get_winrate", sentinel)
    assert alpaca.winrate_metrics([1.0, None, 2.0]) == {"win_rate": -123.0, "n_total": 7}
    assert len(seen) == 1 and isinstance(seen[0], pd.DataFrame)
    assert seen[0]["preference"].tolist()[0::2] == [1.0, 2.0] and np.isnan(seen[0]["preference"][1])


def test_lc_is_fitted_by_alpaca_evals_glm_code(monkeypatch):
    calls = []
    real = glm_winrate.fit_LogisticRegressionCV

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(glm_winrate, "fit_LogisticRegressionCV", spy)
    alpaca.length_controlled(synthetic_rows())
    assert calls == [{"is_ytrue_proba": True, "n_splits": 5}]


def serve_df_gamed(monkeypatch, tmp_path, difficulty):
    """Stand in for the one download in alpaca_eval's get_length_controlled_winrate: a df_gamed.csv
    with the given difficulties and no gamed rows (no GLM used here regularises towards them)."""
    path = tmp_path / "df_gamed.csv"
    pd.DataFrame({"model": "none", "index": range(len(difficulty)),
                  "instruction_difficulty": difficulty}).to_csv(path, index=False)
    monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **kwargs: str(path))


@needs_data
@pytest.mark.filterwarnings("ignore::FutureWarning")  # sklearn on the package's penalty="l1"
def test_lc_equals_alpaca_evals_own_function_with_its_download_served_locally(monkeypatch, tmp_path):
    """Our only departure from get_length_controlled_winrate is skipping its download, so with that
    download served from a local file the package's own function gives the same LC (minimal GLM)."""
    annotations, _ = load("anonymous-zephyr-7b-g-dpo")
    serve_df_gamed(monkeypatch, tmp_path, np.zeros(len(annotations)))
    theirs = glm_winrate.get_length_controlled_winrate(annotations, glm_name="length_controlled_minimal",
                                                       save_weights_dir=None)
    ours = alpaca.length_controlled(annotations)
    assert ours["length_controlled_winrate"] == pytest.approx(theirs["length_controlled_winrate"], abs=1e-9)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_lc_with_difficulty_equals_alpaca_evals_own_function(monkeypatch, tmp_path):
    rows = synthetic_rows()
    difficulty = alpaca.load_instruction_difficulty(difficulty_file(tmp_path))
    serve_df_gamed(monkeypatch, tmp_path, difficulty.to_numpy())
    theirs = glm_winrate.get_length_controlled_winrate(rows, glm_name="length_controlled_noreg",
                                                       save_weights_dir=None)
    ours = alpaca.length_controlled(rows, difficulty)
    assert ours["length_controlled_winrate"] == pytest.approx(theirs["length_controlled_winrate"], abs=1e-9)
    assert ours["lc_standard_error"] == pytest.approx(theirs["lc_standard_error"], abs=1e-9)


def test_lc_makes_no_network_access(monkeypatch, tmp_path):
    """With every name lookup and socket connection refused, LC still computes, with and without a
    difficulty file (alpaca_eval's get_length_controlled_winrate would try the HF hub here)."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    rows = synthetic_rows()
    runs = [alpaca.leaderboard_row(rows),
            alpaca.leaderboard_row(rows, alpaca.load_instruction_difficulty(difficulty_file(tmp_path)))]
    if SHARED.is_dir():
        runs.append(alpaca.leaderboard_row(load(RUNS[0])[0]))
    assert all(0 < r["length_controlled_winrate"] < 100 for r in runs)


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


def test_judge_prompt_is_the_file_alpaca_evals_weighted_annotator_config_names():
    path = alpaca.find_prompt()
    assert path.parts[-2:] == ("alpaca_eval_clf_gpt4_turbo", "alpaca_eval_clf.txt")
    messages = alpaca.chatml_to_messages(path.read_text())
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
