"""ComfyUI's ``extra_model_paths.yaml``: model folders of an existing ComfyUI or A1111 install.

The file has sections (``comfyui:``, ``a111:``, any name), each with an optional ``base_path``
and, per model kind, one folder or several (one per line), relative to ``base_path``; a relative
``base_path`` is relative to the file's folder, and ``~`` and ``$VARS`` are expanded, as ComfyUI
reads it. Kinds keep ComfyUI's names; its renamed ones are found under both names (``unet`` and
``diffusion_models``, ``clip`` and ``text_encoders``). Like ComfyUI, a file named
``extra_model_paths.yaml`` is found by itself: beside the models dir, or in the working folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

FILE_NAME = "extra_model_paths.yaml"
ALIASES = {
    "unet": "diffusion_models",
    "diffusion_models": "unet",
    "clip": "text_encoders",
    "text_encoders": "clip",
}
NOT_FOLDERS = {"base_path", "is_default"}


class ModelPathsInvalid(ValueError):
    """The file cannot be read, or is not in ComfyUI's shape; the message says where."""


def discover(models_dir: Path) -> list[Path]:
    """The ``extra_model_paths.yaml`` files found by themselves (beside the models dir, in the
    working folder), each once."""
    found: list[Path] = []
    for folder in (Path(models_dir).resolve().parent, Path.cwd()):
        candidate = folder / FILE_NAME
        if candidate.is_file() and candidate.resolve() not in found:
            found.append(candidate.resolve())
    return found


def read(path: str | Path) -> dict[str, list[Path]]:
    """Model kind -> its extra folders, in the file's order."""
    import yaml

    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelPathsInvalid(f"{path}: cannot read it: {exc}") from None
    except yaml.YAMLError as exc:
        raise ModelPathsInvalid(f"{path}: not YAML: {exc}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ModelPathsInvalid(f"{path}: expected sections (comfyui:, a111:, ...) at the top")
    folders: dict[str, list[Path]] = {}
    for section, entries in document.items():
        if entries is None:
            continue
        if not isinstance(entries, dict):
            raise ModelPathsInvalid(f"{path}: section {section!r} must map kinds to folders")
        base = _base(entries.get("base_path"), path, section)
        for kind, value in entries.items():
            if kind in NOT_FOLDERS:
                continue
            if not isinstance(kind, str) or not isinstance(value, str):
                raise ModelPathsInvalid(
                    f"{path}: {section}.{kind}: expected folder names (text, one per line)"
                )
            for line in value.splitlines():
                if line.strip():
                    folder = base / _expand(line.strip())
                    for name in (kind, ALIASES.get(kind)):
                        if name and folder not in folders.setdefault(name, []):
                            folders[name].append(folder)
    return folders


def read_all(paths: list[Path]) -> dict[str, list[Path]]:
    merged: dict[str, list[Path]] = {}
    for path in paths:
        for kind, folders in read(path).items():
            merged.setdefault(kind, []).extend(f for f in folders if f not in merged[kind])
    return merged


def _base(value: Any, path: Path, section: Any) -> Path:
    if value is None:
        return path.resolve().parent
    if not isinstance(value, str):
        raise ModelPathsInvalid(f"{path}: {section}.base_path must be a folder name")
    base = Path(_expand(value))
    return base if base.is_absolute() else path.resolve().parent / base


def _expand(text: str) -> str:
    return os.path.expandvars(os.path.expanduser(text))
