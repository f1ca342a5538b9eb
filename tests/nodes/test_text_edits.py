"""The demo world's text-diff judge (``nodes.demo.text_edits``), its one-word variants, and a
floor for text diffs with the shipped demo-clip (BENCHMARKS.md has the full table)."""

from __future__ import annotations

import random

import torch

from nodes.demo.dataset import Scene, caption
from nodes.demo.retrieval import load_demo_clip
from nodes.demo.text_edits import Edit, make_edits, measure
from nodes.demo.variants import ATTRIBUTES, applicable, random_variant, variants
from nodes.loaders import DEMO_CLIP, SHIPPED


def test_variants_change_only_their_attribute_and_its_words():
    scene = Scene("circle", "red", "blue", "large", 1, "left", layout_seed=5)
    fields = ("shape", "color", "background", "size", "count", "position", "style", "layout_seed")
    for attribute in ATTRIBUTES:
        found = variants(scene, attribute)
        assert found, attribute
        for variant in found:
            changed = [f for f in fields if getattr(variant, f) != getattr(scene, f)]
            assert changed == [attribute]
            differ = [a for a, b in zip(caption(scene).split(), caption(variant).split(),
                                        strict=True) if a != b]  # fmt: skip
            # one word, or the background's article with it ("a blue", "an orange"), or the
            # position's phrase ("on the left", "at the top")
            assert 1 <= len(differ) <= (1 if attribute in ("color", "shape", "size") else 2)
    assert "blue" not in {v.color for v in variants(scene, "color")}  # never the background
    assert len(variants(scene, "color")) == 6 and len(variants(scene, "background")) == 6


def test_only_changeable_attributes_have_variants():
    three = Scene("square", "green", "white", "small", 3, None)
    assert variants(three, "size") == [] and variants(three, "position") == []
    assert applicable(three) == ["color", "shape", "background"]
    rng = random.Random(0)
    allowed = {*variants(three, "color"), *variants(three, "shape"), *variants(three, "background")}
    assert all(random_variant(three, rng) in allowed for _ in range(20))


def test_the_judge_flips_only_on_the_targets_caption_and_keeps_on_the_rest():
    """Embeddings that are exactly a caption's text embedding: the judge must read them as
    that caption (uses the shipped CLIP only to embed)."""
    from nodes.clip_model import text_features
    from nodes.demo.retrieval import CaptionTable
    from nodes.demo.text_edits import judge

    clip = load_demo_clip(SHIPPED / DEMO_CLIP)
    table = CaptionTable(clip)
    source = Scene("circle", "red", "blue", "large", 1, None)
    edit = Edit(source, "color", Scene("circle", "green", "blue", "large", 1, None))
    on_target = text_features(clip, [caption(edit.target)])[0]
    on_source = text_features(clip, [caption(source)])[0]
    assert judge(on_target, edit, table) == (True, True)
    assert judge(on_source, edit, table)[0] is False


def test_text_diffs_with_demo_clip_flip_the_edited_attribute_and_keep_the_rest():
    """Floors well under the benchmark's figures on 100 scenes, on 40: the edit at theta 0.4
    must read as the target far more often than the unedited picture does."""
    torch.set_num_threads(1)
    pictures, edits = make_edits(40)
    results = measure(load_demo_clip(SHIPPED / DEMO_CLIP), pictures, edits, [0.0, 0.4])
    assert results[0.0]["flipped"] <= 0.1
    assert results[0.4]["flipped"] >= 0.6
    assert results[0.4]["both"] >= results[0.0]["both"] + 0.3
