"""Words to tokens, and how an edited prompt's tokens line up with the source prompt's.

The CLIP tokenizer splits words into BPE tokens, so "a word" in a prompt-to-prompt edit is a list
of token positions (position 0 is the start token). Two alignments, as in the paper
(Hertz et al. 2022, section 3.2 and its ``seq_aligner``), written here as matrices
``[source tokens, edit tokens]`` so that an edit's attention is ``source probs @ M``:

* replace (word swap): the prompts have the same number of words; word ``i`` of the source maps to
  word ``i`` of the edit. Same token count: one to one. Different counts: every source token of
  the word spreads evenly over the edit word's tokens, so the word's attention mass is kept.
* refine (words added or changed): a global alignment (Needleman-Wunsch: match +1, mismatch -1,
  gap 0) of the token sequences; an edit token aligned to a source token takes the source's
  attention (weight 1), an unaligned one keeps its own (``alphas`` 0 there).
"""

from __future__ import annotations

from typing import Any

__all__ = ["identity_mapper", "refinement_mapper", "replacement_mapper", "word_positions"]


def _length(tokenizer: Any) -> int:
    return int(tokenizer.model_max_length)


def _ids(tokenizer: Any, text: str) -> list[int]:
    """The prompt's token ids with start and end tokens, truncated as the encoder truncates."""
    return list(tokenizer(text, truncation=True, max_length=_length(tokenizer)).input_ids)


def _word_ids(tokenizer: Any, word: str) -> list[int]:
    return list(tokenizer(word, add_special_tokens=False).input_ids)


def word_positions(tokenizer: Any, text: str) -> list[tuple[str, list[int]]]:
    """Each whitespace-separated word of ``text`` with its token positions in the encoded prompt.

    Words are tokenized one by one and laid end to end after the start token; this is the
    tokenizer's own split of the whole prompt for the plain captions nodes take (CLIP splits on
    whitespace and punctuation first), and it is checked against it.
    """
    ids = _ids(tokenizer, text)
    limit = len(ids) - 1  # the end token
    words, position = [], 1
    for word in text.split():
        pieces = _word_ids(tokenizer, word)
        positions = [p for p in range(position, position + len(pieces)) if p < limit]
        if [ids[p] for p in positions] != pieces[: len(positions)]:
            raise ValueError(f"cannot locate the tokens of {word!r} in {text!r}")
        words.append((word, positions))
        position += len(pieces)
    return words


def positions_of(tokenizer: Any, text: str, words: str) -> list[int]:
    """The token positions of every occurrence of each of ``words`` (space or comma separated)
    in ``text``; a word that does not occur is an error, as an edit on it would do nothing."""
    wanted = [w for w in words.replace(",", " ").split() if w]
    found = word_positions(tokenizer, text)
    positions: list[int] = []
    for word in wanted:
        hits = [p for w, ps in found if w.lower() == word.lower() for p in ps]
        if not hits:
            raise ValueError(f"{word!r} is not a word of {text!r}")
        positions.extend(hits)
    return sorted(set(positions))


def identity_mapper(tokenizer: Any) -> Any:
    import torch

    return torch.eye(_length(tokenizer))


def replacement_mapper(tokenizer: Any, source: str, edit: str) -> Any:
    """The word-swap matrix [tokens, tokens]; the prompts must have the same number of words."""
    import torch

    length = _length(tokenizer)
    source_words = word_positions(tokenizer, source)
    edit_words = word_positions(tokenizer, edit)
    if len(source_words) != len(edit_words):
        raise ValueError(
            f"replace swaps words one for one, but {source!r} has {len(source_words)} words and "
            f"{edit!r} has {len(edit_words)}; use refine to add or remove words"
        )
    mapper = torch.zeros(length, length)
    mapper[0, 0] = 1.0
    for (_, from_positions), (_, to_positions) in zip(source_words, edit_words, strict=True):
        if len(from_positions) == len(to_positions):
            for s, t in zip(from_positions, to_positions, strict=True):
                mapper[s, t] = 1.0
        elif from_positions and to_positions:
            for t in to_positions:
                mapper[from_positions, t] = 1.0 / len(to_positions)
    s = 1 + sum(len(p) for _, p in source_words)
    t = 1 + sum(len(p) for _, p in edit_words)
    while s < length and t < length:  # the end token and the padding, in order
        mapper[s, t] = 1.0
        s, t = s + 1, t + 1
    return mapper


def _align(source: list[int], edit: list[int]) -> list[int]:
    """For each edit token, the aligned source index or -1 (global alignment, gap 0, match 1,
    mismatch -1: a changed token is rather a gap than a mismatch)."""
    rows, cols = len(source) + 1, len(edit) + 1
    score = [[0] * cols for _ in range(rows)]
    move = [[0] * cols for _ in range(rows)]  # 1 diagonal, 2 up (skip source), 3 left (skip edit)
    for i in range(1, rows):
        move[i][0] = 2
    for j in range(1, cols):
        move[0][j] = 3
    for i in range(1, rows):
        for j in range(1, cols):
            diagonal = score[i - 1][j - 1] + (1 if source[i - 1] == edit[j - 1] else -1)
            up, left = score[i - 1][j], score[i][j - 1]
            best = max(diagonal, up, left)
            score[i][j] = best
            move[i][j] = 1 if best == diagonal else 2 if best == up else 3
    aligned = [-1] * len(edit)
    i, j = len(source), len(edit)
    while i > 0 or j > 0:
        if move[i][j] == 1:
            i, j = i - 1, j - 1
            aligned[j] = i
        elif move[i][j] == 2:
            i -= 1
        else:
            j -= 1
    return aligned


def refinement_mapper(tokenizer: Any, source: str, edit: str) -> tuple[Any, Any]:
    """(matrix [tokens, tokens], alphas [tokens]) for a refinement: an aligned edit token ``t``
    takes source token ``s``'s attention (``matrix[s, t] = 1``, ``alphas[t] = 1``); an added
    one keeps its own (``alphas[t] = 0``). Padding after the end token maps in order."""
    import torch

    length = _length(tokenizer)
    source_ids, edit_ids = _ids(tokenizer, source), _ids(tokenizer, edit)
    aligned = _align(source_ids, edit_ids)
    mapper = torch.zeros(length, length)
    alphas = torch.ones(length)
    for t, s in enumerate(aligned):
        if s < 0:
            alphas[t] = 0.0
        else:
            mapper[s, t] = 1.0
    for t in range(len(edit_ids), length):
        s = len(source_ids) + t - len(edit_ids)
        if 0 <= s < length:
            mapper[s, t] = 1.0
        else:
            alphas[t] = 0.0
    return mapper, alphas
