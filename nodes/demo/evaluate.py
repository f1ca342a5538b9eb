"""Rule-based prompt adherence: what a picture of a ``nodes.demo.dataset`` scene shows.

Prompt adherence is measured without a second model (a classifier would need training and its own
validation) by reading the picture with fixed rules over the dataset's known palette and
geometry. ``analyze`` reads a picture on its own; ``score`` compares that with a scene. Because the
renderer and these rules are written independently (area-antialiased drawing vs. thresholds and
connected components), the evaluator scoring the renderer's own pictures ~100% correct checks both.

The rules, for a 64x64 picture:

* background: the per-channel median of the two-pixel border, mapped to the nearest palette color
  (a median ignores a shape touching the edge);
* foreground: pixels farther than ``FOREGROUND_DISTANCE`` from the measured background, i.e. more
  than about half-way to any other palette color;
* color: the most common nearest palette color among the shape's core pixels, those nearly as far
  from the background as any (antialiased edges blend into other palette colors);
* objects: 8-connected foreground components of at least ``MIN_AREA_FRACTION`` of the largest;
* shape: each object's area, holes filled, over its bounding box: triangle 0.5, circle pi/4,
  square 1 (majority over objects);
* size: the largest object's bounding-box extent against the two sizes' midpoint;
* position (one object): its bounding-box center, against the image center;
* style (``outline_score``): the fraction of the filled objects' area that is background inside
  them: ~0 for filled shapes, ~0.3-0.6 for the outlined style.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from nodes.demo.dataset import COLORS, EXTENT, IMAGE_SIZE, PALETTE, Scene

__all__ = ["Analysis", "analyze", "foreground_mask", "score", "to_rgb_array"]

PALETTE_ARRAY = np.array([PALETTE[c] for c in COLORS], dtype=np.float32)
FOREGROUND_DISTANCE = 45.0
"""About half the closest palette pair's distance (orange-yellow, 87)."""
CORE_FRACTION = 0.75
"""Pixels at least this fraction of the (98th percentile) distance from the background vote."""
MIN_AREA_FRACTION = 0.15
"""Specks smaller than this fraction of the largest object are noise, not objects."""
FILL_RATIO_BOUNDS = (0.64, 0.89)
"""Triangle below the first, square above the second, circle between (0.5, 0.785, 1.0)."""
OUTLINE_THRESHOLD = 0.12
"""An outline score above this reads as the outlined style."""
CENTER_TOLERANCE = 8.0


@dataclass(frozen=True)
class Analysis:
    """What a picture shows, read by rule; fields are None where nothing could be read."""

    background: str
    color: str | None
    shape: str | None
    count: int
    size: str | None
    position: str | None
    outline_score: float
    fill_ratios: tuple[float, ...]

    @property
    def style(self) -> str:
        return "outlined" if self.outline_score > OUTLINE_THRESHOLD else "plain"


