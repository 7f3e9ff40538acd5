"""The openai proposer through the real ``openai`` client against a fake endpoint on loopback."""

import json

import pytest

from discovery.archive import Archive
from discovery.config import PromptLimits
from discovery.llm import LLMProposer, render_prompt, resolve_key
from discovery.openai_client import is_local
from discovery.proposal import Context, Entry, ProposerError
from fake_openai import FakeOpenAI, error, reply, slow

GOOD = {"thought": "a steeper logistic loss", "name": "steep_dpo",
        "code": "def steep(rho, beta):\n    return -F.logsigmoid(2 * beta * rho)\n"}
CONTEXT = Context(task="synthetic", beta=0.1, metric="win_rate", n_proposed=0,
                  baselines=(Entry(1, "dpo", "baseline", "done", "the logistic loss",
                                   "def dpo(pc, pr, rc, rr, beta): ...", 0.61, 0.01),))


def proposer(server, sleeps=None, **kw):
    settings = dict(model="fake-model", base_url=server.url, api_key_env="DISCO_TEST_KEY",
                    timeout=5.0, max_retries=3, retry_base_delay=0.01, retry_max_delay=0.05)
    settings.update(kw)
    return LLMProposer(**settings, sleep=(sleeps.append if sleeps is not None else lambda s: None))


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("DISCO_TEST_KEY", "sk-test-abc")


def test_valid_reply_becomes_a_proposal_with_token_usage():
    with FakeOpenAI([reply(json.dumps(GOOD), prompt_tokens=321, completion_tokens=45)]) as server:
        p = proposer(server).propose(CONTEXT)
    assert p.error is None
    assert (p.name, p.thought, p.code) == ("steep_dpo", GOOD["thought"], GOOD["code"])
    assert (p.prompt_tokens, p.completion_tokens) == (321, 45)
    request = server.requests[0]
    assert request["headers"]["authorization"] == "Bearer sk-test-abc"
    assert request["body"]["model"] == "fake-model"
    system, user = request["body"]["messages"]
    assert '"thought"' in system["content"] and "rho" in system["content"]
    assert "def dpo(rho, beta)" in user["content"] and "0.6100" in user["content"]  # readable form


def test_fenced_json_reply():
    with FakeOpenAI([reply("Here you go:\n```json\n" + json.dumps(GOOD) + "\n```\nThanks")]) as server:
        p = proposer(server).propose(CONTEXT)
    assert p.error is None and p.code == GOOD["code"]


def test_rate_limit_then_success_is_retried_with_backoff():
    sleeps = []
    script = [error(429, "slow down", {"retry-after": "0.02"}), reply(json.dumps(GOOD))]
    with FakeOpenAI(script) as server:
        p = proposer(server, sleeps).propose(CONTEXT)
    assert p.error is None and len(server.requests) == 2
    assert sleeps == [0.02]  # the server's Retry-After, within the cap


def test_server_errors_back_off_exponentially_up_to_the_cap():
    sleeps = []
    script = [error(500), error(502), error(503), reply(json.dumps(GOOD))]
    with FakeOpenAI(script) as server:
        p = proposer(server, sleeps).propose(CONTEXT)
    assert p.error is None and len(server.requests) == 4
    assert sleeps == [0.01, 0.02, 0.04]


def test_timeout_then_success():
    with FakeOpenAI([slow(reply(json.dumps(GOOD)), 1.5), reply(json.dumps(GOOD))]) as server:
        p = proposer(server, timeout=0.3).propose(CONTEXT)
    assert p.error is None and len(server.requests) == 2


def test_retries_are_bounded():
    with FakeOpenAI([error(429)]) as server:
        with pytest.raises(ProposerError, match="failed 3 times"):
            proposer(server, max_retries=2).propose(CONTEXT)
    assert len(server.requests) == 3


def test_malformed_json_is_an_error_to_feed_back():
    text = '{"thought": "x", "name": "y", "code": "def f(rho, beta): return rho",,}'
    with FakeOpenAI([reply(text)]) as server:
        p = proposer(server).propose(CONTEXT)
    assert p.error and "could not be parsed" in p.error and "JSON" in p.error
    assert p.reply == text and p.prompt_tokens == 120


def test_empty_choice_list_is_an_error_not_a_crash():
    with FakeOpenAI([reply("", choices=False)]) as server:
        p = proposer(server).propose(CONTEXT)
    assert p.error and "no choices" in p.error and p.code == ""


def test_client_errors_stop_without_leaking_the_key(monkeypatch):
    monkeypatch.setenv("DISCO_TEST_KEY", "sk-distinctive-401")
    with FakeOpenAI([error(401, "Incorrect API key provided: sk-distinctive-401")]) as server:
        with pytest.raises(ProposerError, match="HTTP 401") as info:
            proposer(server).propose(CONTEXT)
    assert "sk-distinctive-401" not in str(info.value) and len(server.requests) == 1
    assert "sk-distinctive-401" not in repr(proposer(server))


