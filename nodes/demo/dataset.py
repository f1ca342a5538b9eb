"""A deterministic procedural dataset of simple scenes with exact captions.

The built-in demo model must learn real text-to-image behaviour in about an hour on two CPU cores,
and its prompt adherence must be measurable without a human or a second model. Flat-colored
shapes on a flat background give both: the model has a small, exactly specified world to learn,
and every caption's claims (shape, color, size, count, position, background) can be checked on a
picture by rule (``nodes.demo.evaluate``).

A ``Scene`` fully determines its picture: its ``layout_seed`` fixes the jitter and arrangement, so
``render`` is a pure function and the evaluator can be checked against the renderer. Scenes are
drawn from a ``random.Random``, never from global state, so ``dataset(seed, n)`` is the same on
every machine and Python version (``random.Random`` with an int seed is stable across versions).

Held-out split: a fixed eighth of the (shape, color, background) triples never occur in training
(``is_held_out``), while every pair of those attributes still does, so the benchmark measures
composition of known concepts rather than memorised pictures.

Style: ``style="outlined"`` draws only a thick outline of each shape in the same colors and with
the same caption. The style LoRA is trained on it, so the style comes from the LoRA, not the
prompt, and its strength can be measured by ``evaluate.outline_score``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageDraw

__all__ = [
    "COLORS",
    "COUNTS",
    "IMAGE_SIZE",
    "PALETTE",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "Scene",
    "caption",
    "dataset",
    "is_held_out",
    "render",
    "sample_scene",
]

IMAGE_SIZE = 64
SUPERSAMPLE = 4
"""Shapes are drawn at 4x and box-downsampled: exact area antialiasing, no PIL-version quirks."""

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "purple": (140, 50, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
"""Eight colors at least 85 apart in RGB (orange-yellow is the closest pair), so the nearest
palette color of a pixel is unambiguous even in a blurry generated picture."""
COLORS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")
COUNTS: tuple[int, ...] = (1, 2, 3)
POSITIONS: tuple[str, ...] = ("center", "left", "right", "top", "bottom")
STYLES: tuple[str, ...] = ("plain", "outlined")

EXTENT = {"small": 12, "large": 26}
"""Width and height of a shape's bounding box in pixels (64x64 image)."""
ANCHORS: dict[str, tuple[float, float]] = {
    "center": (32.0, 32.0),
    "left": (17.0, 32.0),
    "right": (47.0, 32.0),
    "top": (32.0, 17.0),
    "bottom": (32.0, 47.0),
}
POSITION_PHRASES = {
    "center": "in the center",
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
POSITION_PROBABILITY = 0.5
"""How often a single shape's caption names its position; otherwise it lies anywhere."""
HELD_OUT_MODULUS = 8

Style = Literal["plain", "outlined"]
Split = Literal["train", "held_out", "all"]


@dataclass(frozen=True)
class Scene:
    """Everything a picture shows; ``render`` and ``caption`` are pure functions of it.

    ``position`` is None when the caption does not say where the shape is (always for two or
    three shapes, which lie in a row or a column). ``layout_seed`` fixes the small random jitter
    and the arrangement, so two scenes that differ only there have the same caption.
    """

    shape: str
    color: str
    background: str
    size: str = "large"
    count: int = 1
    position: str | None = None
    style: Style = "plain"
    layout_seed: int = 0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.color not in PALETTE or self.background not in PALETTE:
            raise ValueError(f"unknown color in {self.color!r}/{self.background!r}")
        if self.color == self.background:
            raise ValueError("a shape's color must differ from the background")
        if self.size not in SIZES or self.count not in COUNTS or self.style not in STYLES:
            raise ValueError(f"bad size/count/style {self.size!r}/{self.count!r}/{self.style!r}")
        if self.count == 3 and self.size == "large":
            raise ValueError("three large shapes do not fit in 64x64")
        if self.position is not None and (self.count != 1 or self.position not in POSITIONS):
            raise ValueError(f"position {self.position!r} is only for a single shape")


def caption(scene: Scene) -> str:
    """The exact caption, e.g. ``"two small yellow squares on a black background"``.

    The style is deliberately not named: the outlined variant keeps the plain captions, so the
    LoRA, not the prompt, carries the style.
    """
    noun = scene.shape + ("s" if scene.count > 1 else "")
    words = [COUNT_WORDS[scene.count], scene.size, scene.color, noun]
    if scene.position is not None:
        words.append(POSITION_PHRASES[scene.position])
    article = "an" if scene.background[0] in "aeiou" else "a"
    words.append(f"on {article} {scene.background} background")
    return " ".join(words)


def is_held_out(scene: Scene) -> bool:
    """Whether the scene's (shape, color, background) triple is reserved for evaluation.

    ``7s + 3c + 5b (mod 8) == 0`` over the attribute indices: for any fixed pair of the three,
    the third attribute's values give distinct residues, so at most one value completes a held-out
    triple and every pair still occurs in training. About one triple in eight is held out.
    """
    s, c, b = SHAPES.index(scene.shape), COLORS.index(scene.color), COLORS.index(scene.background)
    return (7 * s + 3 * c + 5 * b) % HELD_OUT_MODULUS == 0


def _centers(scene: Scene) -> list[tuple[float, float]]:
    """Shape centers in pixels: anchored or uniform for one shape, a row or column for several."""
    rng = random.Random(scene.layout_seed)
    half = EXTENT[scene.size] / 2
    if scene.count == 1:
        if scene.position is None:
            low, high = half + 2, IMAGE_SIZE - half - 2
            return [(rng.uniform(low, high), rng.uniform(low, high))]
        x, y = ANCHORS[scene.position]
        return [(x + rng.uniform(-3, 3), y + rng.uniform(-3, 3))]
    jitter = 1.0 if scene.size == "large" else 2.0
    across = rng.uniform(half + 4, IMAGE_SIZE - half - 4)
    spacing = IMAGE_SIZE / scene.count
    along = [spacing * (i + 0.5) + rng.uniform(-jitter, jitter) for i in range(scene.count)]
    if rng.random() < 0.5:
        return [(a, across) for a in along]
    return [(across, a) for a in along]


def _triangle(cx: float, cy: float, extent: float) -> list[tuple[float, float]]:
    """An upward isosceles triangle filling its extent x extent box (half the box's area)."""
    h = extent / 2
    return [(cx, cy - h), (cx - h, cy + h), (cx + h, cy + h)]


def _inset_triangle(points: list[tuple[float, float]], width: float) -> list[tuple[float, float]]:
    """The triangle whose sides lie ``width`` inside ``points``' sides (scaled about the
    incenter), so an outline has the same thickness on every side."""
    (ax, ay), (bx, by), (cx, cy) = points
    a, b, c = (
        math.dist(points[1], points[2]),
        math.dist(points[0], points[2]),
        math.dist(points[0], points[1]),
    )
    perimeter = a + b + c
    ix, iy = (a * ax + b * bx + c * cx) / perimeter, (a * ay + b * by + c * cy) / perimeter
    area = abs((bx - ax) * (cy - ay) - (cx - ax) * (by - ay)) / 2
    k = max(0.0, 1 - width / (2 * area / perimeter))
    return [(ix + k * (x - ix), iy + k * (y - iy)) for x, y in points]


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, extent: float, fill: tuple
) -> None:
    h = extent / 2
    if shape == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    else:
        draw.polygon(_triangle(cx, cy, extent), fill=fill)


