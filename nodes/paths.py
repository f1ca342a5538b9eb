"""Resolving user-given file names inside the run's folders, without escaping them.

A relative name is looked up inside its folder and must stay there (``../`` and symlinks that
point outside are refused); an absolute path is the user's explicit choice and is taken as is.
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_KINDS = (
    "checkpoints",
    "diffusers",
    "loras",
    "vae",
    "unet",
    "diffusion_models",
    "text_encoders",
    "clip",
    "embeddings",
)
"""ComfyUI-compatible subfolders of the models dir, so existing model folders work as they are."""


class PathOutsideFolder(ValueError):
    pass


def contained(folder: Path, name: str) -> Path:
    """``folder / name`` resolved, refusing anything that lands outside ``folder``."""
    if Path(name).is_absolute():
        return Path(name)
    base = folder.resolve()
    path = (base / name).resolve()
    if path != base and base not in path.parents:
        raise PathOutsideFolder(f"{name!r} points outside {base}")
    return path


def nodeflow_home() -> Path:
    """Where nodeflow keeps what it makes for itself (the built-in demo model)."""
    if os.environ.get("NODEFLOW_HOME"):
        return Path(os.environ["NODEFLOW_HOME"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "nodeflow"
