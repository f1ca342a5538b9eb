"""Judging text diffs on the demo world: does an edited image embedding read as the edit?

For a held-out scene, an edit changes one attribute (``"red" -> "green"``): the source caption is
the scene's, the target caption its one-word variant. ``TextDiff`` moves the scene's image
embedding toward ``normalize(text(target) - text(source))`` by ``theta``. The edit *flips* when,
among the captions that differ only in the edited attribute, the nearest to the edited embedding
is the target's; the other attributes *stay* when, for each other attribute the target scene can
change, the nearest among its variants in that attribute is still the target. Both are judged by
the same CLIP that embedded them (``demo-clip``), the only reader of its space there is.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from nodes.clip_model import CLIP, cosine
from nodes.demo.dataset import Scene, caption
from nodes.demo.retrieval import CaptionTable, held_out_scenes, picture_features
from nodes.demo.variants import ATTRIBUTES, applicable, variants
from nodes.text_diff import text_diff_embeds

EDITS_SEED = 2024
"""The held-out scenes edited (``dataset(EDITS_SEED, n, split="held_out")``) and the choice of
each one's edit."""


@dataclass(frozen=True)
class Edit:
    source: Scene
    attribute: str
    target: Scene


def make_edits(n: int, seed: int = EDITS_SEED) -> tuple[list[Any], list[Edit]]:
    """``n`` held-out pictures and one edit each: a uniformly chosen changeable attribute, then a
    uniformly chosen other value of it."""
    rng = random.Random(seed)
    pictures, edits = [], []
    for picture, scene in held_out_scenes(n, seed):
        attribute = rng.choice(applicable(scene))
        edits.append(Edit(scene, attribute, rng.choice(variants(scene, attribute))))
        pictures.append(picture)
    return pictures, edits


def _nearest_is(embedding: Any, wanted: Scene, others: list[Scene], table: CaptionTable) -> bool:
    candidates = [caption(wanted)] + [caption(scene) for scene in others]
    return int(cosine(embedding[None], table(candidates))[0].argmax()) == 0


def judge(embedding: Any, edit: Edit, table: CaptionTable) -> tuple[bool, bool]:
    """``(flipped, stayed)`` for one edited embedding [width]."""
    rivals = [edit.source] + [v for v in variants(edit.source, edit.attribute) if v != edit.target]
    flipped = _nearest_is(embedding, edit.target, rivals, table)
    stayed = all(
        _nearest_is(embedding, edit.target, variants(edit.target, attribute), table)
        for attribute in applicable(edit.target)
        if attribute != edit.attribute
    )
    return flipped, stayed


def measure(
    clip: CLIP, pictures: list[Any], edits: list[Edit], thetas: list[float]
) -> dict[float, dict[str, Any]]:
    """Per theta: the share of edits that flipped, that kept the other attributes, and both;
    and the same by edited attribute (``by_attribute``: {attribute: [n, flipped, both]})."""
    images = picture_features(clip, pictures)
    table = CaptionTable(clip)
    sources = table([caption(edit.source) for edit in edits])
    targets = table([caption(edit.target) for edit in edits])
    result: dict[float, dict[str, Any]] = {}
    for theta in thetas:
        moved = text_diff_embeds(images, sources, targets, theta)
        flips = stays = both = 0
        by_attribute = {a: [0, 0, 0] for a in ATTRIBUTES}
        for row, edit in enumerate(edits):
            flipped, stayed = judge(moved[row], edit, table)
            flips += flipped
            stays += stayed
            both += flipped and stayed
            counts = by_attribute[edit.attribute]
            counts[0] += 1
            counts[1] += flipped
            counts[2] += flipped and stayed
        n = len(edits)
        result[theta] = {
            "flipped": flips / n,
            "stayed": stays / n,
            "both": both / n,
            "by_attribute": {a: c for a, c in by_attribute.items() if c[0]},
        }
    return result
