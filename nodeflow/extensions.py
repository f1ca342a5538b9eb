"""Editor extensions a plugin ships (``nodeflow_web_extensions``): static files and JS entry points.

The engine only checks and lists them; the server serves the folder at ``/extensions/<plugin>/``
and lists the entry points at ``/api/extensions`` for the editor to load. Checking at load time
means a plugin pointing at a missing folder or script shows up in ``nodeflow plugins`` as a
failure, not as a 404 in somebody's browser console.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any


@dataclass(frozen=True)
class WebExtension:
    """A folder of static files and the JavaScript modules in it the editor should load."""

    static: Path
    scripts: tuple[str, ...] = ()
    """Entry points, relative to ``static`` (``"main.js"``), loaded as ES modules in this order."""
    styles: tuple[str, ...] = ()
    """Stylesheets, relative to ``static``, the editor adds to the page."""
    plugin: str = field(default="", compare=False)

    @classmethod
    def coerce(cls, value: WebExtension | Mapping[str, Any], plugin: str) -> WebExtension:
        """Accept the dataclass or a dict with the same keys; check it is servable."""
        if isinstance(value, Mapping):
            unknown = set(value) - {"static", "scripts", "styles"}
            if unknown:
                raise ValueError(f"unknown web extension keys {sorted(unknown)}")
            value = cls(
                static=Path(value["static"]),
                scripts=tuple(value.get("scripts", ())),
                styles=tuple(value.get("styles", ())),
            )
        if not isinstance(value, WebExtension):
            raise TypeError(f"expected a WebExtension or a dict, not {value!r}")
        static = Path(value.static).resolve()
        if not static.is_dir():
            raise FileNotFoundError(f"web extension folder {static} does not exist")
        for name, suffix in [(s, ".js") for s in value.scripts] + [
            (s, ".css") for s in value.styles
        ]:
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts or relative.suffix != suffix:
                raise ValueError(f"{name!r} must be a relative {suffix} path inside {static}")
            if not (static / relative).is_file():
                raise FileNotFoundError(f"web extension file {static / relative} does not exist")
        return cls(static, tuple(value.scripts), tuple(value.styles), plugin)

    def to_json(self) -> dict[str, Any]:
        base = f"/extensions/{self.plugin}"
        return {
            "plugin": self.plugin,
            "base": f"{base}/",
            "scripts": [f"{base}/{s}" for s in self.scripts],
            "styles": [f"{base}/{s}" for s in self.styles],
        }
