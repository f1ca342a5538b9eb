"""The layout measures of ``nodes.demo.editing`` on masks drawn by hand."""

from __future__ import annotations

import numpy as np

from nodes.demo.dataset import Scene
from nodes.demo.editing import Pair, bounding_box, box_iou, iou


def disk(center: tuple[int, int], radius: int, size: int = 64) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2


def square(top: int, left: int, side: int, size: int = 64) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_a_circle_drawn_in_a_squares_place_keeps_the_box_but_not_the_mask() -> None:
    circle, box = disk((32, 32), 12), square(20, 20, 25)
    assert bounding_box(circle) == bounding_box(box) == (20, 20, 44, 44)
    assert box_iou(circle, box) == 1.0
    assert 0.65 < iou(circle, box) < 0.75  # about pi r^2 / (2r + 1)^2 = 0.72


def test_box_iou_counts_the_overlap_of_the_boxes() -> None:
    # 10x10 boxes, the second shifted 5 pixels right: overlap 50, union 150
    assert box_iou(square(0, 0, 10), square(0, 5, 10)) == 50 / 150
    assert box_iou(square(0, 0, 10), square(30, 30, 10)) == 0.0
    two = square(0, 0, 4) | square(0, 20, 4)  # two shapes: one box spans both
    assert bounding_box(two) == (0, 0, 3, 23)
    assert box_iou(two, square(0, 0, 4)) == 16 / 96


def test_specks_the_evaluator_ignores_do_not_stretch_the_box() -> None:
    shape = square(20, 20, 20)
    specked = shape.copy()
    specked[60, 2] = specked[1, 62] = True  # one pixel each: below 15% of the shape's 400
    assert bounding_box(specked) == bounding_box(shape) == (20, 20, 39, 39)
    assert box_iou(specked, shape) == 1.0
    second = shape | square(50, 50, 8)  # 64 pixels: 16% of the largest, an object
    assert bounding_box(second) == (20, 20, 57, 57)


def test_empty_masks() -> None:
    empty = np.zeros((64, 64), dtype=bool)
    assert bounding_box(empty) is None
    assert box_iou(empty, empty) == 1.0
    assert box_iou(empty, square(0, 0, 4)) == 0.0


def test_a_pair_names_its_changed_word_as_the_captions_write_it() -> None:
    source = Scene("circle", "red", "blue", count=2)
    assert Pair("shape", source, Scene("square", "red", "blue", count=2)).words() == (
        "circles",
        "squares",
    )
    assert Pair("color", source, Scene("circle", "green", "blue", count=2)).words() == (
        "red",
        "green",
    )


def test_the_edit_graph_hands_every_prompt_to_prompt_setting_to_the_node() -> None:
    """The benchmark and its screen reach the node's widgets through ``edit_workflow``: a
    setting it dropped would be measured as the default without a word."""
    from nodeflow.node import spec_of
    from nodes.demo.editing import edit_workflow
    from nodes.p2p import prompt_to_prompt

    settings = {
        "mode": "replace",
        "cross_steps": 0.7,
        "self_steps": 0.1,
        "reweight": "green:1.5",
        "blend_words": "red green",
        "blend_threshold": 0.15,
        "word_cross_steps": "green:0.2",
        "blend_start": 0.3,
    }
    workflow = edit_workflow("a red circle", "a green circle", model="demo", **settings)
    inputs = workflow.nodes["p2p"].inputs
    assert {key: inputs[key] for key in settings} == settings
    widgets = {
        name
        for name, spec in spec_of(prompt_to_prompt).to_json()["inputs"].items()
        if spec["kind"] == "widget"
    }
    assert widgets - {"source", "edit"} <= set(settings), widgets


def test_the_edit_graph_samples_with_the_sampler_it_is_given() -> None:
    """A screen's "ddim" setting must reach the Scheduler node; dropped, it would be measured
    as euler under ddim's name."""
    from nodes.demo.editing import edit_workflow

    default = edit_workflow("a red circle", "a green circle", model="demo")
    ddim = edit_workflow("a red circle", "a green circle", model="demo", scheduler="ddim")
    assert default.nodes["sched"].inputs["name"] == "euler"
    assert ddim.nodes["sched"].inputs["name"] == "ddim"
