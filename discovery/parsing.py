"""Turning a language model's reply into a candidate: ``thought``, ``name`` and ``code``.

Models are asked for one JSON object, and often answer with something near it. What is accepted:

* the bare JSON object, or one inside a Markdown fence (```json or plain ```);
* text before and after the object (the first decodable object that has ``code`` wins);
* JSON whose string values hold raw newlines (models rarely escape them);
* the code in a separate ```python block, with or without a JSON object for the thought and name;
* code inside the JSON that is itself wrapped in a fence.

Anything else raises :class:`ReplyError`, whose message is written so that it can be shown to the
model in the next prompt.
"""

from __future__ import annotations

import dataclasses
import json
import re

FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
DEF = re.compile(r"^\s*def\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(", re.MULTILINE)
MAX_NAME = 40
MAX_DECODE_ATTEMPTS = 200  # '{' positions tried per chunk: a reply full of braces stays linear

_ANSWER = "answer with one JSON object with the keys \"thought\", \"name\" and \"code\""
EMPTY = f"the reply was empty; {_ANSWER}"
NO_VALID_JSON = ("the reply contained no valid JSON object (check quotes, commas and escaping); "
                 + _ANSWER)
NO_CODE = "the JSON object had no \"code\" string; put the whole function definition in \"code\""
NOTHING = f"no JSON object and no ```python block found; {_ANSWER}"
NO_DEF = "the \"code\" value defines no function; it must contain one `def`"
MESSAGES = (EMPTY, NO_VALID_JSON, NO_CODE, NOTHING, NO_DEF)  # every ReplyError's text


class ReplyError(ValueError):
    """The reply could not be turned into a candidate; the message is fed back to the model."""


@dataclasses.dataclass(frozen=True)
class Parsed:
    thought: str
    name: str
    code: str
    idea: str = ""  # the one-line idea, when the reply gave one apart from the thought


def slug(name: str, fallback: str = "candidate") -> str:
    """A short snake_case name safe for file names and SQL (``[a-z0-9_]``, at most 40 chars)."""
    s = re.sub(r"[^a-z0-9_]+", "_", (name or "").strip().lower()).strip("_")
    s = re.sub(r"_+", "_", s)[:MAX_NAME].strip("_")
    if not s or s[0].isdigit():
        s = f"{fallback}_{s}".strip("_")[:MAX_NAME]
    return s


def _strip_fence(code: str) -> str:
    m = FENCE.search(code)
    return m.group(2) if m else code


def _json_objects(text: str):
    """Every JSON object that decodes starting at some '{' in ``text``, in order."""
    decoder = json.JSONDecoder(strict=False)  # strict=False: raw newlines inside strings
    i = text.find("{")
    for _ in range(MAX_DECODE_ATTEMPTS):
        if i == -1:
            return
        try:
            obj, end = decoder.raw_decode(text, i)
        except (json.JSONDecodeError, RecursionError):  # RecursionError: '[[[[...' nested too deep
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            yield obj
        i = text.find("{", end)


def _fields(obj: dict) -> tuple[str, str, str]:
    lowered = {str(k).lower(): v for k, v in obj.items()}
    get = lambda *keys: next((lowered[k] for k in keys if isinstance(lowered.get(k), str)), "")  # noqa: E731
    return (get("thought", "hypothesis", "reasoning", "idea").strip(), get("name").strip(),
            _strip_fence(get("code", "source", "function")).strip("\n"))


def parse_reply(text: str | None) -> Parsed:
    """Find the candidate in ``text`` or raise :class:`ReplyError` saying what was wrong."""
    if text is None or not text.strip():
        raise ReplyError(EMPTY)
    fences = FENCE.findall(text)
    python_blocks = [body for lang, body in fences if lang.lower() in ("python", "py")]
    candidates = [body for lang, body in fences if lang.lower() in ("json", "")] + [text]

    found: dict | None = None
    for chunk in candidates:
        for obj in _json_objects(chunk):
            if found is None or (not _fields(found)[2] and _fields(obj)[2]):
                found = obj
            if _fields(found)[2]:
                break
        if found is not None and _fields(found)[2]:
            break

    thought, name, code = _fields(found) if found is not None else ("", "", "")
    idea = ""
    if found is not None:
        raw = {str(k).lower(): v for k, v in found.items()}.get("idea")
        idea = " ".join(raw.split())[:200] if isinstance(raw, str) else ""
    if not code and python_blocks:
        code = python_blocks[0].strip("\n")
        if not thought:  # the prose around the block is the hypothesis
            thought = " ".join(FENCE.sub(" ", text).split())[:2000]
    if not code:
        if found is None and "{" in text:
            raise ReplyError(NO_VALID_JSON)
        if found is not None:
            raise ReplyError(NO_CODE)
        raise ReplyError(NOTHING)
    if not DEF.search(code):
        raise ReplyError(NO_DEF)
    if not name:
        m = DEF.search(code)
        name = m.group(1) if m else "candidate"
    return Parsed(thought=thought, name=slug(name), code=code.rstrip() + "\n", idea=idea)
