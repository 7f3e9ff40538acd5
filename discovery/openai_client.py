"""The one OpenAI-compatible chat client, shared by the proposer (:mod:`discovery.llm`) and the judge
(:mod:`evaluation.judge`), so both follow the same key, retry and timeout policy.

* **Where**: an :class:`Endpoint` names the server (``base_url``; ``None`` is OpenAI itself, anything
  else vLLM, Ollama, llama.cpp's server, ...), the model and the policy numbers below.
* **Key**: read from the environment variable whose *name* is ``api_key_env``, once, when the client
  is built (:func:`resolve_key`). A local endpoint (loopback, private network, ``*.local``:
  :func:`is_local`) may go without one and gets a placeholder, as those servers ignore it; anywhere
  else a missing key is an :class:`EndpointError` of kind ``"key"`` before any request. The key lives
  only inside the client object: it is never logged, stored or shown (error texts are redacted).
* **Retries**: 408, 409, 429, every 5xx, timeouts and dropped connections are retried up to
  ``max_retries`` times, waiting ``retry_base_delay * 2 ** attempt`` seconds, or what the server's
  ``Retry-After`` / ``Retry-After-Ms`` header asks, never more than ``retry_max_delay``. The
  ``openai`` client's own retries are off, so the schedule is this one and testable (``sleep`` is
  injectable). Other HTTP errors are not retried.
* **Timeout**: ``request_timeout`` seconds per request (each retry gets its own).

Every failure is an :class:`EndpointError` with a ``kind`` (``key``, ``timeout``, ``connection``,
``http``, ``malformed``); each caller wraps it in its own error type (``ProposerError``,
``JudgeError``).
"""

from __future__ import annotations

import dataclasses
import email.utils
import ipaddress
import logging
import os
import time
from typing import Callable, Sequence
from urllib.parse import urlparse

from discovery.text import clean

log = logging.getLogger(__name__)

PLACEHOLDER_KEY = "sk-local-no-key"  # sent to a keyless local server: the client insists on a key
RETRIED_STATUSES = frozenset({408, 409, 429})  # and every status >= 500


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible chat endpoint and the policy for talking to it (never the key itself)."""

    base_url: str | None              # None: the OpenAI API
    model: str                        # the model name as the endpoint knows it
    api_key_env: str = "OPENAI_API_KEY"  # NAME of the variable holding the key
    request_timeout: float = 120.0    # seconds per HTTP request
    max_retries: int = 5              # retries on 408/409/429/5xx, timeouts, dropped connections
    retry_base_delay: float = 2.0     # first backoff in seconds, doubled per retry
    retry_max_delay: float = 60.0     # cap of one backoff (also caps a server's Retry-After)

    @property
    def where(self) -> str:
        return self.base_url or "the OpenAI API"


class EndpointError(RuntimeError):
    """A request that produced no usable response: ``kind`` is ``key``, ``timeout``,
    ``connection``, ``http`` (then ``status`` is set) or ``malformed``; ``attempts`` counts the
    requests made; ``detail`` is the error's own text, redacted and clipped."""

    def __init__(self, kind: str, message: str, *, detail: str = "", status: int | None = None,
                 attempts: int = 0, retryable: bool = False, what: str = ""):
        super().__init__(message)
        self.kind, self.detail, self.status = kind, detail, status
        self.attempts, self.retryable, self.what = attempts, retryable, what


