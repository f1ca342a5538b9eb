"""Content-addressed cache keys and the in-memory output cache.

A node's key is a Merkle hash: sha256 over canonical JSON of its type, version, widget values,
the keys (and output names) of the nodes that feed it, and its fingerprint of outside state. Equal
keys mean equal results, in this process or the next, so an unchanged node never runs twice and a
changed one invalidates exactly its descendants.
"""

from __future__ import annotations

import enum
import hashlib
import json
import sys
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import PurePath
from typing import Any


def _canonical(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_canonical(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def cache_key(
    node_type: str,
    version: int,
    values: Mapping[str, Any],
    linked: Mapping[str, tuple[str, str]],
    fingerprint: Any = None,
) -> str:
    """``linked`` maps each linked input name to (source node's key, source output name)."""
    document = [
        node_type,
        version,
        _canonical(values),
        {name: list(source) for name, source in sorted(linked.items())},
        _canonical(fingerprint),
    ]
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def estimate_nbytes(value: Any, _depth: int = 0) -> int:
    """Roughly how much memory a node result holds, counting tensor and array storage.

    A value may say for itself with ``__nodeflow_nbytes__()`` (a model handle returns ~0: the
    model manager, not the output cache, owns loaded weights).
    """
    if _depth > 6:
        return 0
    own = getattr(value, "__nodeflow_nbytes__", None)
    if callable(own):
        return int(own())
    if hasattr(value, "element_size") and hasattr(value, "nelement"):  # torch.Tensor
        return int(value.element_size() * value.nelement())
    nbytes = getattr(value, "nbytes", None)  # numpy arrays
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, Mapping):
        return sum(estimate_nbytes(v, _depth + 1) for v in value.values()) + 64
    if isinstance(value, list | tuple):
        return sum(estimate_nbytes(v, _depth + 1) for v in value) + 56
    if is_dataclass(value) and not isinstance(value, type):
        return sum(estimate_nbytes(getattr(value, f.name), _depth + 1) for f in fields(value))
    if hasattr(value, "size") and hasattr(value, "mode"):  # PIL image
        width, height = value.size
        return width * height * len(value.getbands())
    return sys.getsizeof(value)


class OutputCache:
    """An LRU of node results by cache key, bounded by an estimated byte budget.

    A result bigger than the whole budget is not kept. ``max_bytes=0`` turns caching off.
    """

    def __init__(self, max_bytes: int = 2 * 1024**3) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: str, outputs: dict[str, Any]) -> None:
        if self.max_bytes <= 0:
            return
        size = estimate_nbytes(outputs)
        if size > self.max_bytes:
            return
        if key in self._entries:
            self.nbytes -= self._entries.pop(key)[1]
        self._entries[key] = (outputs, size)
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.nbytes -= evicted

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0
