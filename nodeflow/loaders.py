"""Loaders plugins provide for their own file formats and model kinds (``nodeflow_loaders``).

A format is read by one function, registered once, whichever node needs it: a plugin adding a
``.cube`` colour table reader makes every node that takes a LUT file able to read it, and a second
plugin claiming ``.cube`` is refused naming both rather than silently winning by load order.

The same hook says where the files a widget picks are found: a ``FileKind`` registered under the
name a ``Widget(files=...)`` gives (``"checkpoints"``, ``"luts"``) lets validation check a chosen
file before anything runs, and name the folders it looked in, without the engine knowing what a
checkpoint is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from nodeflow.plaintext import did_you_mean

if TYPE_CHECKING:
    from nodeflow.context import Environment

Loader = Callable[..., Any]


@dataclass(frozen=True)
class FileKind:
    """Where the names a ``Widget(files=kind)`` picks are found: folders, and built-in names.

    Registered through ``nodeflow_loaders`` under the kind's name. Validation checks each chosen
    name against it, so a missing checkpoint is reported with the workflow's other problems
    (naming the folders searched) instead of failing the run half-way.
    """

    folders: Callable[[Environment], Sequence[Path]]
    """The folders a relative name is looked up in, in order (``env.models_dir / "loras"``, a
    plugin's bundled files); an absolute path is the user's choice and is taken as it is."""
    built_in: Mapping[str, str] = field(default_factory=dict)
    """Names that need no file (the pack's built-in models), each with a one-line description;
    a file of that name in the folders wins, as the nodes resolve it."""
    what: str = "file"
    """What one of them is called in messages: ``no checkpoint 'x' in ...``."""
    directories: bool = True
    """Whether a folder is a valid pick (a diffusers model folder is; a picture or LUT is not)."""

    def find(self, name: str, env: Environment) -> Path | str | None:
        """The file or folder ``name`` picks, the built-in name itself, or None."""
        if not name:
            return None
        try:
            if Path(name).is_absolute():
                return Path(name) if self._usable(Path(name)) else None
            for folder in self.folders(env):
                candidate = _inside(folder, name)
                if candidate is not None and self._usable(candidate):
                    return candidate
        except (OSError, ValueError):  # a name no file system holds (a NUL, far too long)
            return None
        return name if name in self.built_in else None

    def _usable(self, path: Path) -> bool:
        return path.exists() if self.directories else path.is_file()

    def missing(self, name: str, env: Environment) -> str | None:
        """Why ``name`` picks nothing, naming the folders searched; None when it picks something."""
        if self.find(name, env) is not None:
            return None
        if not name:
            return f"no {self.what} chosen"
        if Path(name).is_absolute():
            return f"no {self.what} {name!r}: there is no such file"
        folders = list(self.folders(env))
        try:
            outside = all(_inside(folder, name) is None for folder in folders)
        except (OSError, ValueError) as error:
            return f"no {self.what} {name!r}: not a usable file name ({error})"
        if outside:
            return f"{name!r} is not inside the folders {self.what}s are looked up in"
        message = f"no {self.what} {name!r} in {' or '.join(str(f) for f in folders)}"
        if self.built_in:
            message += f" (built-in: {', '.join(self.built_in)})"
        hint = did_you_mean(name, [*self.built_in, *_names_in(folders)])
        return f"{message}; {hint}" if hint else message


def _inside(folder: Path, name: str) -> Path | None:
    """``folder / name`` resolved (symlinks too), or None if it is not inside ``folder``."""
    base = folder.resolve()
    path = (base / name).resolve()
    return path if base in path.parents else None


def _names_in(folders: Sequence[Path]) -> list[str]:
    """What the folders hold, for suggestions (a missing folder holds nothing)."""
    names: list[str] = []
    for folder in folders:
        try:
            names += [p.name for p in folder.iterdir() if not p.name.startswith(".")]
        except OSError:
            continue
    return names


class LoaderConflict(ValueError):
    """Two plugins register a loader under the same suffix or kind."""


@dataclass
class LoaderRegistry:
    """Loaders keyed by file suffix (``".cube"``, lower case) or kind (``"upscale_model"``), and
    the ``FileKind`` of each kind of file widgets pick (``"checkpoints"``). One key, one owner."""

    loaders: dict[str, Loader] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    file_kinds: dict[str, FileKind] = field(default_factory=dict)

    def add_all(self, loaders: Mapping[str, Loader], plugin: str) -> None:
        """Add a plugin's loaders, all or none (a conflict on one key adds none of them)."""
        if not isinstance(loaders, Mapping):
            raise TypeError(f"nodeflow_loaders must return a mapping, not {loaders!r}")
        staged = LoaderRegistry(dict(self.loaders), dict(self.owners), dict(self.file_kinds))
        for key, loader in loaders.items():
            staged.add(key, loader, plugin)
        self.loaders, self.owners = staged.loaders, staged.owners
        self.file_kinds = staged.file_kinds

    def add(self, key: str, loader: Loader | FileKind, plugin: str) -> None:
        if isinstance(loader, FileKind):
            if not isinstance(key, str) or not key or key.startswith("."):
                raise TypeError(f"file kind {key!r}: need the kind's name, as Widget(files=...)")
        elif not isinstance(key, str) or not key.strip(".") or not callable(loader):
            raise TypeError(f"loader {key!r}: need a suffix or kind name and a callable")
        key = _normalise(key)
        owner = self.owners.get(key)
        if owner is not None:
            raise LoaderConflict(
                f"loader {key!r} from plugin {plugin!r} is already provided by plugin {owner!r}; "
                "the second one was refused"
            )
        if isinstance(loader, FileKind):
            self.file_kinds[key] = loader
        else:
            self.loaders[key] = loader
        self.owners[key] = plugin

    def get(self, key: str) -> Loader | None:
        """The loader for a kind or a suffix, or None."""
        return self.loaders.get(_normalise(key))

    def file_kind(self, kind: str) -> FileKind | None:
        """Where files of a widget's ``files`` kind are found, or None if no plugin says."""
        return self.file_kinds.get(kind)

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
