"""One-word variants of a demo scene: the same scene with one attribute changed.

A contrastive model that only tells "a red circle on blue" from "two squares on white" has
learned little; what the demo world can test exactly is whether it tells a caption from the
captions that differ from it in one word (its colour, shape, size, background or position).
``demo-clip`` is trained with such variants as hard negatives, its retrieval is measured
against them (``nodes.demo.retrieval``), and text diffs are judged by which variant an edited
embedding lands nearest (``tests/benchmarks/bench_text_diff.py``).

Only valid scenes are variants: a colour equal to the background, three large shapes, or a
position for a scene that names none are not drawn by the dataset and are skipped.
"""

from __future__ import annotations

import random
from dataclasses import replace

from nodes.demo.dataset import COLORS, POSITIONS, SHAPES, SIZES, Scene

ATTRIBUTES: tuple[str, ...] = ("color", "shape", "size", "background", "position")
"""The scene fields a one-word variant changes (the ``Scene`` field of the same name)."""
VALUES: dict[str, tuple[str, ...]] = {
    "color": COLORS,
    "shape": SHAPES,
    "size": SIZES,
    "background": COLORS,
    "position": POSITIONS,
}


def variants(scene: Scene, attribute: str) -> list[Scene]:
    """Every valid scene equal to ``scene`` except in ``attribute``, in ``VALUES`` order.

    Empty when the attribute cannot change (a scene without a named position, three small
    shapes, which are never large).
    """
    if attribute not in VALUES:
        raise ValueError(f"unknown attribute {attribute!r}; one of {', '.join(ATTRIBUTES)}")
    current = getattr(scene, attribute)
    if current is None:
        return []
    found = []
    for value in VALUES[attribute]:
        if value == current:
            continue
        try:
            found.append(replace(scene, **{attribute: value}))
        except ValueError:  # not a scene the dataset draws
            continue
    return found


def applicable(scene: Scene) -> list[str]:
    """The attributes of ``scene`` that have at least one variant."""
    return [attribute for attribute in ATTRIBUTES if variants(scene, attribute)]


def random_variant(scene: Scene, rng: random.Random) -> Scene:
    """One variant of ``scene``: a uniformly chosen changeable attribute, then a uniformly
    chosen other value; draws from ``rng`` only."""
    attribute = rng.choice(applicable(scene))
    return rng.choice(variants(scene, attribute))
