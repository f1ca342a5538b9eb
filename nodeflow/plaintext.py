"""Text for people at a terminal: docstrings made plain, summaries cut cleanly, suggestions.

Docstrings are written in reST for the documentation (``code``, :class:`Name`); a terminal shows
that markup literally, so everything the command line prints from a docstring goes through
``plain`` here, once, rather than each command stripping what it happens to notice. A name
nobody knows (a node type, an input) gets the nearest known one suggested (``did_you_mean``),
the same way wherever it is reported.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

ELLIPSIS = "…"

_INLINE_MARKUP = [
    # :role:`title <target>` and :role:`target` (also :py:meth:`~a.b`): the title, or the target
    (re.compile(r":(?:[\w-]+:)+`~?([^`<]*?)\s*<[^`>]*>`"), r"\1"),
    (re.compile(r":(?:[\w-]+:)+`~?([^`]*)`"), r"\1"),
    (re.compile(r"``(.+?)``"), r"\1"),  # inline literal
    (re.compile(r"`([^`<]+?)\s*<[^`>]+>`__?"), r"\1"),  # `link text <url>`_
    (re.compile(r"`([^`]+)`_{0,2}"), r"\1"),  # `interpreted text` and `reference`_
    (re.compile(r"\*\*(\S(?:.*?\S)?)\*\*"), r"\1"),  # **strong**
    (re.compile(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])"), r"\1"),  # *emphasis*
]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'`])")
"""After a full stop (or ! ?) and space, a capital or a digit starts the next sentence; "1.x" or
"e.g. a" never end one."""


def plain(text: str) -> str:
    """``text`` without reST inline markup: ````nodeflow```` -> ``nodeflow``,
    ``:class:`Image``` -> ``Image``, ``**bold**`` -> ``bold``. Line breaks are kept."""
    for pattern, replacement in _INLINE_MARKUP:
        text = pattern.sub(replacement, text)
    return text


def first_paragraph(text: str) -> str:
    """The first paragraph of a docstring as one line of plain text."""
    paragraph = text.strip().split("\n\n", 1)[0]
    return " ".join(plain(paragraph).split())


def shorten(text: str, width: int) -> str:
    """``text`` (one line) in at most ``width`` characters, never cut inside a word.

    Whole sentences are kept while they fit (a summary that ends at a full stop reads as
    complete); when even the first sentence is too long, it is cut at a word boundary and ends
    with an ellipsis, so a cut is always visible.
    """
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    kept = ""
    for sentence in _SENTENCE_END.split(text):
        candidate = f"{kept} {sentence}" if kept else sentence
        if len(candidate) > width:
            break
        kept = candidate
    if kept:
        return kept
    room = max(width - len(ELLIPSIS), 1)
    cut = text[: room + 1].rsplit(" ", 1)[0] if " " in text[: room + 1] else text[:room]
    return cut[:room].rstrip(" ,;:-–—(") + ELLIPSIS


def summary(text: str, width: int) -> str:
    """A docstring's first paragraph, plain and shortened to ``width`` characters."""
    return shorten(first_paragraph(text), width)


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """``"did you mean 'X'?"`` naming the closest known name, or None if none is close.

    Case is ignored when matching (``textencode`` finds ``TextEncode``), as people mistype it;
    only the best match is named, so the hint stays a hint and not a list.
    """
    by_folded: dict[str, str] = {}
    for candidate in known:
        by_folded.setdefault(candidate.casefold(), candidate)
    matches = difflib.get_close_matches(name.casefold(), list(by_folded), n=1, cutoff=0.6)
    return f"did you mean {by_folded[matches[0]]!r}?" if matches else None


def with_suggestion(message: str, name: str, known: Iterable[str]) -> str:
    """``message`` followed by ``; did you mean 'X'?`` when a known name is close to ``name``."""
    hint = did_you_mean(name, known)
    return f"{message}; {hint}" if hint else message
