"""Replies are untrusted text: malformed or huge ones become invalid rows, never a crash."""

import json

import pytest

from campaign_fakes import fake_config
from discovery.archive import Archive
from discovery.campaign import resume_campaign, run_campaign
from discovery.parsing import parse_reply
from discovery.text import MAX_CODE_CHARS, MAX_REPLY_CHARS, cap, clean, shown
from fake_openai import FakeOpenAI, raw, reply

GOOD = {"thought": "steeper", "name": "steeper",
        "code": "def steeper(rho, beta):\n    return -F.logsigmoid(2 * beta * rho)\n"}


def body(content: str) -> bytes:
    return json.dumps(reply(content)["body"]).encode()


def lines(n: int) -> str:
    return "def big(rho, beta):\n" + "    x = rho * 1.0\n" * n + "    return x\n"


def test_malformed_and_oversized_replies_become_invalid_rows(tmp_path):
    surrogate = {"thought": "lone \ud800 surrogate", "name": "surrogate",
                 "code": "def s(rho, beta):\n    return -F.logsigmoid(beta * rho) \ud800\n"}
    bad_utf8 = body(json.dumps({"thought": "bytes", "name": "bytes",
                                "code": "def b(rho, beta):\n    return rho @@\n"})).replace(b"@@", b"\xff\xfe\xc3(")
    bad_escape = body("@@" + json.dumps(GOOD)).replace(b"@@", b"\\x41")  # \x is no JSON escape
    assert b"\\x41" in bad_escape
    script = [reply(json.dumps(surrogate)),  # json.dumps writes the surrogate as the escape \ud800
              raw(bad_utf8), raw(bad_escape),
              reply(json.dumps({"thought": "huge", "name": "huge", "code": lines(60_000)})),  # ~1 MiB
              reply(json.dumps({"thought": "long", "name": "long", "code": lines(5_000)})),  # ~90 KiB
              reply(json.dumps(GOOD))]
    with FakeOpenAI(script) as server:
        cfg = fake_config(candidates=3, seeds=(0,), proposer="openai", base_url=server.url,
                          model="fake", api_key_env="DISCO_UNSET_KEY")
        run_campaign(tmp_path / "c", cfg, progress=False)
        resume_campaign(tmp_path / "c", progress=False, candidates=6)  # resume reads replies too
    assert len(server.requests) == 6
    with Archive.open(tmp_path / "c") as a:
        rows = a.rows(kind="candidate")
    assert [r["status"] for r in rows] == ["invalid"] * 5 + ["done"]
    assert all(r["reason"] for r in rows[:5])
    assert "\ufffd" in rows[0]["code"] and "\ufffd" in rows[0]["thought"]  # replaced, not fatal
    assert "invalid character" in rows[0]["reason"]
    assert "\ufffd" in rows[1]["code"]
    assert "not valid JSON" in rows[2]["reason"]
    assert "over the limit" in rows[3]["reason"] and len(rows[3]["code"]) < 5_000
    assert f"over the limit of {MAX_CODE_CHARS}" in rows[4]["reason"] and len(rows[4]["code"]) < 5_000
    for r in rows:  # nothing huge in the candidate folders
        for f in (tmp_path / "c" / r["folder"]).glob("*.md"):
            assert f.stat().st_size < MAX_REPLY_CHARS + 1_000, f
    assert (tmp_path / "c" / rows[3]["folder"] / "reply.md").stat().st_size > MAX_REPLY_CHARS // 2


def test_text_helpers():
    assert clean("a\ud800b") == "a\ufffdb" and clean(None) == "" and clean(b"\xff") == "\ufffd"
    assert cap("x" * 10, 4).startswith("xxxx\n... (6 more")
    assert shown("a\x1b[2Jb\x1b]0;t\x07\x9b\u202e\nc\td\r\n") == \
        "a\\x1b[2Jb\\x1b]0;t\\x07\\x9b\\u202e\nc\td\n"
    assert shown("a\nb", multiline=False) == "a\\nb"


def test_deeply_nested_or_brace_filled_replies_are_refused_quickly():
    import time

    from discovery.parsing import ReplyError
    for text in ('{"a":[' * 40_000, '{"a": "' * 40_000, "{" * 200_000):
        start = time.perf_counter()
        with pytest.raises(ReplyError):
            parse_reply(text)
        assert time.perf_counter() - start < 2.0
