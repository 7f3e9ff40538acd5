"""The judge seam through the real openai client against a loopback fake server."""

from __future__ import annotations

import json

import pytest

from evaluation.judge import FakeJudge, JudgeError, JudgeReply, JudgmentCache, OpenAIJudge, prompt_digest
from tests.evaluation.fake_openai_server import FakeOpenAIServer, Reply, chat_body

MESSAGES = [{"role": "system", "content": "be fair"}, {"role": "user", "content": "rate this"}]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")


def ask(judge, **kw):
    return judge.complete(MESSAGES, max_tokens=kw.pop("max_tokens", 16), temperature=0.0, **kw)


def test_reply_carries_text_usage_and_top_logprobs_of_each_token():
    with FakeOpenAIServer(lambda body, n: Reply(body=chat_body("M", {"M": -0.1, "m": -2.4}))) as srv:
        reply = ask(OpenAIJudge(srv.url, "judge-x", max_retries=0), logprobs=True, top_logprobs=5)
    assert reply.text == "M"
    assert reply.top_logprobs == [{"M": -0.1, "m": -2.4}]
    assert reply.usage["total_tokens"] == 11
    sent = srv.requests[0]
    assert sent["model"] == "judge-x" and sent["messages"] == MESSAGES
    assert sent["logprobs"] is True and sent["top_logprobs"] == 5 and sent["max_tokens"] == 16


def test_no_logprobs_requested_means_none_returned_and_none_sent():
    with FakeOpenAIServer(lambda body, n: Reply(body=chat_body("Rating: [[7]]"))) as srv:
        reply = ask(OpenAIJudge(srv.url, "j", max_retries=0))
    assert reply.top_logprobs is None and reply.text == "Rating: [[7]]"
    assert "logprobs" not in srv.requests[0]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_rate_limit_or_server_error_is_retried_then_succeeds(status):
    def responder(body, n):
        if n == 1:
            return Reply(status=status, headers={"retry-after-ms": "10"})
        return Reply(body=chat_body("ok"))

    with FakeOpenAIServer(responder) as srv:
        reply = ask(OpenAIJudge(srv.url, "j", max_retries=3))
    assert reply.text == "ok"
    assert len(srv.requests) == 2


def test_timeout_after_retries_is_a_typed_failure():
    with FakeOpenAIServer(lambda body, n: Reply(body=chat_body("late"), delay=5.0)) as srv:
        with pytest.raises(JudgeError) as err:
            ask(OpenAIJudge(srv.url, "j", timeout=0.3, max_retries=1))
    assert err.value.kind == "timeout"
    assert len(srv.requests) == 2          # the first try and one retry


def test_persistent_server_error_is_http_failure_after_retries():
    with FakeOpenAIServer(lambda body, n: Reply(status=500, headers={"retry-after-ms": "1"})) as srv:
        with pytest.raises(JudgeError) as err:
            ask(OpenAIJudge(srv.url, "j", max_retries=2))
    assert err.value.kind == "http" and "500" in err.value.reason
    assert len(srv.requests) == 3


def test_client_error_is_not_retried():
    with FakeOpenAIServer(lambda body, n: Reply(status=400)) as srv:
        with pytest.raises(JudgeError) as err:
            ask(OpenAIJudge(srv.url, "j", max_retries=3))
    assert err.value.kind == "http" and len(srv.requests) == 1


def test_api_key_is_read_from_the_named_variable_and_sent_as_bearer(monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test-secret")
    with FakeOpenAIServer(lambda body, n: Reply(body=chat_body("ok"))) as srv:
        ask(OpenAIJudge(srv.url, "j", api_key_env="MY_JUDGE_KEY", max_retries=0))
    assert srv.headers[0]["authorization"] == "Bearer sk-test-secret"


def test_server_stops_itself_after_its_lifetime():
    import time
    srv = FakeOpenAIServer(lambda body, n: Reply(body=chat_body("ok")), lifetime=0.2).__enter__()
    time.sleep(0.6)
    with pytest.raises(JudgeError) as err:
        ask(OpenAIJudge(srv.url, "j", timeout=1.0, max_retries=0))
    assert err.value.kind in ("connection", "timeout")


def test_fake_judge_records_calls_and_wraps_strings():
    judge = FakeJudge(lambda messages: "[[9]]")
    assert ask(judge) == JudgeReply(text="[[9]]")
    assert judge.calls == [MESSAGES]


def test_cache_writes_a_key_once_and_reloads(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = JudgmentCache(path)
    key = (81, 1, "model", "judge", "single-v1", prompt_digest(MESSAGES))
    cache.put(key, {"judgment": "[[5]]"})
    cache.put(key, {"judgment": "[[6]]"})                    # ignored: the key is taken
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["judgment"] == "[[5]]"
    again = JudgmentCache(path)
    assert again.get(key)["judgment"] == "[[5]]" and len(again) == 1


def test_prompt_digest_changes_with_content():
    other = [dict(MESSAGES[0]), {"role": "user", "content": "rate that"}]
    assert prompt_digest(MESSAGES) == prompt_digest([dict(m) for m in MESSAGES])
    assert prompt_digest(MESSAGES) != prompt_digest(other)
