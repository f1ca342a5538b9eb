"""Per-word cross-attention injection windows for prompt-to-prompt.

The paper's code takes ``cross_replace_steps`` either as one fraction or as a dict such as
``{"default_": 0.8, "green": 0.4}`` (``ptp_utils.get_time_words_attention_alpha``): a 0/1 table
``alpha[step, token]`` over the *edited* prompt's tokens, 1 while the step lies in the token's
window, and at every step the edit's cross-attention becomes

    edited = alpha * replace(source probs, edit probs) + (1 - alpha) * edit probs

column by column. A word with a shorter window stops following the source earlier, so it can draw
its own shape while the rest of the prompt still holds the source's layout.

Here the windows are a widget, ``"green:0.4, circle:0.2"`` (word:fraction pairs, commas or
semicolons between them), every other token keeping the global ``cross_steps``. A step counts as
inside a window of fraction ``f`` when its index is below ``int(f * steps)``, as
``nodes.attention_record.in_window`` counts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from nodes.p2p_tokens import positions_of

__all__ = ["WordWindow", "parse_word_windows", "token_windows"]

_ITEM = re.compile(r"[^,;]+")


@dataclass(frozen=True)
class WordWindow:
    """One ``word:fraction`` item of the widget and where it stands in the text (a character
    index, for error messages)."""

    word: str
    fraction: float
    position: int


def parse_word_windows(text: str, widget: str = "word_cross_steps") -> list[WordWindow]:
    """``"green:0.4, circle:0.2"`` -> the items in order. An error names the widget, the item,
    its character position and what is wrong with it: no colon, no word, several words, a
    fraction that is not a number in [0, 1], a word given twice."""
    windows: list[WordWindow] = []
    seen: dict[str, int] = {}
    for match in _ITEM.finditer(text):
        item = match.group()
        if not item.strip():
            continue
        position = match.start() + len(item) - len(item.lstrip())
        where = f"{widget}: {item.strip()!r} at character {position}"
        word, colon, value = item.partition(":")
        word = word.strip()
        if not colon:
            raise ValueError(f"{where}: write word:fraction, e.g. 'green:0.4'")
        if not word:
            raise ValueError(f"{where}: the word before ':' is missing")
        if len(word.split()) > 1:
            raise ValueError(f"{where}: give one word per window, not {word!r}")
        try:
            fraction = float(value)
        except ValueError:
            raise ValueError(
                f"{where}: the window of {word!r} is {value.strip()!r}, not a number"
            ) from None
        if not math.isfinite(fraction) or not 0.0 <= fraction <= 1.0:
            raise ValueError(
                f"{where}: the window of {word!r} is {fraction:g}; give a fraction of the "
                "steps in [0, 1]"
            )
        key = word.lower()
        if key in seen:
            raise ValueError(f"{where}: {word!r} already has a window (at character {seen[key]})")
        seen[key] = position
        windows.append(WordWindow(word, fraction, position))
    return windows


def token_windows(
    tokenizer: Any, edit: str, windows: list[WordWindow], widget: str = "word_cross_steps"
) -> tuple[tuple[tuple[int, ...], float], ...]:
    """Each window as (the token positions of every occurrence of its word in the edited prompt,
    its fraction). A word that is not in the edited prompt is refused: its window would change
    nothing, which is rather a typo than an intent."""
    located = []
    for window in windows:
        try:
            positions = positions_of(tokenizer, edit, window.word)
        except ValueError:
            raise ValueError(
                f"{widget}: {window.word!r} (at character {window.position}) is not a word of "
                f"the edited prompt {edit!r}"
            ) from None
        located.append((tuple(positions), window.fraction))
    return tuple(located)
