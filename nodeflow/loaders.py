"""Loaders plugins provide for their own file formats and model kinds (``nodeflow_loaders``).

A format is read by one function, registered once, whichever node needs it: a plugin adding a
``.cube`` colour table reader makes every node that takes a LUT file able to read it, and a second
plugin claiming ``.cube`` is refused naming both rather than silently winning by load order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

Loader = Callable[..., Any]


class LoaderConflict(ValueError):
    """Two plugins register a loader under the same suffix or kind."""


@dataclass
class LoaderRegistry:
    """Loaders keyed by file suffix (``".cube"``, lower case) or kind (``"upscale_model"``)."""

    loaders: dict[str, Loader] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    def add_all(self, loaders: Mapping[str, Loader], plugin: str) -> None:
        """Add a plugin's loaders, all or none (a conflict on one key adds none of them)."""
        if not isinstance(loaders, Mapping):
            raise TypeError(f"nodeflow_loaders must return a mapping, not {loaders!r}")
        staged = LoaderRegistry(dict(self.loaders), dict(self.owners))
        for key, loader in loaders.items():
            staged.add(key, loader, plugin)
        self.loaders, self.owners = staged.loaders, staged.owners

    def add(self, key: str, loader: Loader, plugin: str) -> None:
        if not isinstance(key, str) or not key.strip(".") or not callable(loader):
            raise TypeError(f"loader {key!r}: need a suffix or kind name and a callable")
        key = _normalise(key)
        owner = self.owners.get(key)
        if owner is not None:
            raise LoaderConflict(
                f"loader {key!r} from plugin {plugin!r} is already provided by plugin {owner!r}; "
                "the second one was refused"
            )
        self.loaders[key] = loader
        self.owners[key] = plugin

    def get(self, key: str) -> Loader | None:
        """The loader for a kind or a suffix, or None."""
        return self.loaders.get(_normalise(key))

    def for_path(self, path: str | PurePath) -> Loader:
        """The loader for a file, by its longest registered suffix (``.tar.gz`` before ``.gz``).

        Raises ``LookupError`` naming the suffixes there are loaders for, so a node's error tells
        the user which plugin format it expected.
        """
        suffixes = PurePath(path).suffixes
        for start in range(len(suffixes)):
            loader = self.loaders.get("".join(suffixes[start:]).lower())
            if loader is not None:
                return loader
        known = ", ".join(sorted(k for k in self.loaders if k.startswith("."))) or "none"
        raise LookupError(f"no loader for {PurePath(path).name!r} (loaders for: {known})")

    def __contains__(self, key: str) -> bool:
        return _normalise(key) in self.loaders

    def __iter__(self) -> Iterator[str]:
        return iter(self.loaders)

    def to_json(self) -> dict[str, str]:
        return dict(sorted(self.owners.items()))


def _normalise(key: str) -> str:
    return key.lower() if key.startswith(".") else key
