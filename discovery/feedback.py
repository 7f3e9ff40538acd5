"""What the language model is told about a failed candidate: the project's words, never the candidate's.

A row's ``reason`` can hold text the candidate produced: the message of an exception it raised
(which may quote a host file it read), or a whole verdict forged by code that escaped the AST
screen (everything a sandboxed child returns is data it controls). The archive keeps that reason
for the researcher; the prompt gets :func:`safe_reason` of it, which keeps a reason only when it is
one of the project's own messages with numbers and identifiers filled in, and otherwise reduces it:

* a check, training job or validator that raised: ``"<check>: ValueError raised at line 3 of the
  loss (message withheld: ...)"`` -- the type only when it is a known exception class, the line
  only when the code has that line;
* a screen or load failure: the message of the screen run here, in this process, on the row's code;
* a known message whose tail quotes the candidate (``out of memory: ...``, ``job exited with code
  1: ...``): its head, with the tail withheld;
* anything else: ``"failed (details withheld: text produced by the candidate)"``, after the
  trusted prefixes (``seed 0: ``, a check name, ``sandbox timeout: ``) it began with.

The templates below are copies of the messages in objectives/checks.py, objectives/screen.py,
objectives/validate.py, objectives/sandbox.py, inner_loop/trainer.py, inner_loop/runner.py,
discovery/parsing.py, discovery/llm.py, discovery/training.py and discovery/campaign.py;
tests/discovery/test_feedback.py checks that the real messages still pass through unchanged.
"""

from __future__ import annotations

import builtins
import re

from discovery import parsing
from discovery.text import clean

WITHHELD = "details withheld: text produced by the candidate"
MESSAGE_WITHHELD = "message withheld: text produced by the candidate"
GENERIC = f"failed ({WITHHELD})"

CHECKS = ("screen", "load", "output", "finite", "gradient", "deterministic", "inputs_unchanged",
          "kind", "permutation", "direction", "sandbox")
SANDBOX_KINDS = ("timeout", "memory", "crash", "error", "refused")

_PLACEHOLDERS = {
    "n": r"-?(?:\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|inf|nan)",
    "id": r"[A-Za-z_][A-Za-z0-9_.]{0,59}",
    "ids": r"[A-Za-z_][A-Za-z0-9_]{0,59}(?:, [A-Za-z_][A-Za-z0-9_]{0,59}){0,3}",
    "ints": r"(?:-?\d{1,9}(?:, -?\d{1,9}){0,7})?",
    "name": r"[a-z_][a-z0-9_]{0,39}",
    "q": r"'[A-Za-z_][A-Za-z0-9_.:]{0,99}'",
    "file": r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,59}",
    "param": r"[A-Za-z0-9_.]{1,120}",
    "tuple": r"[\[(][-\d, ]{0,60}[\])]",
    "mode": r"[-a-zA-Z]{10}",
    "words": r"[A-Za-z ,'-]{1,80}",
}


def _regex(template: str) -> str:
    """A template ("returned {id} for a batch of {n}") as a regex; the rest is literal."""
    parts = re.split(r"\{(\w+)\}", template)
    return "".join(re.escape(p) if i % 2 == 0 else f"(?:{_PLACEHOLDERS[p]})"
                   for i, p in enumerate(parts))


