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

import contextlib
import gzip
import hashlib
import json
import logging
import shutil
import tempfile
from functools import cache
from pathlib import Path

from nodes import hf
from nodes.paths import nodeflow_home

log = logging.getLogger(__name__)

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


TOKENIZER_CACHE_FORMAT = 1
"""Bumped when ``write_clip_tokenizer`` writes something else, so older cached copies are unused."""
_MANIFEST = "nodeflow-manifest.json"
_PAD_NAMES = {EOS_TOKEN: "eos", "!": "exclam"}


@cache
def clip_tokenizer(pad_token: str = EOS_TOKEN) -> object:
    """A ``CLIPTokenizer`` from the shipped data (once per process and pad token).

    Building the vocabulary from the merges takes several times longer than reading it back, so
    the files are kept in nodeflow's home (``tokenizers/``, see ``cached_tokenizer_folder``) and
    later processes read them from there.
    """
    tokenizer_class = hf.transformers().CLIPTokenizer
    folder = cached_tokenizer_folder(pad_token)
    if folder is not None:
        try:
            return tokenizer_class.from_pretrained(folder, local_files_only=True)
        except Exception as error:  # the files are as written, so this is not the cache's fault
            log.warning("reading the cached CLIP tokenizer %s failed: %s", folder, error)
    with tempfile.TemporaryDirectory(prefix="nodeflow-clip-") as temporary:
        write_clip_tokenizer(temporary, pad_token=pad_token)
        return tokenizer_class.from_pretrained(temporary, local_files_only=True)


def tokenizer_cache_key(pad_token: str = EOS_TOKEN) -> str:
    """The cached copy's folder name: a hash of the shipped merges file, of the versions of the
    libraries that read the files, of the cache format and of the pad token."""
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256(BPE_FILE.read_bytes())
    for package in ("transformers", "tokenizers"):
        try:
            digest.update(f"{package}={version(package)};".encode())
        except PackageNotFoundError:
            digest.update(f"{package}=none;".encode())
    digest.update(f"format={TOKENIZER_CACHE_FORMAT};pad={pad_token}".encode())
    pad = _PAD_NAMES.get(pad_token, "pad")
    return f"clip-{pad}-{digest.hexdigest()[:20]}"


def cached_tokenizer_folder(pad_token: str = EOS_TOKEN) -> Path | None:
    """The tokenizer files for ``pad_token`` in nodeflow's home, written there first if missing
    or damaged; None if the home folder cannot be written.

    A copy counts only if every file matches the hash its manifest records (the manifest is
    written last, and the folder appears by an atomic rename), so a half-written or corrupt copy
    is rebuilt, never used.
    """
    folder = nodeflow_home() / "tokenizers" / tokenizer_cache_key(pad_token)
    if _intact(folder):
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".making-", dir=folder.parent))
    except OSError as error:
        log.warning("cannot cache the CLIP tokenizer in %s: %s", folder.parent, error)
        return None
    try:
        write_clip_tokenizer(staging, pad_token=pad_token)
        files = sorted(p.name for p in staging.iterdir())
        manifest = {name: _sha256(staging / name) for name in files}
        (staging / _MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if folder.exists() or folder.is_symlink():  # damaged: move it aside, then drop it
            aside = Path(tempfile.mkdtemp(prefix=".damaged-", dir=folder.parent))
            with contextlib.suppress(OSError):  # another process may have replaced it already
                folder.rename(aside / "copy")
            shutil.rmtree(aside, ignore_errors=True)
        with contextlib.suppress(OSError):  # another process may have put its copy there first
            staging.rename(folder)
    except OSError as error:
        log.warning("cannot cache the CLIP tokenizer in %s: %s", folder.parent, error)
        return None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder if _intact(folder) else None


def _intact(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
        return (
            isinstance(manifest, dict)
            and {p.name for p in folder.iterdir()} == {*manifest, _MANIFEST}
            and all(_sha256(folder / name) == digest for name, digest in manifest.items())
        )
    except (OSError, ValueError, TypeError):
        return False


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