def is_local(base_url: str | None) -> bool:
    """True for loopback, private-network and ``*.local`` hosts (keyless servers live there)."""
    if not base_url:
        return False
    host = (urlparse(base_url).hostname or "").lower()
    if host in ("localhost", "0.0.0.0") or host.endswith((".local", ".localhost")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def resolve_key(endpoint: Endpoint) -> str:
    """The key from ``$api_key_env``; a placeholder for a local endpoint without one; else an
    :class:`EndpointError` of kind ``key`` that names the variable."""
    key = os.environ.get(endpoint.api_key_env, "")
    if key:
        return key
    if is_local(endpoint.base_url):
        return PLACEHOLDER_KEY
    raise EndpointError("key", f"no API key: set the environment variable {endpoint.api_key_env} "
                               f"for {endpoint.where}, or name another variable (api_key_env)")


def retry_delay(endpoint: Endpoint, attempt: int, headers=None) -> float:
    """Seconds to wait before retry ``attempt + 1``: the server's ``Retry-After-Ms`` or
    ``Retry-After`` (seconds or an HTTP date) if it sent one, else exponential; capped."""
    delay = endpoint.retry_base_delay * 2 ** attempt
    headers = headers or {}
    try:
        if headers.get("retry-after-ms") is not None:
            delay = float(headers["retry-after-ms"]) / 1000
        elif headers.get("retry-after") is not None:
            after = headers["retry-after"]
            try:
                delay = float(after)
            except ValueError:
                delay = email.utils.parsedate_to_datetime(after).timestamp() - time.time()
    except (TypeError, ValueError, OverflowError):  # an unreadable header: keep the exponential delay
        pass
    return max(0.0, min(delay, endpoint.retry_max_delay))


class ChatClient:
    """``POST /chat/completions`` on ``endpoint`` with the policy of this module.

    ``label`` names the caller in the retry warnings (``proposer``, ``judge``)."""

    def __init__(self, endpoint: Endpoint, *, label: str = "endpoint",
                 sleep: Callable[[float], None] = time.sleep):
        import openai  # here, so that importing this module (and the offline proposer) never needs it

        self.endpoint, self.label, self._sleep, self._openai = endpoint, label, sleep, openai
        self._key = resolve_key(endpoint)
        self._client = openai.OpenAI(api_key=self._key, base_url=endpoint.base_url,
                                     timeout=endpoint.request_timeout, max_retries=0)

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    def __repr__(self) -> str:  # never show the key
        return f"ChatClient(model={self.endpoint.model!r}, base_url={self.base_url!r})"

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _failure(self, err: Exception, attempts: int) -> EndpointError:
        o = self._openai
        what, detail = type(err).__name__, self.redact(clean(err))[:300]
        if isinstance(err, o.APITimeoutError):  # a subclass of APIConnectionError: test it first
            return EndpointError("timeout", f"{what}: {detail}", detail=detail, attempts=attempts,
                                 retryable=True, what=what)
        if isinstance(err, o.APIConnectionError):
            return EndpointError("connection", f"{what}: {detail}", detail=detail,
                                 attempts=attempts, retryable=True, what=what)
        status = err.status_code
        return EndpointError("http", f"HTTP {status}: {detail}", detail=detail, status=status,
                             attempts=attempts, what=what,
                             retryable=status in RETRIED_STATUSES or status >= 500)

    def _post(self, messages: Sequence[dict], params: dict):
        o, ep = self._openai, self.endpoint
        for attempt in range(ep.max_retries + 1):
            try:
                return self._client.chat.completions.with_raw_response.create(
                    model=ep.model, messages=list(messages), **params)
            except (o.APIConnectionError, o.APIStatusError) as err:
                failure = self._failure(err, attempt + 1)
                if not failure.retryable or attempt == ep.max_retries:
                    raise failure from None
                response = getattr(err, "response", None)
                delay = retry_delay(ep, attempt, response.headers if response is not None else None)
                log.warning("%s: %s, retrying in %.2fs (%d/%d)", self.label, failure.what, delay,
                            attempt + 1, ep.max_retries)
                self._sleep(delay)

    def body(self, messages: Sequence[dict], **params) -> bytes:
        """The raw response body, read here: a malformed body cannot raise inside the client."""
        return self._post(messages, params).http_response.content

    def completion(self, messages: Sequence[dict], **params):
        """The response parsed by the ``openai`` client (a ``ChatCompletion``); a body it cannot
        parse is an :class:`EndpointError` of kind ``malformed``."""
        raw = self._post(messages, params)
        try:
            return raw.parse()
        except Exception as err:  # noqa: BLE001 - whatever the parser raises on a bad body
            raise EndpointError("malformed", f"the response could not be read ({type(err).__name__})",
                                detail=self.redact(clean(err))[:300], what=type(err).__name__) from None
