"""The real CLIP BPE tokenizer data, shipped with the package so nothing is fetched from a hub.

Single-file checkpoints carry weights only; a loader must bring the tokenizer itself. CLIP's BPE
merges ship here as ``assets/clip/bpe_simple_vocab_16e6.txt.gz``, copied unchanged from the
open-clip-torch 3.3.0 wheel on PyPI (MIT licence, see ``assets/clip/LICENSE-open_clip``; the file
originates from OpenAI's CLIP repository, also MIT). The vocabulary is derived from the merges
exactly as CLIP's ``SimpleTokenizer`` derives it: the 256 byte characters, the same with ``</w>``,
one entry per merge, then the two special tokens, 49,408 entries in all. The files written here are
byte-for-byte what ``openai/clip-vit-large-patch14`` has on the hub, in the format
``transformers.CLIPTokenizer`` reads.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path

BPE_FILE = Path(__file__).parent / "assets" / "clip" / "bpe_simple_vocab_16e6.txt.gz"
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
MODEL_MAX_LENGTH = 77
VOCAB_SIZE = 49408
MERGE_COUNT = VOCAB_SIZE - 2 * 256 - 2
"""CLIP uses the first 48,894 merges of the file, so that the vocabulary has 49,408 entries."""


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


@cache
def clip_merges() -> tuple[tuple[str, str], ...]:
    lines = gzip.decompress(BPE_FILE.read_bytes()).decode("utf-8").split("\n")
    # Line 1 is a version header; CLIP takes the next MERGE_COUNT lines.
    merges = tuple(tuple(line.split()) for line in lines[1 : MERGE_COUNT + 1])
    return merges  # type: ignore[return-value]


@cache
def clip_vocab() -> dict[str, int]:
    byte_chars = list(bytes_to_unicode().values())
    tokens = [*byte_chars, *(char + END_OF_WORD for char in byte_chars)]
    tokens += ["".join(pair) for pair in clip_merges()]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def write_clip_tokenizer(path: str | Path, *, pad_token: str = EOS_TOKEN) -> dict[str, int]:
    """Write a CLIP tokenizer (``vocab.json``, ``merges.txt`` and its two configs) to ``path``.

    ``pad_token`` is ``<|endoftext|>`` for Stable Diffusion 1.x and ``!`` for the OpenCLIP
    tokenizers of SD 2.x and SDXL's second encoder. Returns the vocabulary.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = clip_vocab()
    with open(path / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(path / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{left} {right}\n" for left, right in clip_merges())
    special_tokens = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": pad_token,
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


@cache
def clip_tokenizer(pad_token: str = EOS_TOKEN) -> object:
    """A ``CLIPTokenizer`` built from the shipped data (once per process and pad token)."""
    import tempfile

    from nodes import hf

    with tempfile.TemporaryDirectory(prefix="nodeflow-clip-") as folder:
        write_clip_tokenizer(folder, pad_token=pad_token)
        return hf.transformers().CLIPTokenizer.from_pretrained(folder, local_files_only=True)
