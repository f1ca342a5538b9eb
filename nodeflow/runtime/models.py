"""The model manager: a model file is loaded once per process and shared by every node and run.

Models are keyed by what identifies their bytes (resolved path, size, mtime) plus how they were
loaded (dtype, device), so editing a file on disk loads the new one, while two nodes (or two
runs) naming the same file share one copy of its weights. Loaded models are owned here, not by
the output cache, whose budget they would otherwise blow.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def file_identity(path: str | Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime_ns) of a file, or of a folder's newest file."""
    path = Path(path).resolve()
    if path.is_dir():
        size, mtime = 0, 0
        for root, _, files in os.walk(path):
            for name in files:
                stat = os.stat(os.path.join(root, name))
                size += stat.st_size
                mtime = max(mtime, stat.st_mtime_ns)
        return str(path), size, mtime
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


class ModelManager:
    def __init__(self) -> None:
        self._models: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0
        """How many times a loader actually ran (tests assert sharing with it)."""

    def get(self, key: Hashable, loader: Callable[[], T]) -> T:
        """The model under ``key``, loading it with ``loader()`` the first time."""
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        model = loader()
        with self._lock:
            self.loads += 1
            self._models[key] = model
            return model

    def __len__(self) -> int:
        return len(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
