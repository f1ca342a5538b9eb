"""Prompt-to-prompt edit fidelity on the shipped demo model in CI: fixed pairs, a floor.

The same measurement as ``tests/benchmarks/bench_p2p.py`` (``nodes.demo.editing``), on a few
held-out caption pairs that change only the colour word, drawn through the PromptToPrompt graph.
"""

from __future__ import annotations

import statistics

import pytest

from nodes.demo.dataset import caption
from nodes.demo.editing import EditRunner, edit_pairs, pair_result, picture_measures

PAIRS = 8
FLOOR_EDIT = 5 / 8
FLOOR_IOU = 0.75
"""The shipped model reads the new colour in 6 of these 8 edits (7 of 8 drawn without
prompt-to-prompt) with a median IoU of 0.87 between source and edit (0.30 without): one pair and
0.12 of margin. The benchmark's 100 pairs per kind are in BENCHMARKS.md. A controller that does
nothing falls to the baseline's overlap; one that copies the source keeps the old colour."""


@pytest.fixture(scope="module")
def runner():
    import torch

    torch.set_num_threads(1)
    runner = EditRunner("demo")
    yield runner
    runner.close()


def test_colour_edits_read_the_new_colour_and_keep_the_shape(runner) -> None:
    results = []
    for index, pair in enumerate(edit_pairs("color", PAIRS)):
        source, edit = caption(pair.source), caption(pair.edit)
        pictures = runner.pair(source, edit, seed=index)
        baseline = [runner.images(text, seed=index)[0] for text in (source, edit)]
        results.append(pair_result(pair, pictures, baseline))
    edit_ok = sum(r["edit_ok"] for r in results) / PAIRS
    overlap = statistics.median(r["iou"] for r in results)
    baseline = statistics.median(r["baseline_iou"] for r in results)
    assert edit_ok >= FLOOR_EDIT, (edit_ok, overlap, baseline)
    assert overlap >= FLOOR_IOU, (edit_ok, overlap, baseline)
    assert overlap > baseline, (edit_ok, overlap, baseline)


def test_reweighting_the_colour_word_grows_the_shape_monotonically(runner) -> None:
    """On the demo model, more weight on the colour word draws more of that colour (coverage
    470, 478 and about 900 pixels at factors 0, 1 and 8 for this caption and seed)."""
    text = "a large red circle on a blue background"
    coverage = []
    for factor in (0.0, 1.0, 8.0):
        pictures = runner.pair(text, "", mode="reweight", reweight=f"red:{factor}", seed=1)
        coverage.append(picture_measures(pictures[1], "red")["coverage"])
    assert coverage[0] < coverage[1] < coverage[2], coverage
