"""The plugin module the ``imageops`` entry point names: hooks only, the work is elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodeflow import hookimpl
from nodeflow.extensions import WebExtension
from nodeflow_imageops import grid, lut, ops

NODEFLOW_API = 1
"""The nodeflow plugin API this plugin is written for (a nodeflow with another one refuses it)."""


@hookimpl
def nodeflow_nodes() -> list[Any]:
    # registered as imageops.Resize, imageops.Crop, ...: the loader adds the prefix
    return [
        ops.resize,
        ops.crop,
        ops.lanczos_upscale,
        ops.composite,
        grid.image_grid,
        lut.apply_lut,
    ]


@hookimpl
def nodeflow_loaders() -> dict[str, Any]:
    # the .cube reader, and where the LUT files ApplyLUT's widget picks are found
    return {".cube": lut.load_cube, "luts": lut.LUTS}


@hookimpl
def nodeflow_web_extensions() -> WebExtension:
    return WebExtension(static=Path(__file__).parent / "web", scripts=("imageops.js",))