# The project's own messages, with {placeholders} for what it fills in.
TEMPLATES = (
    # objectives/checks.py
    "returned {id} for a batch of {n}: expected a tensor of per-pair losses",
    "returned a {id} tensor: expected a float tensor",
    "returned shape [{ints}] for a batch of {n}: expected one loss per pair, shape [{n}]",
    "returned shape [{ints}] for a batch of {n}: expected one loss per pair, shape [{n}] "
    "(did you take the mean or sum over the batch?)",
    "non-finite loss ({id}) for {n} of {n} margins, beta*rho from {n} to {n} (float32)",
    "non-finite loss on a batch of typical log-probs",
    "the output is detached from the inputs (requires_grad is False): no gradient can flow. Avoid "
    ".detach(), .item(), .data and building new tensors from values",
    "no gradient reaches the policy log-probs",
    "non-finite gradient ({id}) for {n} of {n} margins, beta*rho from {n} to {n} (float32)",
    "the gradient with respect to the policy log-probs is zero at every margin tested: training "
    "would not move",
    "two calls on the same batch gave different losses (randomness such as torch.rand or dropout "
    "inside the loss?)",
    "modified its input(s) in place: {ids} (e.g. `x += ...`, `.clamp_()`, `x[...] = ...`); compute "
    "on new tensors instead",
    "not measured: the losses are not finite",
    "the loss of a pair changes when the batch is reordered, although the objective measured as "
    "pointwise",
    # objectives/validate.py
    "the checks returned no results",
    # objectives/sandbox.py (after "sandbox <kind>: ")
    "no result within the wall-clock limit of {n} s; the child and its PID namespace were killed",
    "no result within the wall-clock limit of {n} s; the child and its process group were killed",
    "the child used up its CPU-time limit (about {n} s)",
    "the child's answer was not one JSON line ({id})",
    "the child was killed by {id} before returning a result",
    "the child was killed by {id} (out of memory?) before returning a result",
    "the sandbox child failed before it could report (setup error)",
    "the child exited with status {n} before returning a result",
    "the sandbox worker stopped answering ({id}); it will be restarted",
    "the sandbox worker died ({id}); it will be restarted",
    "the sandbox worker did not start",
    "the cold sandbox process did not finish",
    "the cold sandbox process exited with {n} and no answer",
    "the cold sandbox process exited with {n} and no answer it could read (a line nested too deeply)",
    "the child's answer could not be passed on ({id})",
    "out of memory (limit: {n} MiB above the worker's own)",
    # inner_loop/trainer.py and inner_loop/runner.py
    "non-finite loss ({n}) at step {n}",
    "timeout: {n} s used up after step {n}",
    "timeout: job killed after {n} s",
    "job killed by {id}",
    "job killed by {id} (likely out of memory)",
    "the objective returned shape {tuple}, expected {tuple} at step {n}",
    "the objective modified the model's gradients or optimizer state (tensors added or removed) at "
    "step {n}",
    "the objective modified the model's optimizer state at step {n}",
    "the objective modified the model's parameters ({param}) at step {n}",
    "the objective modified the model's gradients ({param}) at step {n}",
    "the objective modified the model's buffers ({param}) at step {n}",
    "timeout: loading and scoring the policy took over {n} s",
    "cannot open {file} ({words}; a symlink is refused)",
    "{file} is not a regular file (mode {mode})",
    "{file} has {n} links (a hard link is refused)",
    "{file} is {n} bytes, over the limit of {n}",
    "{file} grew over the limit of {n} bytes",
    "non-finite weights",
    "failed",
    # discovery/training.py and discovery/campaign.py
    "training produced no result",
    "training was interrupted {n} times (the process died each time); not retried",
    "failed validation",
    "computes the same function as #{n} {name}",
    "near-duplicate of #{n} {name} before validation: the same code up to names, layout and constant "
    "arithmetic, or the same values of f(z)",
    "trains like #{n} {name}: its one-seed pilot reproduced that row's training (metrics and margins equal); "
    "the other seeds were not spent",
    "computes the same function as #{n} {name} on the margins DPO's training visits (z = beta * rho from {n} to {n})",
    "trains like #{n} {name}: its gradients are a positive multiple of that loss's (a constant "
    "shift or scale; Adam divides the factor out)",
    # discovery/llm.py and discovery/campaign.py (replies)
    "the endpoint returned no choices (an empty reply)",
    "the reply's content was not text",
    "the endpoint's response was not valid JSON",
    "the endpoint's response was not valid JSON at character {n}",
    "the reply is {n} characters long, over the limit of {n} (the code may be at most {n})",
    "the code is {n} characters long, over the limit of {n}",
    "the reply could not be handled ({id})",
)
LITERALS = tuple(f"the reply could not be parsed: {m}" for m in parsing.MESSAGES)  # no placeholders
# Known messages whose tail quotes the candidate: the head is kept, the tail withheld.
WITHHELD_HEADS = (
    "out of memory (limit: {n} MiB above the worker's own)",  # sandbox kind memory
    "out of memory",  # trainer and runner
    "job exited with code {n}",
    "worker exited with code {n}",
    "not a safetensors file",
    "weights do not match the SFT model",
    "non-finite metrics",
    "the sandbox's answer could not be read",
    "sandbox setup failed",
    "the target returned something that is not JSON",
    "trainer {q} not available",
    "cannot import target {q}",
)
# Trusted prefixes, peeled off before the rest is matched (the first matching one each time).
PREFIXES = (
    "seed {n}: ",
    *(f"sandbox {k}: " for k in SANDBOX_KINDS),
    *(f"{c}: " for c in CHECKS),
    "objective did not load: ",
    "the validator crashed: ",
    "fitness {q}: ",
    "sandbox worker: ",
    "unusable weights: ",
    "unusable {file}: ",
)

