"""The editor shows prompt-to-prompt pairs and attention-map grids like any image output
(issue 15, part 5): the shipped examples load from the examples list, run, and their SaveImage
nodes show the pictures."""

from __future__ import annotations

from typing import Any

import pytest
from webharness import (
    IN_CI,
    example,
    missing_requirement,
    node,
    node_ids,
    open_editor,
    queue,
    set_widget,
    wait_image,
    wait_state,
    wait_until,
)

if not IN_CI and (_missing := missing_requirement()):
    pytest.skip(_missing, allow_module_level=True)


def run_example(page: Any, name: str, prefix: str) -> None:
    open_editor(page)
    page.locator("[data-testid=examples-button]").click()
    page.locator(f'[data-testid=example][data-name="{name}"]').click()
    wait_until(lambda: node_ids(page) == set(example(name)["nodes"]), 10, f"the {name} graph")
    set_widget(page, "sched", "steps", 3)
    set_widget(page, "save", "prefix", prefix)
    queue(page)
    state = wait_state(page, "save", ("done", "error"), timeout=90)
    assert state == "done", page.locator("[data-testid=node-error]").all_inner_texts()


def test_an_edit_pair_shows_both_pictures(page, shot, nodeflow_server) -> None:
    run_example(page, "p2p_replace.json", "web-p2p")
    image = wait_image(page, "save")
    shot("p2p-ran")
    assert (image["width"], image["height"]) == (64, 64), image
    assert len(list(nodeflow_server.output.glob("web-p2p_*.png"))) == 2
    assert node(page, "save").locator("img[data-testid=node-image]").count() >= 1


def test_an_attention_map_grid_shows(page, shot, nodeflow_server) -> None:
    run_example(page, "attention_maps.json", "web-maps")
    image = wait_image(page, "save")
    shot("maps-ran")
    assert image["width"] > 8 * 96 and image["height"] > 96, image
    assert len(list(nodeflow_server.output.glob("web-maps_*.png"))) == 1