def test_keyless_local_server_gets_a_placeholder(monkeypatch):
    monkeypatch.delenv("DISCO_TEST_KEY")
    with FakeOpenAI([reply(json.dumps(GOOD))]) as server:
        assert proposer(server).propose(CONTEXT).error is None
    assert server.requests[0]["headers"]["authorization"].startswith("Bearer sk-local")
    with pytest.raises(ProposerError, match="DISCO_TEST_KEY"):
        resolve_key("DISCO_TEST_KEY", "https://api.example.com/v1")


def test_local_hosts():
    assert all(is_local(u) for u in ("http://localhost:11434/v1", "http://127.0.0.1:8000/v1",
                                     "http://[::1]:8080/v1", "http://192.168.1.5:8000/v1",
                                     "http://gpu-box.local:8000/v1"))
    assert not any(is_local(u) for u in (None, "https://api.openai.com/v1", "https://8.8.8.8/v1"))


def test_prompt_stays_bounded_as_the_archive_grows(tmp_path):
    long_code = "def f(rho, beta):\n" + "    x = rho * 1.0\n" * 400 + "    return x\n"
    sizes = {}
    for n in (10, 500):
        archive = Archive.create(tmp_path / str(n), {})
        for name in ("dpo", "ipo", "lrml"):
            cid = archive.add(kind="baseline", name=name, code="def b(rho, beta): return rho")
            archive.update(cid, status="done", fitness=0.5)
        for i in range(n):
            cid = archive.add(kind="candidate", name=f"c{i}", code=long_code, thought="why " * 300)
            if i % 3:
                archive.update(cid, status="done", fitness=i / n)
            else:
                archive.update(cid, status="invalid", reason="ValueError: " + "bad " * 500)
        limits = PromptLimits()
        context = archive.context(task="synthetic", beta=0.1, metric="win_rate", n_best=limits.n_best,
                                  n_recent=limits.n_recent, n_failures=limits.n_failures)
        sizes[n] = len(render_prompt(context, limits))
        archive.close()
    assert sizes[500] <= limits.max_prompt_chars  # the whole history is in it, grouped, and the bound holds


def test_baselines_are_shown_as_objectives_baselines_writes_them():
    import torch

    import objectives
    from discovery.llm import baseline_code
    rho = torch.linspace(-50.0, 50.0, 101, dtype=torch.float64)
    for name in ("dpo", "ipo", "hinge", "lrml", "robust", "exo_pair"):
        shown = baseline_code(Entry(1, name, "baseline", "done", code="(archive copy)"))
        assert shown.startswith(f"def {name}(rho, beta):") and "@" not in shown, shown
        mine, theirs = objectives.load(shown), objectives.get(name)
        assert torch.allclose(mine.of_rho(rho, 0.1), theirs.of_rho(rho, 0.1), atol=1e-9), name
    assert baseline_code(Entry(1, "kto_pair", "baseline", "done")).startswith("def kto_pair(pc, pr, rc, rr, beta)")


def test_retry_delay_honours_the_server_within_the_cap():
    from discovery.openai_client import Endpoint, retry_delay
    ep = Endpoint(None, "m", retry_base_delay=1.0, retry_max_delay=10.0)
    assert [retry_delay(ep, a) for a in range(5)] == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert retry_delay(ep, 0, {"retry-after": "3"}) == 3.0
    assert retry_delay(ep, 0, {"retry-after-ms": "250", "retry-after": "3"}) == 0.25
    assert retry_delay(ep, 0, {"retry-after": "3600"}) == 10.0
    assert retry_delay(ep, 2, {"retry-after": "soon"}) == 4.0
    assert 0.0 <= retry_delay(ep, 0, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) <= 10.0


def test_the_judge_shares_the_key_policy(monkeypatch):
    from evaluation.judge import JudgeError, OpenAIJudge
    monkeypatch.delenv("DISCO_TEST_KEY")
    with pytest.raises(JudgeError, match="DISCO_TEST_KEY") as info:
        OpenAIJudge("https://api.example.com/v1", "judge", api_key_env="DISCO_TEST_KEY")
    assert info.value.kind == "key"
    with pytest.raises(ProposerError, match="DISCO_TEST_KEY"):
        LLMProposer(model="m", base_url="https://api.example.com/v1", api_key_env="DISCO_TEST_KEY")
    OpenAIJudge("http://localhost:8000/v1", "judge", api_key_env="DISCO_TEST_KEY")  # local: no key needed
