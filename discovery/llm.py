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

from discovery import history, prompts
from discovery.config import PromptLimits
from discovery.feedback import safe_reason
from discovery.openai_client import ChatClient, Endpoint, EndpointError
from discovery.openai_client import resolve_key as _resolve_key
from discovery.parsing import ReplyError, parse_reply
from discovery.proposal import Context, Entry, Proposal, ProposerError
from discovery.text import MAX_CODE_CHARS, MAX_REPLY_CHARS, clean
from objectives.baselines import REGISTRY


MAX_LESSONS_CHARS = 2500


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


KIND_WORDS = {"pointwise": "pointwise: a function of each pair's own margin",
              "logratio": "pointwise in the two log-ratios separately",
              "batch": "batch-coupled: a pair's loss depends on the other pairs of the batch"}


def registry_context(shown: set[str], limits: PromptLimits) -> str:
    """The registry's other losses, each as its own formula with beta as a parameter."""
    out = []
    for name in REGISTRY:
        if name in shown:
            continue
        objective = REGISTRY.get(name)
        code = baseline_code(Entry(id=0, name=name, kind="baseline", status="", code=objective.source))
        out.append(f"- `{name}` ({KIND_WORDS.get(objective.kind, objective.kind)}): {objective.description} "
                   f"[{objective.citation}]\n```python\n{clip(code, limits.max_code_chars // 2)}\n```")
    return "\n".join(out) or "(none)"


def render_prompt(context: Context, limits: PromptLimits) -> str:
    """The user prompt for ``context``; its length is bounded by ``limits.max_prompt_chars``, not by
    the archive: when it would be longer, the history table is grouped harder and the code and
    hypotheses cut shorter until it fits (every candidate stays in the table)."""
    reference = history.reference_entry(context)
    shown_code = {e.id for e in context.parents[:limits.n_code]}
    attempt = 0
    while True:
        scale = 0.5 ** attempt
        text = _render(context, limits, reference, shown_code, scale)
        if len(text) <= limits.max_prompt_chars or attempt >= 6:
            return text
        attempt += 1


def _render(context: Context, limits: PromptLimits, reference, shown_code: set[int], scale: float) -> str:
    code_chars = max(200, int(limits.max_code_chars * scale))
    thought_chars = max(80, int(limits.max_thought_chars * scale))
    metric = context.metric

    def entry(e: Entry, title: str) -> str:
        reason = safe_reason(e.reason, e.code) if e.reason else ""
        status = _score(e) if e.status == "done" else \
            f"status: {e.status}" + (f" ({clip(reason, limits.max_error_chars)})" if reason else "")
        diagnosis = history.diagnose(e, reference, context.noise, metric) if e.status == "done" else None
        code = baseline_code(e) if e.kind == "baseline" else e.code
        idea = history.idea_of(e)
        thought = history.one_line(e.thought, thought_chars) or "(none given)"
        text = prompts.render("entry", title=title, status_line=status,
                              idea_line=f"Idea: {idea}\n" if idea and not thought.startswith(idea.rstrip(" .")) else "",
                              hypothesis=f"Hypothesis: {thought}",
                              diagnostics="\n".join(diagnosis.lines) + "\n" if diagnosis and diagnosis.lines else "",
                              code=clip(code, code_chars))
        return text

    def section(entries, titled) -> str:
        return "\n\n".join(titled(e) for e in entries) or "(none yet)"

    above = []
    if reference is not None:
        for e in context.best:
            d = history.diagnose(e, reference, context.noise, metric).diff
            if d is not None and d["diff"] > 0:
                above.append(e)
    above = above[:limits.n_best]
    listed = {e.id for e in above}
    recent = list(context.recent[-limits.n_recent:])
    failures = list(context.failures[-limits.n_failures:])
    parents = [e for e in context.parents if e.id not in listed][:max(0, limits.n_code)]
    shown = listed | {e.id for e in parents}
    max_rows = max(4, int(limits.max_history_rows * scale))
    lessons = context.lessons[-1] if context.lessons else "(none yet: a summary is written every few candidates)"
    total = context.n_total or "?"
    left = max(0, context.n_total - context.n_proposed - 1) if context.n_total else None
    budget = "; ".join(x for x in (f"{left} experiment(s) remain after this one" if left is not None else "",
                                   context.budget_left) if x) or "No fixed number of experiments."
    budget = budget[0].upper() + budget[1:] + ("" if budget.endswith(".") else ".")
    baseline_names = {e.name for e in context.baselines}
    return prompts.render(
        "propose", number=context.n_proposed + 1, total=total, budget=budget,
        task_card=context.task_card or f"Task `{context.task}`. beta = {context.beta}. Fitness is the mean over "
                                       f"training seeds of `{metric}` on `{context.task}` (higher is better).",
        lessons=lessons,
        baselines=section(context.baselines, lambda e: entry(e, e.name)),
        registry=registry_context(baseline_names, limits),
        history=history.history_table(context.history, reference, context.noise, metric, max_rows=max_rows),
        best=section(above, lambda e: entry(e, f"#{e.id} {e.name}")) if reference is not None else
        "(DPO has not finished yet: nothing to compare with)",
        parents=section(parents, lambda e: entry(e, f"#{e.id} {e.name}"
                                                 + (f" (island {context.island + 1})" if context.island is not None else ""))),
        recent=section(recent, lambda e: entry(e, f"#{e.id} {e.name}") if e.id not in shown
                       else f"### #{e.id} {e.name}\n(shown above with its diagnostics and code)"),
        failures=section(failures, lambda e: prompts.render(
            "failure", title=f"#{e.id} {e.name}", status=e.status,
            reason=clip(safe_reason(e.reason, e.code), limits.max_error_chars) or "(no reason recorded)",
            code=clip(e.code, code_chars // 2) or "(no code)")))


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

    def propose_many(self, context: Context, k: int) -> list[Proposal]:
        """``k`` proposals for the same context, asked for at once (the requests overlap; each is an
        independent sample at the proposer's temperature). Each reply is handled as :meth:`propose`
        handles one; an endpoint that fails for good raises :class:`ProposerError` as there."""
        if k <= 1:
            return [self.propose(context)]
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=min(k, 8)) as pool:
            return list(pool.map(lambda _: self.propose(context), range(k)))

    def lessons(self, context: Context) -> tuple[str, tuple[int, int]]:
        """A lessons summary written by the model from the history table: (text, (prompt tokens,
        completion tokens)). The
        text is the model's (untrusted: cleaned, cut to :data:`MAX_LESSONS_CHARS`, shown as text)."""
        reference = history.reference_entry(context)
        user = prompts.render("lessons", task_card=context.task_card or f"Task `{context.task}`",
                              history=history.history_table(context.history, reference, context.noise,
                                                            context.metric, max_rows=self.limits.max_history_rows),
                              previous=context.lessons[-1] if context.lessons else "(none)")
        body = self._complete([{"role": "system", "content": "You summarise the results of a research campaign."},
                               {"role": "user", "content": user}])
        data = json.loads(body.decode("utf-8", "replace"))
        text = clean(data["choices"][0]["message"]["content"] or "").strip()
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        tokens = tuple(usage.get(k) if isinstance(usage.get(k), int) else 0 for k in ("prompt_tokens", "completion_tokens"))
        if not text:
            raise ValueError("the model wrote no lessons")
        return clip(text, MAX_LESSONS_CHARS), tokens

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
        return Proposal(thought=parsed.thought, name=parsed.name, code=parsed.code, idea=parsed.idea,
                        proposer=self.name, reply=reply, prompt=prompt, **tokens)
