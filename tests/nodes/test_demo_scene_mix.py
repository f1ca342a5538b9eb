"""The v2 training mixture (``nodes.demo.scene_mix``): the chosen share of captions names a
position, each kind of scene is still the dataset's own, and the held-out split holds."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from nodes.demo.dataset import is_held_out, sample_scene
from nodes.demo.scene_mix import NATURAL_POSITION_SHARE, PositionBatcher, sample_mixed_scene


@pytest.mark.parametrize("share", [0.0, NATURAL_POSITION_SHARE, 0.4, 1.0])
def test_the_share_of_positioned_scenes_is_the_one_asked_for(share):
    rng = random.Random(1)
    scenes = [sample_mixed_scene(rng, share) for _ in range(3000)]
    positioned = sum(s.position is not None for s in scenes) / len(scenes)
    assert abs(positioned - share) < 0.03
    assert not any(is_held_out(s) for s in scenes)


def test_the_dataset_itself_names_a_position_about_one_time_in_six():
    rng = random.Random(2)
    scenes = [sample_scene(rng) for _ in range(6000)]
    assert abs(sum(s.position is not None for s in scenes) / 6000 - NATURAL_POSITION_SHARE) < 0.02


def test_positioned_scenes_keep_the_datasets_positions_and_the_held_out_split():
    rng = random.Random(3)
    scenes = [sample_mixed_scene(rng, 1.0, split="held_out") for _ in range(1000)]
    assert all(is_held_out(s) and s.count == 1 for s in scenes)
    positions = Counter(s.position for s in scenes)
    assert set(positions) == {"center", "left", "right", "top", "bottom"}
    assert min(positions.values()) > 150  # uniform over the five, as the dataset draws them


def test_the_batcher_repeats_for_a_seed_and_captions_name_positions():
    first = PositionBatcher(7, position_share=1.0, dropout=0)(6)
    second = PositionBatcher(7, position_share=1.0, dropout=0)(6)
    assert first[2] == second[2]
    assert (first[0] == second[0]).all() and (first[1] == second[1]).all()
    phrases = ("in the center", "on the left", "on the right", "at the top", "at the bottom")
    assert all(any(p in text for p in phrases) for text in first[2])


def test_a_share_outside_0_to_1_is_refused():
    with pytest.raises(ValueError, match="position_share"):
        sample_mixed_scene(random.Random(0), 1.5)
