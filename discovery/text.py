"""Untrusted text: what a language model replied and what a candidate's code produced.

Three helpers, used wherever such text is stored, written to a file or shown:

* :func:`clean`: any value as a ``str`` that can be encoded as UTF-8 (lone surrogates, which a
  JSON ``"\\ud800"`` escape produces, become U+FFFD; SQLite and ``write_text`` would raise on them);
* :func:`cap`: at most ``limit`` characters, with a note saying how much was cut;
* :func:`shown`: text safe for a terminal or a web page: every control character (C0 except newline
  and tab, DEL, C1, so every ESC that starts an ANSI sequence) and every bidirectional override is
  rendered as a visible escape such as ``\\x1b``, so nothing the text holds can move the cursor,
  clear the screen, set a window title or reorder what is displayed.

The size limits of a proposal live here too (see :func:`discovery.campaign.Campaign.record`).
"""

from __future__ import annotations

import re

MAX_CODE_CHARS = 64 * 1024  # a longer "code" makes the row invalid
MAX_THOUGHT_CHARS = 8_000  # longer hypotheses are cut
MAX_REPLY_CHARS = 256 * 1024  # a longer reply is not parsed (the row is invalid); reply.md is cut there
MAX_PROMPT_CHARS = 256 * 1024  # prompt.md is cut there
MAX_REASON_CHARS = 16 * 1024  # a reason stored in the archive is cut there

_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 controls but \t and \n, DEL, C1 controls, and the Unicode bidirectional controls
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(text) -> str:
    """``text`` as a str that encodes to UTF-8: lone surrogates become U+FFFD; None becomes ""."""
    if text is None:
        return ""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", "replace")
    return _SURROGATE.sub("\ufffd", text if isinstance(text, str) else str(text))


def cap(text: str | None, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how many were cut."""
    text = text or ""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... ({len(text) - limit} more characters cut)\n"


def _visible(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def shown(text, *, multiline: bool = True) -> str:
    """``text`` for a terminal or a page: control characters as visible escapes (``\\x1b``).

    With ``multiline=False`` newlines and tabs are escaped too (for one-line fields)."""
    text = clean(text).replace("\r\n", "\n")
    text = _CONTROL.sub(_visible, text)
    if not multiline:
        text = text.replace("\n", "\\n").replace("\t", "\\t")
    return text
