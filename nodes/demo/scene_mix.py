"""Training scenes with a chosen share of captions that name a position.

The dataset names a position only for a single shape, and then half the time: about one caption
in six. The v1 demo never learned position (15% on held-out captions, chance), so the v2 run
sees more of them. Only the mixture changes: a positioned scene is drawn with probability
``position_share`` and otherwise a scene without a position, each by rejection from
``nodes.demo.dataset.sample_scene``, so each kind keeps exactly the distribution (and the
held-out split) the dataset defines, and the captions stay the dataset's own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from nodes.demo.dataset import Scene, Split, Style, sample_scene
from nodes.demo.train_demo import Batcher

__all__ = ["NATURAL_POSITION_SHARE", "PositionBatcher", "sample_mixed_scene"]

NATURAL_POSITION_SHARE = 1 / 6
"""The dataset's own share (a third of the scenes hold one shape, half of those name where)."""


def sample_mixed_scene(
    rng: random.Random, position_share: float, *, split: Split = "train", style: Style = "plain"
) -> Scene:
    """A scene that names a position with probability ``position_share``; draws from ``rng``
    only, so a seeded ``rng`` repeats."""
    if not 0 <= position_share <= 1:
        raise ValueError(f"position_share must be in 0..1, not {position_share}")
    positioned = rng.random() < position_share
    while True:
        scene = sample_scene(rng, split=split, style=style)
        if (scene.position is not None) == positioned:
            return scene


@dataclass
class PositionBatcher(Batcher):
    """``train_demo.Batcher`` (same pictures, tokens and caption dropout) over the mixture."""

    position_share: float = NATURAL_POSITION_SHARE

    def scene(self, style: Style) -> Scene:
        return sample_mixed_scene(self.rng, self.position_share, split=self.split, style=style)
