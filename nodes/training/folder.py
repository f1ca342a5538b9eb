"""Reading a folder of captioned pictures into a ``Dataset``, checking all of it first.

Two caption layouts are read, the common ones:

* a ``.txt`` file beside each picture, same stem (kohya's and most trainers' layout);
* a ``metadata.jsonl`` in the folder, one JSON object a line with ``file_name`` (relative to the
  folder) and ``text``, as Hugging Face's ``imagefolder`` loader reads it.

With a ``metadata.jsonl`` present it is the whole truth (pictures it does not name are not
training data); otherwise every picture needs its ``.txt``. Every problem (a picture that does
not decode, a missing or empty caption, a ``file_name`` that is missing or leaves the folder, a
bad line) is collected and reported together, each by file name, before any training starts: a
training run that dies an hour in on file 900 is the failure this prevents.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from nodes.paths import PathOutsideFolder, contained
from nodes.training.dataset import Dataset, square

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
METADATA = "metadata.jsonl"
SHOWN = 20


class DatasetProblems(ValueError):
    """Every problem found in a dataset folder, each naming its file."""

    def __init__(self, folder: Path, problems: list[str]) -> None:
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:SHOWN])
        more = f"\n  ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        super().__init__(f"dataset {folder}: {len(problems)} problem(s)\n{shown}{more}")


def _read_metadata(folder: Path, problems: list[str]) -> list[tuple[str, str]]:
    """``(file_name, text)`` pairs of ``metadata.jsonl``; bad lines go to ``problems``."""
    pairs: list[tuple[str, str]] = []
    lines = (folder / METADATA).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{METADATA} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not JSON ({exc.msg})")
            continue
        name, text = (
            (record.get("file_name"), record.get("text"))
            if isinstance(record, dict)
            else (None, None)
        )
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: no file_name")
            continue
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{name}: no caption ({where} has no text)")
            continue
        pairs.append((name, text.strip()))
    return pairs


def _txt_captions(folder: Path, problems: list[str]) -> list[tuple[str, str]]:
    """``(file_name, caption)`` for every picture in ``folder`` (sorted), from its ``.txt``."""
    pairs: list[tuple[str, str]] = []
    pictures = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    for picture in pictures:
        name = picture.relative_to(folder).as_posix()
        caption_file = picture.with_suffix(".txt")
        if not caption_file.is_file():
            problems.append(f"{name}: no caption ({caption_file.name} is missing)")
            continue
        text = caption_file.read_text(encoding="utf-8").strip()
        if not text:
            problems.append(f"{name}: no caption ({caption_file.name} is empty)")
            continue
        pairs.append((name, text))
    return pairs


def read_image_folder(folder: Path, size: int) -> Dataset:
    """Every captioned picture of ``folder``, squared to ``size``; raises ``DatasetProblems``
    naming every bad file at once."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    if not folder.is_dir():
        raise FileNotFoundError(f"no dataset folder {folder}")
    problems: list[str] = []
    has_metadata = (folder / METADATA).is_file()
    pairs = _read_metadata(folder, problems) if has_metadata else _txt_captions(folder, problems)
    pictures, captions = [], []
    digest = hashlib.sha256()
    for name, text in pairs:
        try:
            path = contained(folder, name)
            if Path(name).is_absolute():
                raise PathOutsideFolder(f"{name!r} is absolute")
        except PathOutsideFolder:
            problems.append(f"{name}: outside the dataset folder")
            continue
        if not path.is_file():
            problems.append(f"{name}: no such picture")
            continue
        try:
            with PILImage.open(path) as opened:
                opened.load()
                picture = square(opened, size)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            problems.append(f"{name}: not a readable image ({type(exc).__name__}: {exc})")
            continue
        pictures.append(picture)
        captions.append(text)
        stat = path.stat()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\0{text}\n".encode())
    if problems:
        raise DatasetProblems(folder, problems)
    if not pictures:
        raise DatasetProblems(folder, ["no captioned pictures (.png, .jpg, .webp, .bmp)"])
    identity = f"folder:{folder.name}:{size}:{digest.hexdigest()[:16]}"
    return Dataset(tuple(pictures), tuple(captions), size, identity)


def folder_fingerprint(folder: Path) -> list[tuple[str, int, int]]:
    """Every file's (name, size, mtime) under ``folder``: what enters the loader's cache key, so
    an added picture or an edited caption makes the dataset load again."""
    if not folder.is_dir():
        return []
    return [
        (p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]
