"""The judge seam: one small interface to an LLM judge, its real client, a fake, and a cache.

Everything that asks a judge (MT-Bench ratings, AlpacaEval preferences) goes through
``Judge.complete(messages, ...) -> JudgeReply``. ``OpenAIJudge`` talks to any OpenAI-compatible
endpoint through :class:`discovery.openai_client.ChatClient`, the client the language-model
proposer uses too, so both follow one policy: the key comes from the environment variable named by
``api_key_env`` (a local endpoint may go without; elsewhere a missing key is a ``JudgeError`` of
kind ``key`` when the judge is built), 408/409/429/5xx, timeouts and dropped connections are retried
with capped exponential backoff that honours ``Retry-After``, and each request has a timeout.
``FakeJudge`` answers from a Python function so tests and CI run the scoring code without a key or
a network.

A call that does not produce a reply raises ``JudgeError`` with a ``kind`` (``timeout``, ``http``,
``connection``, ``empty``, ``malformed``); callers turn it into a typed failure record, never a
``-1`` score.

API keys are read from an environment variable and never written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

from discovery.openai_client import ChatClient, Endpoint, EndpointError

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

    def __init__(self, base_url: str | None, model: str, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 120.0, max_retries: int = 5, retry_base_delay: float = 2.0,
                 retry_max_delay: float = 60.0, sleep: Callable[[float], None] = time.sleep):
        self.name = model
        self.model = model
        self.base_url = base_url
        endpoint = Endpoint(base_url=base_url, model=model, api_key_env=api_key_env,
                            request_timeout=timeout, max_retries=max_retries,
                            retry_base_delay=retry_base_delay, retry_max_delay=retry_max_delay)
        try:
            self._client = ChatClient(endpoint, label="judge", sleep=sleep)
        except EndpointError as e:  # no key for a remote endpoint
            raise JudgeError(e.kind, str(e)) from None

    @classmethod
    def from_endpoint(cls, endpoint: Endpoint, **kwargs) -> "OpenAIJudge":
        """The judge of an :class:`~discovery.openai_client.Endpoint` (``JudgeConfig.endpoint()``)."""
        return cls(endpoint.base_url, endpoint.model, endpoint.api_key_env,
                   timeout=endpoint.request_timeout, max_retries=endpoint.max_retries,
                   retry_base_delay=endpoint.retry_base_delay,
                   retry_max_delay=endpoint.retry_max_delay, **kwargs)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIJudge(model={self.model!r}, base_url={self._client.base_url!r})"

    def complete(self, messages: Messages, *, max_tokens: int, temperature: float,
                 logprobs: bool = False, top_logprobs: int = 0) -> JudgeReply:
        kwargs = dict(max_tokens=max_tokens, temperature=temperature, n=1)
        if logprobs:
            kwargs.update(logprobs=True, top_logprobs=top_logprobs)
        try:
            response = self._client.completion(messages, **kwargs)
        except EndpointError as e:  # timeout, connection, http (after the retries) or malformed
            raise JudgeError(e.kind, str(e)) from None
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
