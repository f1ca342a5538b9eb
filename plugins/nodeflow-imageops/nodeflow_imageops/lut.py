"""3D colour lookup tables in the ``.cube`` format (Adobe/Resolve), and a node applying them.

A format of the plugin's own: the reader is registered through ``nodeflow_loaders`` under
``".cube"``, and ``ApplyLUT`` finds it through ``ctx.loaders``, so another plugin's node taking a
LUT file reads it with the same function, and a second ``.cube`` reader would be refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from nodeflow import Context, Environment, FileKind, Widget, node
from nodeflow.runtime.models import file_identity
from nodes.types import Image

BUNDLED = Path(__file__).parent / "luts"
"""LUTs shipped with the plugin, so examples run as shipped (``warm.cube``)."""


@dataclass(frozen=True, eq=False)
class Lut3D:
    """A cube of output colours: ``table[b, g, r]`` (red varies fastest, as in the file)."""

    table: Any
    """float tensor [size, size, size, 3]"""
    title: str = ""
    domain_min: tuple[float, float, float] = (0.0, 0.0, 0.0)
    domain_max: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def size(self) -> int:
        return int(self.table.shape[0])


def load_cube(path: str | Path) -> Lut3D:
    """Read a ``.cube`` file (3D tables only; ``LUT_1D_SIZE`` files are refused by name)."""
    import torch

    size, title, values = None, "", []
    domain_min, domain_max = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        keyword, _, rest = line.partition(" ")
        if keyword == "TITLE":
            title = rest.strip().strip('"')
        elif keyword == "LUT_3D_SIZE":
            size = int(rest)
        elif keyword == "LUT_1D_SIZE":
            raise ValueError(f"{path}: 1D LUTs are not supported, only LUT_3D_SIZE")
        elif keyword in ("DOMAIN_MIN", "DOMAIN_MAX"):
            triple = tuple(float(v) for v in rest.split())
            domain_min, domain_max = (
                (triple, domain_max) if keyword == "DOMAIN_MIN" else (domain_min, triple)
            )
        else:
            try:
                values.append([float(v) for v in line.split()])
            except ValueError:
                raise ValueError(f"{path}:{number}: unexpected line {raw!r}") from None
            if len(values[-1]) != 3:
                raise ValueError(f"{path}:{number}: expected three numbers, got {raw!r}")
    if size is None or size < 2:
        raise ValueError(f"{path}: no LUT_3D_SIZE (of 2 or more)")
    if len(values) != size**3:
        raise ValueError(f"{path}: LUT_3D_SIZE {size} needs {size**3} rows, found {len(values)}")
    table = torch.tensor(values, dtype=torch.float32).reshape(size, size, size, 3)
    return Lut3D(table, title, domain_min, domain_max)  # type: ignore[arg-type]


def apply(lut: Lut3D, image: Image, strength: float = 1.0) -> Image:
    """Trilinear lookup of every pixel, blended with the original by ``strength``."""
    import torch
    import torch.nn.functional as F

    pixels = image.pixels.float()
    low = torch.tensor(lut.domain_min)
    high = torch.tensor(lut.domain_max)
    coords = ((pixels - low) / (high - low)).clamp(0, 1) * 2 - 1  # (r, g, b) -> grid (x, y, z)
    batch, height, width, _ = pixels.shape
    volume = lut.table.permute(3, 0, 1, 2)[None]  # [1, 3, b, g, r]: depth=b, height=g, width=r
    grid = coords.reshape(1, batch * height * width, 1, 1, 3)
    looked_up = F.grid_sample(volume, grid, mode="bilinear", align_corners=True)
    result = looked_up.reshape(3, batch, height, width).permute(1, 2, 3, 0)
    return Image((pixels + strength * (result - pixels)).clamp(0, 1))


LUTS = FileKind(lambda env: [env.models_dir / "luts", BUNDLED], what="LUT", directories=False)
"""Where ``Widget(files="luts")`` names are found; registered through ``nodeflow_loaders``, so
validation reports a missing LUT before anything runs, and the node looks it up the same way."""


def resolve(path: str, env: Environment) -> Path:
    """``models/luts/<path>``, an absolute path, or one of the plugin's bundled LUTs."""
    found = LUTS.find(path, env)
    if not isinstance(found, Path):
        raise FileNotFoundError(LUTS.missing(path, env))
    return found


def _fingerprint(values: Mapping[str, Any], env: Environment) -> Any:
    return file_identity(resolve(values["path"], env))


@node("ApplyLUT", category="image/color", fingerprint=_fingerprint, display_name="Apply LUT")
def apply_lut(
    ctx: Context,
    image: Image,
    path: Annotated[str, Widget(files="luts")] = "warm.cube",
    strength: Annotated[float, Field(ge=0, le=1)] = 1.0,
) -> Image:
    """Colour-grade pictures with a 3D LUT file (``.cube``) from ``models/luts``."""
    file = resolve(path, ctx.env)
    lut = ctx.loaders.for_path(file)(file)  # the loader registered for the file's suffix
    return apply(lut, image, strength)
