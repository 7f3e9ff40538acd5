"""``openai``: a proposer that asks a language model, through any OpenAI-compatible endpoint.

The endpoint is reached through :class:`discovery.openai_client.ChatClient`, the one client the
judge uses too: the API key is read from the environment variable whose *name* is configured (a
local endpoint may go without), it is never logged, stored in the archive or passed to training
processes; rate limits (429), server errors (5xx), timeouts and dropped connections are retried
with bounded exponential backoff that honours ``Retry-After``. When the endpoint fails for good, or
refuses the request (another HTTP error, no key), the campaign stops with :class:`ProposerError`.

Every request is one system prompt plus one user prompt rebuilt from the archive (not a growing
chat transcript): the baselines (their code as :mod:`objectives.baselines` writes it), the best and
most recent candidates with their fitness, and the errors of the last failures, each entry
clipped, so the prompt stays bounded however large the archive grows.

The reply is untrusted text. The response body is read here, not by the client: undecodable bytes
and lone surrogates become U+FFFD, and a body that is not JSON, a reply over
:data:`~discovery.text.MAX_REPLY_CHARS` or one that cannot be handled for any other reason
becomes a proposal with an ``error`` (an invalid row), never an exception. The reasons shown in
the prompt pass :func:`discovery.feedback.safe_reason`, so text a candidate produced (an exception
message, a forged sandbox verdict) never reaches the endpoint.
"""

from __future__ import annotations

import ast
import json
import re
import time

from discovery import prompts
from discovery.config import PromptLimits
from discovery.feedback import safe_reason
from discovery.openai_client import ChatClient, Endpoint, EndpointError
from discovery.openai_client import resolve_key as _resolve_key
from discovery.parsing import ReplyError, parse_reply
from discovery.proposal import Context, Entry, Proposal, ProposerError
from discovery.text import MAX_CODE_CHARS, MAX_REPLY_CHARS, clean
from objectives.baselines import REGISTRY


def resolve_key(api_key_env: str, base_url: str | None) -> str:
    """:func:`discovery.openai_client.resolve_key` for the proposer: a missing key is a
    :class:`ProposerError`."""
    try:
        return _resolve_key(Endpoint(base_url, "", api_key_env))
    except EndpointError as err:
        raise ProposerError(str(err)) from None


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


_SIGNATURE = re.compile(r"^def (\w+)\(pc, pr, rc, rr, beta\)", re.MULTILINE)
_MARGIN = re.compile(r"\bmargin\(pc, pr, rc, rr\)")


def baseline_code(e: Entry) -> str:
    """A baseline's code as the prompt shows it: its source in :mod:`objectives.baselines` (the
    archive's copy for a name not registered there) without the registration decorator, its
    module's constants written as numbers, and, for a loss of the margin alone, in the
    ``(rho, beta)`` form the model is asked to write."""
    objective = REGISTRY.get(e.name) if e.name in REGISTRY else None
    source = objective.source if objective is not None else e.code
    lines = source.splitlines()
    try:
        fn = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef))
        lines = lines[fn.lineno - 1:]  # lineno is the def line: the decorator lines come before it
    except (SyntaxError, StopIteration):
        lines = [line for line in lines if not line.lstrip().startswith("@")]
    code = "\n".join(lines)
    if objective is not None:
        constants = {k: v for k, v in objective.fn.__globals__.items()
                     if k.isupper() and isinstance(v, (int, float)) and not isinstance(v, bool)}
        for name, value in constants.items():
            code = re.sub(rf"\b{name}\b", repr(value), code)
    of_rho = _MARGIN.sub("rho", _SIGNATURE.sub(r"def \1(rho, beta)", code, count=1))
    return of_rho if not re.search(r"\b(pc|pr|rc|rr)\b", of_rho) else code


def render_prompt(context: Context, limits: PromptLimits) -> str:
    """The user prompt for ``context``; its length is bounded by ``limits``, not by the archive."""
    def entry(e: Entry, title: str) -> str:
        reason = safe_reason(e.reason, e.code) if e.reason else ""
        status = _score(e) if e.status == "done" else \
            f"status: {e.status}" + (f" ({clip(reason, limits.max_error_chars)})" if reason else "")
        code = baseline_code(e) if e.kind == "baseline" else e.code
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
        endpoint = Endpoint(base_url=base_url, model=model, api_key_env=api_key_env,
                            request_timeout=timeout, max_retries=max_retries,
                            retry_base_delay=retry_base_delay, retry_max_delay=retry_max_delay)
        try:
            self._client = ChatClient(endpoint, label="proposer", sleep=sleep)
        except EndpointError as err:  # no key
            raise ProposerError(str(err)) from None
        self.model, self.temperature, self.max_tokens = model, temperature, max_tokens
        self.limits = limits

    def __repr__(self) -> str:  # never show the key
        return f"LLMProposer(model={self.model!r}, base_url={self._client.base_url!r})"

    @classmethod
    def from_config(cls, config) -> "LLMProposer":
        """The proposer of a :class:`~discovery.config.CampaignConfig`: its ``proposer`` section
        (endpoint, sampling) and its ``prompt`` limits."""
        p = config.proposer
        return cls(model=p.model, base_url=p.base_url, api_key_env=p.api_key_env,
                   temperature=p.temperature, max_tokens=p.max_tokens, timeout=p.request_timeout,
                   max_retries=p.max_retries, retry_base_delay=p.retry_base_delay,
                   retry_max_delay=p.retry_max_delay, limits=config.prompt)

    def messages(self, context: Context) -> list[dict]:
        return [{"role": "system", "content": prompts.render("system")},
                {"role": "user", "content": render_prompt(context, self.limits)}]

    def _complete(self, messages) -> bytes:
        """The raw response body (read here, so that a malformed body cannot raise in the client)."""
        params = {"temperature": self.temperature}
        if self.max_tokens:
            params["max_tokens"] = self.max_tokens
        try:
            return self._client.body(messages, **params)
        except EndpointError as err:
            if err.retryable:
                raise ProposerError(f"the endpoint failed {err.attempts} times; last: {err.what}: "
                                    f"{err.detail}") from None
            raise ProposerError(f"the endpoint refused the request (HTTP {err.status}): "
                                f"{err.detail}") from None

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