_TEMPLATE = re.compile("|".join([f"(?:{_regex(t)})" for t in TEMPLATES] +
                                 [f"(?:{re.escape(t)})" for t in LITERALS]))
_HEAD = re.compile("(" + "|".join(_regex(h) for h in WITHHELD_HEADS) + r"):\s", re.DOTALL)
_PREFIX = re.compile("|".join(_regex(p) for p in PREFIXES))
_LEADS = ("raised ", "could not define the function: ", "the trainer raised ", "the objective raised ",
          "scoring the policy failed: ")
_EXCEPTION = re.compile(f"(?P<lead>{'|'.join(map(re.escape, _LEADS))})?"
                        r"(?P<type>[A-Za-z_][A-Za-z0-9_]{0,59})(?::\s(?P<message>.*))?", re.DOTALL)
_LINE = re.compile(r"\(at line (\d{1,9}) of the loss\)\s*\Z")
_STEP = re.compile(r" at step (\d{1,9})\s*\Z")  # the trainer's ObjectiveFault ends so

KNOWN_EXCEPTIONS = frozenset(
    name for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)) | {
    # the project's own, and torch's that carry no candidate text in their name
    "ObjectiveError", "NonFiniteLoss", "TimeLimitExceeded", "SandboxError", "ReplyError",
    "JSONDecodeError", "OutOfMemoryError", "AcceleratorError", "LinAlgError", "_LinAlgError"}


def _host_screen(code: str) -> str | None:
    """The screen's verdict on ``code``, computed here (nothing of the code runs): its message, or
    None when the code passes."""
    if not code or not code.strip():
        return None
    try:
        from objectives.base import ObjectiveError
        from objectives.loader import detect_form
        from objectives.screen import screen
        try:
            detect_form(screen(code).params)
        except ObjectiveError as err:
            return clean(err)
    except Exception:  # noqa: BLE001 - no verdict (a parser limit, or the screen is unavailable)
        return None
    return None


def _exception(match: re.Match, code: str) -> str:
    kind = match.group("type")
    kind = kind if kind in KNOWN_EXCEPTIONS else "an exception"
    where = ""
    line = _LINE.search(match.group("message") or "")
    n_lines = len((code or "").splitlines())
    if line and 1 <= int(line.group(1)) <= n_lines:
        where = f" at line {int(line.group(1))} of the loss"
    step = _STEP.search(match.group("message") or "")
    where += f" at step {int(step.group(1))}" if step else ""
    lead = match.group("lead") or ""
    if lead.endswith(" raised "):  # "the trainer raised ", "the objective raised "
        return f"{lead}{kind}{where} ({MESSAGE_WITHHELD})"
    lead = "" if lead == "raised " else lead
    return f"{lead}{kind} raised{where} ({MESSAGE_WITHHELD})"


def safe_reason(reason: str | None, code: str | None = "") -> str:
    """``reason`` as it may be shown to the language model (see the module docstring)."""
    text = clean(reason).strip()
    if not text:
        return ""
    code = clean(code)
    prefix, rest = "", text
    for _ in range(4):
        m = _PREFIX.match(rest)
        if not m:
            break
        prefix, rest = prefix + m.group(), rest[m.end():]
    if _TEMPLATE.fullmatch(rest):
        return prefix + rest
    m = _HEAD.match(rest)
    if m:
        return f"{prefix}{m.group(1)} ({WITHHELD})"
    m = _EXCEPTION.fullmatch(rest)
    if m:
        return prefix + _exception(m, code)
    if not prefix or prefix.endswith(("screen: ", "load: ")):  # "objective did not load: " too
        host = _host_screen(code)
        if host is not None:
            return prefix + host
    return prefix + GENERIC
