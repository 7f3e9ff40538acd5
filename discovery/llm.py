"""``openai``: a proposer that asks a language model, through any OpenAI-compatible endpoint.

The endpoint is the ``openai`` client pointed at ``base_url`` (OpenAI itself when unset; vLLM,
Ollama, llama.cpp's server, ... otherwise). The API key is read from the environment variable whose
*name* is configured; it lives only inside the client object and is never logged, stored in the
archive, or passed to training processes. A local endpoint without a key gets a placeholder key, as
those servers ignore it.

Every request is one system prompt plus one user prompt rebuilt from the archive (not a growing
chat transcript): the baselines, the best and most recent candidates with their fitness, and the
errors of the last failures, each entry clipped, so the prompt stays bounded however large the
archive grows. Rate limits (429), server errors (5xx), timeouts and dropped connections are retried
with bounded exponential backoff here (the client's own retries are off, so the schedule is ours
and testable); other HTTP errors stop the campaign with :class:`ProposerError`.

The reply is untrusted text. The response body is read here, not by the client: undecodable bytes
and lone surrogates become U+FFFD, and a body that is not JSON, a reply over
:data:`~discovery.text.MAX_REPLY_CHARS` or one that cannot be handled for any other reason
becomes a proposal with an ``error`` (an invalid row), never an exception. The reasons shown in
the prompt pass :func:`discovery.feedback.safe_reason`, so text a candidate produced (an exception
message, a forged sandbox verdict) never reaches the endpoint.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import time
from urllib.parse import urlparse

from discovery import prompts
from discovery.feedback import safe_reason
from discovery.parsing import ReplyError, parse_reply
from discovery.proposal import Context, Entry, Proposal, ProposerError
from discovery.text import MAX_CODE_CHARS, MAX_REPLY_CHARS, clean

log = logging.getLogger(__name__)

PLACEHOLDER_KEY = "sk-local-no-key"


@dataclasses.dataclass(frozen=True)
class PromptLimits:
    """How much of the archive one prompt shows (the prompt's size is bounded by these)."""

    n_best: int = 5
    n_recent: int = 3
    n_failures: int = 3
    max_code_chars: int = 1500
    max_thought_chars: int = 400
    max_error_chars: int = 400


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


def resolve_key(api_key_env: str, base_url: str | None) -> str:
    key = os.environ.get(api_key_env, "")
    if key:
        return key
    if is_local(base_url):
        return PLACEHOLDER_KEY
    where = base_url or "the OpenAI API"
    raise ProposerError(f"no API key: set the environment variable {api_key_env} for {where}, "
                        "or choose another variable with --api-key-env")


def clip(text: str | None, limit: int) -> str:
    text = (text or "").strip()
    if len(text) <= limit:
        return text
    return text[:limit].rstrip() + f"\n... ({len(text) - limit} more characters cut)"


def _score(e: Entry) -> str:
    if e.fitness is None:
        return e.status
    se = f" ± {e.fitness_se:.3f}" if e.fitness_se is not None else ""
    return f"fitness {e.fitness:.4f}{se}"


def baseline_code(e: Entry, beta: float) -> str:
    """A baseline as the model should write it: the (rho, beta) form where there is one, else its
    registry source without the registration decorator."""
    from discovery.evolve import seed_trees, to_code
    tree = seed_trees(beta).get(e.name)
    if tree is not None:
        return to_code(tree, e.name)
    return "\n".join(line for line in e.code.splitlines() if not line.lstrip().startswith("@"))


def render_prompt(context: Context, limits: PromptLimits) -> str:
    """The user prompt for ``context``; its length is bounded by ``limits``, not by the archive."""
    def entry(e: Entry, title: str) -> str:
        reason = safe_reason(e.reason, e.code) if e.reason else ""
        status = _score(e) if e.status == "done" else \
            f"status: {e.status}" + (f" ({clip(reason, limits.max_error_chars)})" if reason else "")
        code = baseline_code(e, context.beta) if e.kind == "baseline" else e.code
        return prompts.render("entry", title=title, status_line=status,
                              thought=clip(e.thought, limits.max_thought_chars) or "(none given)",
                              code=clip(code, limits.max_code_chars))

    def section(entries, titled) -> str:
        return "\n\n".join(titled(e) for e in entries) or "(none yet)"

    best_ids = {e.id for e in context.best[:limits.n_best]}
    recent = [e for e in context.recent[-limits.n_recent:] if e.id not in best_ids]
    failures = [e for e in context.failures[-limits.n_failures:]]
    return prompts.render(
        "propose", number=context.n_proposed + 1, task=context.task, beta=context.beta,
        fitness_description=f"the mean over training seeds of `{context.metric}` on `{context.task}`",
        baselines=section(context.baselines, lambda e: entry(e, e.name)),
        best=section(context.best[:limits.n_best], lambda e: entry(e, f"#{e.id} {e.name}")),
        recent=section(recent, lambda e: entry(e, f"#{e.id} {e.name}")),
        failures=section(failures, lambda e: prompts.render(
            "failure", title=f"#{e.id} {e.name}", status=e.status,
            reason=clip(safe_reason(e.reason, e.code), limits.max_error_chars) or "(no reason recorded)",
            code=clip(e.code, limits.max_code_chars // 2) or "(no code)")))


class LLMProposer:
    """Ask an OpenAI-compatible chat endpoint for the next candidate."""

    name = "openai"

    def __init__(self, *, model: str, base_url: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", temperature: float = 1.0,
                 max_tokens: int | None = 2048, timeout: float = 120.0, max_retries: int = 5,
                 retry_base_delay: float = 2.0, retry_max_delay: float = 60.0,
                 limits: PromptLimits = PromptLimits(), sleep=time.sleep):
        import openai  # here, so the offline proposer never needs it
        self._openai = openai
        self._key = resolve_key(api_key_env, base_url)
        self._client = openai.OpenAI(api_key=self._key, base_url=base_url, timeout=timeout,
                                     max_retries=0)
        self.model, self.temperature, self.max_tokens = model, temperature, max_tokens
        self.max_retries, self.base_delay, self.max_delay = max_retries, retry_base_delay, retry_max_delay
        self.limits, self._sleep = limits, sleep

    def __repr__(self) -> str:  # never show the key
        return f"LLMProposer(model={self.model!r}, base_url={str(self._client.base_url)!r})"

    @classmethod
    def from_config(cls, config) -> "LLMProposer":
        return cls(model=config.model, base_url=config.base_url, api_key_env=config.api_key_env,
                   temperature=config.temperature, max_tokens=config.max_tokens,
                   timeout=config.request_timeout, max_retries=config.max_retries,
                   retry_base_delay=config.retry_base_delay, retry_max_delay=config.retry_max_delay,
                   limits=PromptLimits(n_best=config.n_best, n_recent=config.n_recent,
                                       n_failures=config.n_failures,
                                       max_code_chars=config.max_code_chars,
                                       max_error_chars=config.max_error_chars))

    def messages(self, context: Context) -> list[dict]:
        return [{"role": "system", "content": prompts.render("system")},
                {"role": "user", "content": render_prompt(context, self.limits)}]

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _retry_delay(self, err, attempt: int) -> float:
        delay = self.base_delay * 2 ** attempt
        response = getattr(err, "response", None)
        after = response.headers.get("retry-after") if response is not None else None
        try:
            delay = float(after) if after is not None else delay
        except ValueError:
            pass
        return max(0.0, min(delay, self.max_delay))

    def _complete(self, messages) -> bytes:
        """The raw response body (read here, so that a malformed body cannot raise in the client)."""
        o = self._openai
        for attempt in range(self.max_retries + 1):
            try:
                kwargs = {"max_tokens": self.max_tokens} if self.max_tokens else {}
                raw = self._client.chat.completions.with_raw_response.create(
                    model=self.model, messages=messages, temperature=self.temperature, **kwargs)
                return raw.http_response.content
            except (o.RateLimitError, o.APITimeoutError, o.APIConnectionError,
                    o.InternalServerError) as err:
                what = type(err).__name__
                if attempt == self.max_retries:
                    raise ProposerError(f"the endpoint failed {attempt + 1} times; last: {what}: "
                                        f"{self._redact(clean(err))[:300]}") from None
                delay = self._retry_delay(err, attempt)
                log.warning("proposer: %s, retrying in %.2fs (%d/%d)", what, delay, attempt + 1,
                            self.max_retries)
                self._sleep(delay)
            except o.APIStatusError as err:
                raise ProposerError(f"the endpoint refused the request (HTTP {err.status_code}): "
                                    f"{self._redact(clean(err))[:300]}") from None

    def propose(self, context: Context) -> Proposal:
        messages = self.messages(context)
        body = self._complete(messages)
        prompt = "\n\n".join(f"## {m['role']}\n\n{m['content']}" for m in messages)
        try:
            return self._proposal(body, prompt)
        except Exception as err:  # noqa: BLE001 - a reply must never stop the campaign
            return Proposal(thought="", name="unhandled_reply", code="", proposer=self.name,
                            error=f"the reply could not be handled ({type(err).__name__})",
                            reply=clean(body), prompt=prompt)

    def _proposal(self, body: bytes, prompt: str) -> Proposal:
        """The candidate in a response body, or a proposal whose ``error`` says what was wrong."""
        def failed(name: str, error: str, reply: str | None = None, code: str = "", **tokens):
            return Proposal(thought="", name=name, code=code, proposer=self.name, error=error,
                            reply=reply, prompt=prompt, **tokens)

        text = body.decode("utf-8", "replace")  # undecodable bytes become U+FFFD
        try:
            data = json.loads(text)
        except ValueError as err:
            where = f" at character {err.pos}" if isinstance(err, json.JSONDecodeError) else ""
            return failed("malformed_response", f"the endpoint's response was not valid JSON{where}",
                          reply=clean(text))
        data = data if isinstance(data, dict) else {}
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        tokens = {k: usage[k] if isinstance(usage.get(k), int) and not isinstance(usage[k], bool)
                  else None for k in ("prompt_tokens", "completion_tokens")}
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            return failed("no_reply", "the endpoint returned no choices (an empty reply)", **tokens)
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        reply = message.get("content") if isinstance(message, dict) else None
        if reply is not None and not isinstance(reply, str):
            return failed("no_reply", "the reply's content was not text", **tokens)
        reply = clean(reply) if reply is not None else None
        if reply is not None and len(reply) > MAX_REPLY_CHARS:
            return failed("oversized_reply", f"the reply is {len(reply)} characters long, over the "
                          f"limit of {MAX_REPLY_CHARS} (the code may be at most {MAX_CODE_CHARS})",
                          reply=reply, **tokens)
        try:
            parsed = parse_reply(reply)
        except ReplyError as err:
            return failed("unparseable_reply", f"the reply could not be parsed: {err}", reply=reply,
                          code=clip(reply, 4000), **tokens)
        return Proposal(thought=parsed.thought, name=parsed.name, code=parsed.code,
                        proposer=self.name, reply=reply, prompt=prompt, **tokens)
