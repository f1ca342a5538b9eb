"""A small CLIP BPE vocabulary, written locally so tiny test models never touch the network.

A real CLIP vocabulary has 49,408 entries and is downloaded from the hub. For a tiny model we only
need the same *format*: the 256 byte-level characters (alone and with the ``</w>`` end-of-word
suffix, so that any text can be encoded byte by byte), a few hundred merges that turn common prompt
words into single tokens, and the two special tokens. The files written here load with
``transformers.CLIPTokenizer.from_pretrained`` exactly like the ones of Stable Diffusion 1.x.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache
from itertools import pairwise
from pathlib import Path

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
MODEL_MAX_LENGTH = 77

# Words that show up in test prompts. Each one becomes a single token, so prompts such as
# "a red circle on a blue background" encode to short sequences, like they would with real CLIP.
PROMPT_WORDS: tuple[str, ...] = (
    # colors
    "red", "green", "blue", "yellow", "black", "white", "orange", "purple", "pink", "brown",
    "gray", "grey", "gold", "silver", "colorful",
    # shapes
    "circle", "square", "triangle", "star", "line", "dot", "shape", "shapes",
    # small words
    "a", "an", "the", "on", "of", "in", "with", "and", "at", "by", "to", "is", "for", "from",
    # sizes and looks
    "large", "small", "big", "little", "tiny", "bright", "dark", "simple", "old", "new", "blurry",
    "sharp", "beautiful", "cute",
    # subjects
    "photo", "picture", "image", "painting", "drawing", "cat", "dog", "bird", "tree", "house",
    "car", "flower", "sky", "sea", "mountain", "background", "portrait", "landscape", "person",
    "man", "woman", "city", "forest", "water", "sun", "moon", "night", "day",
    # style and quality
    "style", "detailed", "high", "quality", "realistic", "art", "digital", "lowres", "ugly",
)  # fmt: skip


@cache
def bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 / CLIP map from each byte to a printable unicode character.

    Byte-level BPE works on these characters instead of raw bytes so that every vocabulary entry
    is a printable string; bytes that are already printable map to themselves.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes), strict=True))


def _word_symbols(word: str) -> tuple[str, ...]:
    """Split a word into the byte-level symbols BPE starts from, the last one marked end-of-word."""
    byte_chars = bytes_to_unicode()
    chars = [byte_chars[byte] for byte in word.encode("utf-8")]
    chars[-1] += END_OF_WORD
    return tuple(chars)


def _merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """Replace every non-overlapping occurrence of ``pair``, left to right, as BPE encoding does."""
    merged: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)


def learn_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Learn BPE merges until every word in ``words`` is a single token.

    This is ordinary BPE training (repeatedly merge the most frequent adjacent pair) run to
    completion on a tiny corpus. Because encoding replays merges in the order they were learned,
    each training word is guaranteed to become exactly one token; hand-written merge chains give
    no such guarantee, since a merge made for one word can pre-empt the chain of another. Ties
    are broken by first occurrence, which keeps the output deterministic.
    """
    corpus = [_word_symbols(word) for word in dict.fromkeys(words)]
    merges: list[tuple[str, str]] = []
    while True:
        counts: Counter[tuple[str, str]] = Counter()
        for symbols in corpus:
            counts.update(pairwise(symbols))
        if not counts:
            return merges
        # Counter.most_common is stable: among equal counts the first pair seen wins.
        pair, _ = counts.most_common(1)[0]
        merges.append(pair)
        corpus = [_merge_pair(symbols, pair) for symbols in corpus]


def build_vocab(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Lay the vocabulary out like CLIP's: bytes, bytes + ``</w>``, merge results, special tokens.

    With this layout the special tokens get the two highest ids, as ``<|startoftext|>`` (49406) and
    ``<|endoftext|>`` (49407) do in the real vocabulary.
    """
    byte_chars = list(bytes_to_unicode().values())
    tokens = [*byte_chars, *(char + END_OF_WORD for char in byte_chars)]
    tokens += ["".join(pair) for pair in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    # Two different merges may produce the same string ("ab"+"c", "a"+"bc"): keep the first id.
    return {token: index for index, token in enumerate(dict.fromkeys(tokens))}


def write_clip_tokenizer(path: str | Path, words: Iterable[str] = PROMPT_WORDS) -> dict[str, int]:
    """Write a CLIP tokenizer (``vocab.json``, ``merges.txt`` and its two configs) to ``path``.

    Returns the vocabulary, so the caller can size the text encoder's embedding table and copy the
    special-token ids into its config.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    merges = learn_merges(words)
    vocab = build_vocab(merges)

    with open(path / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(path / "merges.txt", "w", encoding="utf-8") as f:
        # Readers skip the header line (the slow tokenizer of transformers 4 skips line 1 blindly).
        f.write("#version: 0.2\n")
        f.writelines(f"{left} {right}\n" for left, right in merges)

    # Pad with <|endoftext|>, as Stable Diffusion 1.x does; unknown text cannot occur anyway, since
    # every byte has a token.
    special_tokens = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
    }
    tokenizer_config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        **special_tokens,
    }
    for name, content in (
        ("special_tokens_map.json", special_tokens),
        ("tokenizer_config.json", tokenizer_config),
    ):
        with open(path / name, "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2, sort_keys=True)
            f.write("\n")
    return vocab
