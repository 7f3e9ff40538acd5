"""MT-Bench: FastChat data loading, prompt filling, rating parsing, judging with failures and a
cache through a loopback fake endpoint, and two-turn generation with a tiny local model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation import mt_bench
from evaluation.judge import JudgmentCache, OpenAIJudge
from tests.evaluation.fake_openai_server import FakeOpenAIServer, Reply, chat_body

FASTCHAT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fastchat"
needs_data = pytest.mark.skipif(not FASTCHAT.is_dir(), reason=f"FastChat data not at {FASTCHAT}")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture(scope="module")
def data():
    if not FASTCHAT.is_dir():
        pytest.skip(f"FastChat data not at {FASTCHAT}")
    return mt_bench.load_fastchat(FASTCHAT)


def first(data, category):
    return next(q for q in data.questions if q["category"] == category)


def answer_row(question, model_id="tiny", turns=("first answer", "second answer")):
    return {"question_id": question["question_id"], "answer_id": "a", "model_id": model_id,
            "choices": [{"index": 0, "turns": list(turns)}], "tstamp": 0.0}


# ------------------------------------------------------------------------- data and prompts
@needs_data
def test_fastchat_folder_loads_questions_prompts_and_gpt4_references(data):
    assert len(data.questions) == 80
    assert {q["category"] for q in data.questions} == set(mt_bench.CATEGORY_TEMPERATURE)
    assert {"single-v1", "single-math-v1", "single-v1-multi-turn",
            "single-math-v1-multi-turn"} <= set(data.prompts)
    assert data.reference_model == "gpt-4"
    need_ref = [q for q in data.questions if q["category"] in mt_bench.NEED_REF_CATEGORIES]
    assert need_ref and all(len(data.references[q["question_id"]]) == 2 for q in need_ref)


def test_prompt_is_chosen_by_category_and_turn():
    assert mt_bench.prompt_name("writing", 1) == "single-v1"
    assert mt_bench.prompt_name("stem", 2) == "single-v1-multi-turn"
    assert mt_bench.prompt_name("math", 1) == "single-math-v1"
    assert mt_bench.prompt_name("coding", 2) == "single-math-v1-multi-turn"
    assert mt_bench.prompt_name("reasoning", 1) == "single-math-v1"


@needs_data
def test_single_turn_math_prompt_is_the_users_template_filled_with_the_reference(data):
    q = first(data, "math")
    ref = data.references[q["question_id"]]
    spec = data.prompts["single-math-v1"]
    messages = mt_bench.judge_messages(spec, q, ["ANSWER-ONE", "ANSWER-TWO"], ref, turn=1)
    assert messages[0] == {"role": "system", "content": spec["system_prompt"]}
    assert messages[1]["role"] == "user"
    assert messages[1]["content"] == spec["prompt_template"].format(
        question=q["turns"][0], ref_answer_1=ref[0], answer="ANSWER-ONE")
    assert "ANSWER-TWO" not in messages[1]["content"]


@needs_data
def test_second_turn_prompt_shows_both_turns_and_both_references(data):
    q = first(data, "reasoning")
    ref = data.references[q["question_id"]]
    messages = mt_bench.judge_messages(data.prompts["single-math-v1-multi-turn"], q,
                                       ["ANSWER-ONE", "ANSWER-TWO"], ref, turn=2)
    text = messages[-1]["content"]
    for piece in (*q["turns"], "ANSWER-ONE", "ANSWER-TWO", *ref):
        assert piece in text
    general = mt_bench.judge_messages(data.prompts["single-v1-multi-turn"], first(data, "writing"),
                                      ["A1", "A2"], None, turn=2)
    assert "A1" in general[-1]["content"] and "A2" in general[-1]["content"]


@pytest.mark.parametrize("text, score", [
    ("The answer is fine. Rating: [[7]]", 7.0),
    ("Rating: [[8.5]]", 8.5),
    ("Rating: [6]", 6.0),                      # FastChat's backup pattern
    ("[[9]] although I said [3] earlier", 9.0),  # [[x]] wins over [x]
    ("I refuse to rate this.", None),
    ("Verdict: [[A]]", None),
])
def test_rating_parse_follows_fastchat_patterns(text, score):
    assert mt_bench.parse_rating(text) == score


# ------------------------------------------------------------------------ judging end to end
def rating_by_prompt(body, n):
    """Turn 1 -> [[8]]; general turn 2 -> [5]; math turn 2 -> no rating at all."""
    text = body["messages"][-1]["content"]
    if "### Reference answer:" in text:
        return Reply(body=chat_body("I cannot decide."))
    if "### User:" in text:
        return Reply(body=chat_body("Meh. Rating: [5]"))
    return Reply(body=chat_body("Good. Rating: [[8]]"))


@needs_data
def test_judging_reports_scores_per_turn_and_category_and_counts_unparseable(data, tmp_path):
    answers = [answer_row(first(data, "writing")), answer_row(first(data, "math"))]
    with FakeOpenAIServer(rating_by_prompt) as srv:
        judge = OpenAIJudge(srv.url, "judge-x", max_retries=0)
        judgments = mt_bench.judge_answers(judge, data, answers, JudgmentCache(tmp_path / "c.jsonl"))
    s = mt_bench.summarise(judgments)
    assert len(srv.requests) == 4
    assert all(r["temperature"] == 0.0 and r["max_tokens"] == 2048 for r in srv.requests)
    assert s["score"] == pytest.approx((8 + 5 + 8) / 3)          # the unparseable turn is left out
    assert s["per_turn"] == {"1": 8.0, "2": 5.0}
    assert s["per_category"] == {"math": 8.0, "writing": pytest.approx(6.5)}
    assert s["n_judged"] == 3 and s["n_failed"] == 1 and s["failures"] == {"unparseable": 1}
    failed = next(j for j in judgments if j.failure)
    assert (failed.category, failed.turn, failed.score, failed.prompt) == (
        "math", 2, None, "single-math-v1-multi-turn")


@needs_data
def test_rerun_with_cache_makes_no_requests_and_writes_no_rows(data, tmp_path):
    cache_path = tmp_path / "cache.jsonl"
    answers = [answer_row(first(data, "writing")), answer_row(first(data, "coding"))]
    with FakeOpenAIServer(rating_by_prompt) as srv:
        judge = OpenAIJudge(srv.url, "judge-x", max_retries=0)
        before = mt_bench.summarise(mt_bench.judge_answers(judge, data, answers, JudgmentCache(cache_path)))
        rows_before = cache_path.read_text()
        after = mt_bench.summarise(mt_bench.judge_answers(judge, data, answers, JudgmentCache(cache_path)))
    assert len(srv.requests) == 4                       # all from the first run
    assert cache_path.read_text() == rows_before and len(rows_before.splitlines()) == 4
    assert after["n_cached"] == 4 and before["n_cached"] == 0
    assert {k: after[k] for k in ("score", "per_turn", "failures")} == \
           {k: before[k] for k in ("score", "per_turn", "failures")}


@needs_data
def test_timeout_is_a_typed_failure_not_cached_and_retried_on_the_next_run(data, tmp_path):
    cache_path = tmp_path / "cache.jsonl"
    answers = [answer_row(first(data, "writing"))]

    def slow_second_turn(body, n):
        if "### User:" in body["messages"][-1]["content"]:
            return Reply(body=chat_body("[[9]]"), delay=5.0)
        return Reply(body=chat_body("[[7]]"))

    with FakeOpenAIServer(slow_second_turn) as srv:
        judge = OpenAIJudge(srv.url, "judge-x", timeout=0.3, max_retries=0)
        s = mt_bench.summarise(mt_bench.judge_answers(judge, data, answers, JudgmentCache(cache_path)))
    assert s["score"] == 7.0 and s["failures"] == {"timeout": 1}
    assert len(cache_path.read_text().splitlines()) == 1

    with FakeOpenAIServer(lambda body, n: Reply(body=chat_body("[[9]]"))) as srv:
        judge = OpenAIJudge(srv.url, "judge-x", max_retries=0)
        s = mt_bench.summarise(mt_bench.judge_answers(judge, data, answers, JudgmentCache(cache_path)))
    assert len(srv.requests) == 1                       # only the turn that failed
    assert s["per_turn"] == {"1": 7.0, "2": 9.0} and s["n_failed"] == 0


@needs_data
def test_cli_prints_json_summary(data, tmp_path, capsys):
    from discovery.cli import main

    answers = tmp_path / "answers.jsonl"
    mt_bench.write_jsonl(answers, [answer_row(first(data, "roleplay"))])
    with FakeOpenAIServer(lambda body, n: Reply(body=chat_body("[[6]]"))) as srv:
        rc = main(["eval", "mt-bench", "--answers", str(answers), "--fastchat-data", str(FASTCHAT),
                   "--judge-base-url", srv.url, "--judge-model", "judge-x",
                   "--judge-api-key-env", "NO_SUCH_KEY_VAR", "--cache", str(tmp_path / "c.jsonl"),
                   "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["score"] == 6.0 and out["per_category"] == {"roleplay": 6.0}
    assert out["n_judged"] == 2 and out["failures"] == {}


# ---------------------------------------------------------------------------- generation
def tiny_chat_model():
    """A 1-layer Llama on a byte-level tokenizer with a ChatML chat template, built locally."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                        pad_token="<pad>", additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=4096, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval(), tokenizer