def outline_width(shape: str, size: str) -> float:
    """The outline thickness of the outlined style, in pixels of the 64x64 image.

    A triangle's inscribed circle is far smaller than a circle's or square's of the same extent, so
    its outline is thinner (0.4 of the inradius) to leave a comparable hole (~35% of the area) for
    ``evaluate.outline_score`` to see.
    """
    if shape == "triangle":
        return 0.4 * EXTENT[size] / (1 + 5**0.5)  # inradius of the extent x extent triangle
    return max(2.0, EXTENT[size] / 6)


def render(scene: Scene) -> Image.Image:
    """The scene as a 64x64 RGB picture, antialiased by 4x supersampling."""
    s = SUPERSAMPLE
    canvas = Image.new("RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s), PALETTE[scene.background])
    draw = ImageDraw.Draw(canvas)
    extent = EXTENT[scene.size] * s
    width = outline_width(scene.shape, scene.size) * s
    for x, y in _centers(scene):
        cx, cy = x * s, y * s
        _draw_shape(draw, scene.shape, cx, cy, extent, PALETTE[scene.color])
        if scene.style == "outlined":
            if scene.shape == "triangle":
                inner = _inset_triangle(_triangle(cx, cy, extent), width)
                draw.polygon(inner, fill=PALETTE[scene.background])
            else:
                _draw_shape(
                    draw, scene.shape, cx, cy, extent - 2 * width, PALETTE[scene.background]
                )
    return canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)


def _in_split(scene: Scene, split: Split) -> bool:
    return split == "all" or is_held_out(scene) == (split == "held_out")


def sample_scene(rng: random.Random, *, split: Split = "train", style: Style = "plain") -> Scene:
    """One random scene from ``split``; draws from ``rng`` only, so a seeded rng repeats.

    Counts are uniform, sizes uniform (three shapes are always small), and a single shape names
    its position half the time.
    """
    while True:
        shape = rng.choice(SHAPES)
        color = rng.choice(COLORS)
        background = rng.choice([c for c in COLORS if c != color])
        count = rng.choice(COUNTS)
        size = "small" if count == 3 else rng.choice(SIZES)
        position = None
        if count == 1 and rng.random() < POSITION_PROBABILITY:
            position = rng.choice(POSITIONS)
        scene = Scene(
            shape, color, background, size, count, position, style, layout_seed=rng.getrandbits(32)
        )
        if _in_split(scene, split):
            return scene


def dataset(
    seed: int, n: int | None = None, *, split: Split = "train", style: Style = "plain"
) -> Iterator[tuple[Image.Image, str, Scene]]:
    """``n`` (or endlessly many) ``(picture, caption, scene)`` triples, generated on the fly.

    The same ``seed``, ``split`` and ``style`` always give the same sequence. The plain and
    outlined datasets of one seed hold the same scenes, so a style is compared like for like.
    """
    rng = random.Random(seed)
    produced = 0
    while n is None or produced < n:
        scene = sample_scene(rng, split=split, style=style)
        yield render(scene), caption(scene), scene
        produced += 1
