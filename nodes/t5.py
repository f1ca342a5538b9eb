"""The T5 tokenizer SD3 and Flux read prompts with, shipped with the package and loaded offline.

``nodes/assets/t5_tokenizer/`` holds the T5 / T5 v1.1 SentencePiece vocabulary (32,100 tokens) as
a ``tokenizers`` file (see its PROVENANCE.md and the Apache-2.0 license beside it). A diffusers
folder brings its own ``tokenizer_3`` (SD3) or ``tokenizer_2`` (Flux); single files and the tiny
models use this one, so nothing is fetched from a hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodes import hf

T5_TOKENIZER = Path(__file__).resolve().parent / "assets" / "t5_tokenizer"
T5_MAX_LENGTH = 512
"""The longest prompt, in tokens, that T5 v1.1 was trained on (Flux's default length)."""


def t5_tokenizer() -> Any:
    """The shipped T5 tokenizer (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2; ``</s>`` ends a prompt)."""
    return hf.transformers().T5TokenizerFast(
        tokenizer_file=str(T5_TOKENIZER / "tokenizer.json"),
        model_max_length=T5_MAX_LENGTH,
        extra_ids=0,  # the file already holds the 100 <extra_id_*> sentinels
        legacy=False,
    )


def t5_tokenizer_in(folder: Path) -> Any:
    """The T5 tokenizer saved in ``folder`` (a diffusers model's), else the shipped one."""
    if (folder / "tokenizer.json").is_file() or (folder / "spiece.model").is_file():
        return hf.transformers().T5TokenizerFast.from_pretrained(folder, local_files_only=True)
    return t5_tokenizer()