@needs_data
def test_generation_answers_two_turns_with_category_temperature(data, tmp_path):
    model, tokenizer = tiny_chat_model()
    questions = [first(data, "writing"), first(data, "math")]
    calls = []
    generate = model.generate

    def recording_generate(**kwargs):
        calls.append({k: kwargs.get(k) for k in ("do_sample", "temperature")}
                     | {"prompt": tokenizer.decode(kwargs["input_ids"][0])})
        return generate(**kwargs)

    model.generate = recording_generate
    rows = mt_bench.generate_answers(model, tokenizer, questions, "tiny", max_new_tokens=3)
    assert [c["do_sample"] for c in calls] == [True, True, False, False]
    assert [c["temperature"] for c in calls] == [0.7, 0.7, None, None]
    first_answer = rows[0]["choices"][0]["turns"][0]
    assert calls[1]["prompt"].endswith(f"{first_answer}<|im_end|>\n<|im_start|>user\n"
                                       f"{questions[0]['turns'][1]}<|im_end|>\n<|im_start|>assistant\n")
    for row, q in zip(rows, questions):
        assert set(row) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
        assert row["question_id"] == q["question_id"] and row["model_id"] == "tiny"
        assert row["choices"][0]["index"] == 0 and len(row["choices"][0]["turns"]) == 2
        assert all(isinstance(t, str) for t in row["choices"][0]["turns"])

    model.generate = generate                    # greedy (math) is reproducible
    again = mt_bench.generate_answers(model, tokenizer, questions[1:], "tiny", max_new_tokens=3)
    assert again[0]["choices"] == rows[1]["choices"]

    path = tmp_path / "answers.jsonl"
    mt_bench.write_jsonl(path, rows)
    assert [r["question_id"] for r in mt_bench.load_answers(path)] == sorted(q["question_id"] for q in questions)


@needs_data
def test_generate_cli_loads_a_saved_model_and_writes_fastchat_answers(data, tmp_path):
    from discovery.cli import main

    model, tokenizer = tiny_chat_model()
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    out = tmp_path / "answers.jsonl"
    ids = f"{first(data, 'extraction')['question_id']},{first(data, 'stem')['question_id']}"
    rc = main(["eval", "generate-mt-bench", "--model", str(tmp_path / "tiny"), "--fastchat-data",
               str(FASTCHAT), "--out", str(out), "--question-ids", ids, "--max-new-tokens", "2",
               "--device", "cpu"])
    rows = mt_bench.read_jsonl(out)
    assert rc == 0 and len(rows) == 2 and {r["model_id"] for r in rows} == {"tiny"}
