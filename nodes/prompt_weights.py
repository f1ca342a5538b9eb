r"""The prompt weighting syntax of A1111 and ComfyUI, parsed into weighted text.

- ``(words)`` multiplies the weight of ``words`` by 1.1, ``[words]`` by 1/1.1;
- ``(words:1.3)`` multiplies it by 1.3 (spaces around the number are allowed);
- brackets nest and their factors multiply: ``((words:1.3))`` is 1.3 x 1.1;
- ``\(``, ``\)``, ``\[``, ``\]`` and ``\\`` are the literal characters;
- ``BREAK`` (upper case, a word of its own) ends a 75-token chunk of the prompt early.

This is A1111's ``parse_prompt_attention`` behaviour, written afresh. ComfyUI reads the same
syntax except ``[words]`` (literal there) and nested explicit weights (absolute there:
``((a:1.3))`` is 1.3); nodeflow multiplies, as A1111, compel and InvokeAI do.

Malformed brackets are tolerated as A1111 tolerates them: a closing bracket with no opening one
of its kind is a literal character, and a bracket left open weights everything after it. Only
what has no single reading is an error (``PromptSyntaxError``, naming the character):

- brackets that cross, as ``(a [b) c]``: which one ``)`` closes is a guess;
- ``[text:0.5]``: A1111's prompt editing ("switch at step..."), which nodeflow does not do;
- a weight that is no finite number, as ``(a:1.2.3)``.

Weights are exact: ``format_prompt`` writes parsed sections back as text that parses to the same
texts and weights, bit for bit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import NamedTuple

UP = 1.1
DOWN = 1 / 1.1
BREAK_WORD = "BREAK"


class Segment(NamedTuple):
    """A run of prompt text and the weight of every token it makes."""

    text: str
    weight: float


Section = list[Segment]
"""The segments between two ``BREAK``s: each section starts a new 75-token chunk."""


class PromptSyntaxError(ValueError):
    """A prompt whose weighting syntax has no single reading; ``position`` counts from 0."""

    def __init__(self, text: str, position: int, message: str) -> None:
        excerpt = text[max(0, position - 15) : position + 15].replace("\n", " ")
        super().__init__(f"prompt, character {position + 1}: {message} (near {excerpt!r})")
        self.position = position


_TOKEN = re.compile(
    r"""
    (?P<escape>\\[()\[\]\\])
  | (?P<weight>:\s*(?P<number>[+-]?[0-9.]+)\s*(?P<closer>[)\]]))
  | (?P<open>[(\[])
  | (?P<close>[)\]])
  | (?P<text>[^\\()\[\]:]+|[\\:])
    """,
    re.VERBOSE,
)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")
_BREAK = re.compile(rf"\s*\b{BREAK_WORD}\b\s*")
_OPENER = {")": "(", "]": "["}


class _Open(NamedTuple):
    bracket: str
    position: int
    first: int
    """Index of the first part the bracket weights."""


def parse_prompt(text: str) -> list[Section]:
    """The prompt as sections (split at ``BREAK``) of (text, weight) segments.

    Runs of equal weight are merged and empty texts dropped, so a prompt without syntax is one
    section holding one segment of weight 1.0 (or none, for an empty prompt).
    """
    parts: list[list] = []  # [text, weight]
    stack: list[_Open] = []

    def scale(first: int, factor: float, position: int) -> None:
        for part in parts[first:]:
            part[1] *= factor
            if not math.isfinite(part[1]):
                raise PromptSyntaxError(text, position, "the weights multiply to infinity")

    def innermost(closer: str, position: int) -> _Open | None:
        """The bracket ``closer`` closes, None when it closes none (a literal character)."""
        opener = _OPENER[closer]
        if stack and stack[-1].bracket == opener:
            return stack.pop()
        if any(entry.bracket == opener for entry in stack):
            inner = stack[-1]
            raise PromptSyntaxError(
                text,
                position,
                f"'{closer}' would close a '{opener}' across the '{inner.bracket}' opened at "
                f"character {inner.position + 1}; close brackets in order, or escape them "
                rf"as \{opener} \{closer}",
            )
        return None

    for match in _TOKEN.finditer(text):
        position = match.start()
        if match["escape"]:
            parts.append([match["escape"][1], 1.0])
        elif match["open"]:
            stack.append(_Open(match["open"], position, len(parts)))
        elif match["close"]:
            entry = innermost(match["close"], position)
            if entry is None:
                parts.append([match["close"], 1.0])
            else:
                scale(entry.first, UP if entry.bracket == "(" else DOWN, position)
        elif match["weight"]:
            closer_at = match.start("closer")
            entry = innermost(match["closer"], closer_at)
            if entry is None:
                parts.append([match["weight"], 1.0])
            elif entry.bracket == "[":
                raise PromptSyntaxError(
                    text,
                    entry.position,
                    r"'[text:number]' is A1111's prompt editing, which nodeflow does not do; "
                    r"write (text:weight) to weight text, or \[ \] for literal brackets",
                )
            else:
                scale(entry.first, _weight(text, match.start("number"), match["number"]), position)
        else:
            parts.append([match["text"], 1.0])
    for entry in reversed(stack):  # left open: weights everything after it, as A1111 does
        scale(entry.first, UP if entry.bracket == "(" else DOWN, entry.position)
    return _sections(_merged(parts))


def _weight(text: str, position: int, number: str) -> float:
    if not _NUMBER.fullmatch(number):
        raise PromptSyntaxError(text, position, f"the weight {number!r} is not a number")
    weight = float(number)
    if not math.isfinite(weight):
        raise PromptSyntaxError(text, position, f"the weight {number[:20]}... is too large")
    return weight


def _merged(parts: list[list]) -> list[Segment]:
    segments: list[Segment] = []
    for part_text, weight in parts:
        if not part_text:
            continue
        if segments and segments[-1].weight == weight:
            segments[-1] = Segment(segments[-1].text + part_text, segments[-1].weight)
        else:
            segments.append(Segment(part_text, weight))
    return segments


def _sections(segments: list[Segment]) -> list[Section]:
    sections: list[Section] = [[]]
    for segment in segments:
        pieces = _BREAK.split(segment.text)
        for i, piece in enumerate(pieces):
            if i:
                sections.append([])
            if piece:
                sections[-1].append(Segment(piece, segment.weight))
    # Whitespace next to a BREAK makes no token: drop it wherever brackets kept it there.
    for i, section in enumerate(sections):
        if i > 0:
            _strip(section, 0, str.lstrip)
        if i < len(sections) - 1:
            _strip(section, -1, str.rstrip)
    return sections


def _strip(section: Section, end: int, strip: Callable[[str], str]) -> None:
    while section and not (text := strip(section[end].text)):
        section.pop(end)
    if section:
        section[end] = Segment(text, section[end].weight)


def _escape(text: str) -> str:
    return re.sub(r"([\\()\[\]])", r"\\\1", text)


def _number(weight: float) -> str:
    """The shortest digits that read back as exactly ``weight``, without an exponent."""
    return f"{Decimal(repr(weight)):f}"


def format_prompt(sections: list[Section]) -> str:
    """Prompt text that ``parse_prompt`` reads back as ``sections`` (as it returns them)."""
    written = []
    for section in sections:
        written.append(
            "".join(
                _escape(segment.text)
                if segment.weight == 1.0
                else f"({_escape(segment.text)}:{_number(segment.weight)})"
                for segment in section
            )
        )
    return f" {BREAK_WORD} ".join(written)


def plain_text(sections: list[Section]) -> str | None:
    """The prompt's text when it is one section with every weight 1.0, else None."""
    if len(sections) != 1 or any(segment.weight != 1.0 for segment in sections[0]):
        return None
    return "".join(segment.text for segment in sections[0])
