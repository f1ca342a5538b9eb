"""Prompt-to-prompt edit fidelity on the shipped demo model in CI: fixed pairs, a floor.

The same measurement as ``tests/benchmarks/bench_p2p.py`` (``nodes.demo.editing``), on a few
held-out caption pairs that change only the colour word (or only the shape word), drawn through
the PromptToPrompt graph.
"""

from __future__ import annotations

import statistics

import pytest

from nodes.demo.dataset import caption
from nodes.demo.editing import EditRunner, Pair, edit_pairs, pair_result, picture_measures

PAIRS = 8
FLOOR_EDIT = 6 / 8
FLOOR_IOU = 0.65
FLOOR_BOX_IOU = 0.75
"""The shipped model (the demo v2b U-Net and text encoder, the decoder of Nov 30) reads the new
colour in 7 of these 8 edits (7 of 8 drawn without prompt-to-prompt) with a median IoU of 0.745
between source and edit (0.25 without) and a median IoU of their bounding boxes of 0.85 (0.38
without): one pair and 0.10 of margin (measured 2026-11-30 by ``_pair_result`` on these pairs,
as the tests below compute them). The old U-Net read 7 of 8, IoU 0.85, box IoU 0.91, under
floors of 6 of 8, 0.75 and 0.8: the new U-Net keeps the colour edit's layout less tightly. The
benchmark's 100 pairs per kind are in BENCHMARKS.md. A controller that does nothing falls to
the baseline's overlap; one that copies the source keeps the old colour."""
SHAPE_FLOOR_EDIT = 4 / 8
SHAPE_FLOOR_BOX_IOU = 0.75
"""Shape edits (v2b U-Net, measured as above): the new shape is read in 5 of 8 (6 without
prompt-to-prompt), median mask IoU 0.52 (0.40 without; a circle cannot cover a square's box, so
the masks cannot reach 1) and median box IoU 0.84 (0.81 without): floors one pair and 0.09
below. (Old U-Net: 6 of 8 under a floor of 5, 0.48, 0.78 under 0.7.)"""

SHAPE_SETTING_FLOOR_EDIT = 6 / 8
SHAPE_SETTING_FLOOR_BOX_IOU = 0.75
"""Under ``workflows/p2p_shape.json``'s setting the same 8 shape edits read the new shape in 7 of
8 (v2b U-Net, measured as above; one pair of margin), median mask IoU 0.51 (0.40 drawn alone),
median box IoU 0.85 (0.10 of margin). The old U-Net read 5 of 8 (floor 4), 0.49, 0.78 (floor
0.7). Over the benchmark's 100 pairs it reads 87% (the defaults 88%, the edited captions drawn
alone 88%; BENCHMARKS.md)."""


@pytest.fixture(scope="module")
def runner():
    import torch

    torch.set_num_threads(1)
    runner = EditRunner("demo")
    yield runner
    runner.close()


def test_colour_edits_read_the_new_colour_and_keep_the_shape(runner) -> None:
    results = [
        _pair_result(runner, index, pair) for index, pair in enumerate(edit_pairs("color", PAIRS))
    ]
    edit_ok = sum(r["edit_ok"] for r in results) / PAIRS
    overlap = statistics.median(r["iou"] for r in results)
    baseline = statistics.median(r["baseline_iou"] for r in results)
    boxes = statistics.median(r["box_iou"] for r in results)
    baseline_boxes = statistics.median(r["baseline_box_iou"] for r in results)
    assert edit_ok >= FLOOR_EDIT, (edit_ok, overlap, baseline)
    assert overlap >= FLOOR_IOU, (edit_ok, overlap, baseline)
    assert overlap > baseline, (edit_ok, overlap, baseline)
    assert boxes >= FLOOR_BOX_IOU and boxes > baseline_boxes, (boxes, baseline_boxes)


def test_shape_edits_read_the_new_shape_where_the_old_one_was(runner) -> None:
    results = [
        _pair_result(runner, index, pair) for index, pair in enumerate(edit_pairs("shape", PAIRS))
    ]
    edit_ok = sum(r["edit_ok"] for r in results) / PAIRS
    overlap = statistics.median(r["iou"] for r in results)
    baseline = statistics.median(r["baseline_iou"] for r in results)
    boxes = statistics.median(r["box_iou"] for r in results)
    figures = (edit_ok, overlap, baseline, boxes)
    assert edit_ok >= SHAPE_FLOOR_EDIT, figures
    assert overlap > baseline, figures
    assert boxes >= SHAPE_FLOOR_BOX_IOU, figures


def test_the_shape_edit_setting_keeps_its_measured_floor(runner) -> None:
    """``workflows/p2p_shape.json``'s setting (self-attention window 0.2, the new shape word's
    own cross-attention window 0.2), the best measured for shape edits (BENCHMARKS.md), on the
    same pairs as the default's floor above."""
    results = [
        _pair_result(runner, index, pair, **shape_setting(pair))
        for index, pair in enumerate(edit_pairs("shape", PAIRS))
    ]
    edit_ok = sum(r["edit_ok"] for r in results) / PAIRS
    overlap = statistics.median(r["iou"] for r in results)
    baseline = statistics.median(r["baseline_iou"] for r in results)
    boxes = statistics.median(r["box_iou"] for r in results)
    figures = (edit_ok, overlap, baseline, boxes)
    assert edit_ok >= SHAPE_SETTING_FLOOR_EDIT, figures
    assert overlap > baseline, figures
    assert boxes >= SHAPE_SETTING_FLOOR_BOX_IOU, figures


def shape_setting(pair: Pair) -> dict[str, object]:
    """PromptToPrompt's widgets for a shape edit, as ``workflows/p2p_shape.json`` sets them."""
    return {"self_steps": 0.2, "word_cross_steps": f"{pair.words()[1]}:0.2"}


def _pair_result(runner: EditRunner, index: int, pair: Pair, **options: object) -> dict:
    """One pair drawn with prompt-to-prompt and, as the baseline, each caption alone."""
    source, edit = caption(pair.source), caption(pair.edit)
    pictures = runner.pair(source, edit, seed=index, **options)
    baseline = [runner.images(text, seed=index)[0] for text in (source, edit)]
    return pair_result(pair, pictures, baseline)


def test_reweighting_the_colour_word_grows_the_shape_monotonically(runner) -> None:
    """On the demo model, more weight on the colour word draws more of that colour (coverage
    424, 522 and 857 pixels at factors 0, 1 and 8 for this caption and seed with the v2b U-Net;
    294, 505 and 923 with the old U-Net; 470, 478 and about 900 with the old decoder)."""
    text = "a large red circle on a blue background"
    coverage = []
    for factor in (0.0, 1.0, 8.0):
        pictures = runner.pair(text, "", mode="reweight", reweight=f"red:{factor}", seed=1)
        coverage.append(picture_measures(pictures[1], "red")["coverage"])
    assert coverage[0] < coverage[1] < coverage[2], coverage
