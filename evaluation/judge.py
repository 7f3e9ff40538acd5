"""The judge seam: one small interface to an LLM judge, its real client, a fake, and a cache.

Everything that asks a judge (MT-Bench ratings, AlpacaEval preferences) goes through
``Judge.complete(messages, ...) -> JudgeReply``. ``OpenAIJudge`` talks to any OpenAI-compatible
endpoint with the ``openai`` client (its own retries: exponential backoff with jitter on 408/409/
429/5xx, connection errors and timeouts, honouring ``Retry-After``). ``FakeJudge`` answers from a
Python function so tests and CI run the scoring code without a key or a network.

A call that does not produce a reply raises ``JudgeError`` with a ``kind`` (``timeout``, ``http``,
``connection``, ``empty``); callers turn it into a typed failure record, never a ``-1`` score.

API keys are read from an environment variable at call time and never written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

Messages = Sequence[dict]


@dataclass(frozen=True)
class JudgeReply:
    """What a judge answered."""

    text: str
    top_logprobs: list[dict[str, float]] | None = None  # per output token: {token: logprob}
    usage: dict = field(default_factory=dict)             # prompt/completion token counts if given


class JudgeError(Exception):
    """A judge call that produced no usable reply, with a machine-readable ``kind``."""

    def __init__(self, kind: str, reason: str):
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


class Judge(Protocol):
    """Anything that can complete a chat for a judge. ``name`` goes into cache keys and results."""

    name: str

    def complete(self, messages: Messages, *, max_tokens: int, temperature: float,
                 logprobs: bool = False, top_logprobs: int = 0) -> JudgeReply: ...


class OpenAIJudge:
    """A judge behind any OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 120.0, max_retries: int = 5):
        import openai  # imported here so `disco --help` stays fast

        self.name = model
        self.model = model
        self.base_url = base_url
        # Local servers (vLLM, llama.cpp) often need no key; the client insists on a non-empty one.
        api_key = os.environ.get(api_key_env) or "EMPTY"
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout,
                                     max_retries=max_retries)
        self._openai = openai

    def complete(self, messages: Messages, *, max_tokens: int, temperature: float,
                 logprobs: bool = False, top_logprobs: int = 0) -> JudgeReply:
        openai = self._openai
        kwargs = dict(model=self.model, messages=list(messages), max_tokens=max_tokens,
                      temperature=temperature, n=1)
        if logprobs:
            kwargs.update(logprobs=True, top_logprobs=top_logprobs)
        try:
            response = self._client.chat.completions.create(**kwargs)
        except openai.APITimeoutError as e:          # subclass of APIConnectionError: test first
            raise JudgeError("timeout", str(e)) from None
        except openai.APIConnectionError as e:
            raise JudgeError("connection", str(e)) from None
        except openai.APIStatusError as e:
            raise JudgeError("http", f"HTTP {e.status_code}: {e.message}") from None
        if not response.choices:
            raise JudgeError("empty", "the endpoint returned no choices")
        choice = response.choices[0]
        text = choice.message.content or ""
        tops = None
        content = getattr(choice.logprobs, "content", None) if choice.logprobs else None
        if content:
            tops = [{t.token: t.logprob for t in (tok.top_logprobs or [])} or {tok.token: tok.logprob}
                    for tok in content]
        usage = response.usage.model_dump() if response.usage else {}
        return JudgeReply(text=text, top_logprobs=tops, usage=usage)


class FakeJudge:
    """A deterministic judge for tests: ``respond(messages) -> JudgeReply | str``; records calls."""

    def __init__(self, respond: Callable[[Messages], JudgeReply | str], name: str = "fake-judge"):
        self.name = name
        self.respond = respond
        self.calls: list[list[dict]] = []

    def complete(self, messages: Messages, *, max_tokens: int, temperature: float,
                 logprobs: bool = False, top_logprobs: int = 0) -> JudgeReply:
        self.calls.append([dict(m) for m in messages])
        reply = self.respond(messages)
        return JudgeReply(text=reply) if isinstance(reply, str) else reply


def prompt_digest(messages: Messages) -> str:
    """A short hash of exactly what the judge is shown; part of every cache key."""
    blob = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class JudgmentCache:
    """Append-only JSONL of judge replies keyed by a tuple of strings.

    Only calls that returned a reply are stored (a timeout or HTTP failure is retried on the next
    run); an unparseable reply is stored with its text, because asking again at temperature 0
    would pay for the same answer. Thread-safe; a key is written at most once.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._rows: dict[tuple, dict] = {}
        self._lock = threading.Lock()
        if self.path and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    self._rows[tuple(row["key"])] = row

    def get(self, key: tuple) -> dict | None:
        return self._rows.get(tuple(str(k) for k in key))

    def put(self, key: tuple, value: dict) -> dict:
        key = tuple(str(k) for k in key)
        row = {"key": list(key), **value}
        with self._lock:
            if key in self._rows:
                return self._rows[key]
            self._rows[key] = row
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        return row

    def __len__(self) -> int:
        return len(self._rows)