def to_rgb_array(image: Any) -> np.ndarray:
    """A float32 HxWx3 array in 0..255 from a PIL image, a uint8 array, or a float array in 0..1
    (HWC or CHW), which is what a pipeline or a ``VAEDecode`` node returns."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    array = np.asarray(image)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"expected one RGB picture, got shape {array.shape}")
    if array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    if array.dtype.kind == "f":
        return np.clip(array.astype(np.float32) * 255.0, 0, 255)
    return array.astype(np.float32)


def _nearest(colors: np.ndarray) -> np.ndarray:
    """Index of the nearest palette color for each row of an Nx3 array."""
    distances = np.linalg.norm(colors[:, None, :] - PALETTE_ARRAY[None, :, :], axis=-1)
    return distances.argmin(axis=1)


def _shape_of(ratio: float) -> str:
    low, high = FILL_RATIO_BOUNDS
    return "triangle" if ratio < low else "circle" if ratio < high else "square"


def _measured_background(rgb: np.ndarray) -> np.ndarray:
    border = np.concatenate(
        [
            rgb[:2].reshape(-1, 3),
            rgb[-2:].reshape(-1, 3),
            rgb[:, :2].reshape(-1, 3),
            rgb[:, -2:].reshape(-1, 3),
        ]
    )
    return np.median(border, axis=0)


def foreground_mask(image: Any) -> np.ndarray:
    """The shapes' pixels (bool [height, width]) by the same rule ``analyze`` reads them with:
    farther than ``FOREGROUND_DISTANCE`` from the measured background."""
    rgb = to_rgb_array(image)
    return np.linalg.norm(rgb - _measured_background(rgb), axis=-1) > FOREGROUND_DISTANCE


def analyze(image: Any) -> Analysis:
    """Read a 64x64 (or any size, judged relative to 64) picture of a scene by rule."""
    rgb = to_rgb_array(image)
    height, width, _ = rgb.shape
    scale = max(height, width) / IMAGE_SIZE
    measured = _measured_background(rgb)
    background_index = int(_nearest(measured[None])[0])
    foreground = np.linalg.norm(rgb - measured, axis=-1) > FOREGROUND_DISTANCE

    color = None
    if foreground.any():
        # Antialiased edges blend the shape's color with the background's into a third palette
        # color (red over yellow reads orange), and thin outlines are mostly edge: vote only with
        # the shape's core, the pixels nearly as far from the background as any.
        distance = np.linalg.norm(rgb - measured, axis=-1)
        core = foreground & (distance >= CORE_FRACTION * np.percentile(distance[foreground], 98))
        counts = Counter(int(i) for i in _nearest(rgb[core]) if i != background_index)
        if counts:
            color = COLORS[counts.most_common(1)[0][0]]

    labels, found = ndimage.label(foreground, structure=np.ones((3, 3), dtype=bool))
    objects = ndimage.find_objects(labels)
    filled = [ndimage.binary_fill_holes(labels[box] == i + 1) for i, box in enumerate(objects)]
    areas = [int(f.sum()) for f in filled]
    keep = [i for i in range(found) if areas[i] >= MIN_AREA_FRACTION * max(areas)]
    if not keep:
        return Analysis(COLORS[background_index], color, None, 0, None, None, 0.0, ())

    ratios = tuple(areas[i] / filled[i].size for i in keep)
    shape = Counter(_shape_of(r) for r in ratios).most_common(1)[0][0]
    largest = max(keep, key=lambda i: areas[i])
    box = objects[largest]
    extent = max(box[0].stop - box[0].start, box[1].stop - box[1].start) / scale
    size = "large" if extent > (EXTENT["small"] + EXTENT["large"]) / 2 else "small"

    position = None
    if len(keep) == 1:
        cy = (box[0].start + box[0].stop) / 2 / scale - IMAGE_SIZE / 2
        cx = (box[1].start + box[1].stop) / 2 / scale - IMAGE_SIZE / 2
        if max(abs(cx), abs(cy)) < CENTER_TOLERANCE:
            position = "center"
        elif abs(cx) > abs(cy):
            position = "left" if cx < 0 else "right"
        else:
            position = "top" if cy < 0 else "bottom"

    holes = sum(areas[i] - int((labels[objects[i]] == i + 1).sum()) for i in keep)
    outline = holes / sum(areas[i] for i in keep)
    return Analysis(
        COLORS[background_index], color, shape, len(keep), size, position, outline, ratios
    )


def score(image: Any, scene: Scene) -> dict[str, Any]:
    """How well a picture follows ``scene``'s caption: per-attribute ``*_ok`` flags and the reading.

    ``position_ok`` is None when the caption names no position. ``caption_ok`` is every claim the
    caption makes (background, color, shape, count, size, position where named); the style is
    judged separately (``style_ok``), since the caption does not name it.
    """
    found = analyze(image)
    checks: dict[str, bool | None] = {
        "background_ok": found.background == scene.background,
        "color_ok": found.color == scene.color,
        "shape_ok": found.shape == scene.shape,
        "count_ok": found.count == scene.count,
        "size_ok": found.size == scene.size,
        "position_ok": None if scene.position is None else found.position == scene.position,
    }
    caption_ok = all(v for v in checks.values() if v is not None)
    result: dict[str, Any] = {f"found_{k}": v for k, v in asdict(found).items()}
    result |= checks
    result |= {
        "shape_and_color_ok": bool(checks["shape_ok"] and checks["color_ok"]),
        "caption_ok": caption_ok,
        "style": found.style,
        "style_ok": found.style == scene.style,
        "outline_score": found.outline_score,
    }
    return result
