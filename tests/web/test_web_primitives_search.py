"""Issue 21's features for a ComfyUI user: the default graph on a first visit, search that finds
ComfyUI's names and forgives typos, and primitive nodes feeding converted widgets of several
nodes at once.

Same harness as test_web_editor.py: a real ``nodeflow serve`` (tiny models), headless Chromium,
screenshots under each test's tmp_path.
"""

from __future__ import annotations

import json
import time

import pytest
from webharness import (
    IN_CI,
    REPO,
    add_via_search,
    example,
    find_free_point,
    get_workflow,
    load_workflow,
    missing_requirement,
    node,
    node_ids,
    open_editor,
    set_widget,
    small,
    wait_image,
    wait_state,
    wait_until,
    widget,
)

if not IN_CI and (_missing := missing_requirement()):
    pytest.skip(_missing, allow_module_level=True)


def test_a_first_visit_opens_on_txt2img_and_a_cleared_canvas_stays_clear(page, shot, first_visit):
    open_editor(page)
    shipped = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    wait_until(lambda: node_ids(page) == set(shipped["nodes"]), 10, "the txt2img graph")
    shown = get_workflow(page)
    assert {k: v["type"] for k, v in shown["nodes"].items()} == {
        k: v["type"] for k, v in shipped["nodes"].items()
    }
    assert shown["nodes"]["model"]["inputs"]["path"] == "demo"  # the built-in model
    shot("first-visit")
    assert page.locator("[data-testid=confirm-dialog]").count() == 0
    page.evaluate("() => window.nodeflow.clear()")
    wait_until(lambda: not node_ids(page), 5, "an empty canvas")
    page.evaluate("() => window.nodeflow.fitView()")
    time.sleep(0.3)  # the canvas is kept on pagehide, as on any reload
    page.reload()
    page.wait_for_function("() => window.nodeflow && window.nodeflow.ready === true")
    assert not node_ids(page), "the default graph came back after the user cleared the canvas"


SEARCHES = {
    # ComfyUI's names, through the aliases the node declarations carry
    "KSampler": "Denoise",
    "CLIPTextEncode": "TextEncode",
    "EmptyLatentImage": "EmptyLatent",
    "CheckpointLoaderSimple": "LoadCheckpoint",
    "VAEDecode": "VAEDecode",
    "LoraLoader": "LoadLoRA",
    # typos, initials, letters in order
    "denoize": "Denoise",
    "TextEncdoe": "TextEncode",
    "eli": "EmptyLatent",
    "cte": "TextEncode",
    "vaedec": "VAEDecode",
    "schedulr": "Scheduler",
}


def test_search_finds_comfyui_names_typos_and_initials(page, shot):
    open_editor(page)
    x, y = find_free_point(page, page.locator("[data-testid=canvas]").bounding_box())
    page.mouse.dblclick(x, y)
    search = page.locator("[data-testid=node-search]")
    search.wait_for(state="visible")
    first = page.locator("[data-testid=search-result]").first
    misses = {}
    for query, expected in SEARCHES.items():
        search.fill(query)
        try:
            wait_until(lambda: first.get_attribute("data-type") == expected, 2, query)  # noqa: B023
        except AssertionError:
            misses[query] = first.get_attribute("data-type") if first.count() else None
    search.fill("KSampler")
    wait_until(lambda: first.get_attribute("data-type") == "Denoise", 2, "KSampler")
    assert first.locator("[data-testid=search-alias]").inner_text() == "KSampler"
    shot("search-ksampler")
    assert misses == {}, f"first results that were not the node meant: {misses}"


def test_one_int_feeds_the_widths_of_two_nodes_and_the_run_uses_it(page, shot):
    open_editor(page)
    workflow = small(example("txt2img.json"), prompt=f"primitive {time.time()}",
                     prefix="web-primitive")  # fmt: skip
    load_workflow(page, workflow)
    page.evaluate(
        """() => { const w = window.nodeflow.getWorkflow();
          w.nodes.empty2 = {type: "EmptyLatent", inputs: {width: 64, height: 64}};
          w.ui.nodes.empty2 = {pos: [800, 700]};
          return window.nodeflow.loadWorkflow(w); }"""
    )
    node(page, "empty2").wait_for(state="attached")
    page.evaluate("() => window.nodeflow.fitView()")
    time.sleep(0.3)
    x, y = find_free_point(page, page.locator("[data-testid=canvas]").bounding_box())
    number = add_via_search(page, "Int", x, y, query="int")
    for target in ("empty", "empty2"):
        node(page, target).locator('[data-testid="convert-width"]').click()
        page.evaluate("([s, t]) => window.nodeflow.connect(s, 'int', t, 'width')", [number, target])
    saved = get_workflow(page)
    for target in ("empty", "empty2"):
        assert saved["nodes"][target]["inputs"]["width"] == {"from": f"{number}.int"}, saved
    # the first link gave the Int the width it replaced
    assert widget(page, number, "value").input_value() == "64"
    set_widget(page, number, "value", 96)
    shot("one-int-two-widths")
    assert get_workflow(page)["nodes"][number]["inputs"]["value"] == 96
    page.evaluate("() => window.nodeflow.queue()")
    assert wait_state(page, "save", ("done", "error"), timeout=90) == "done"
    picture = wait_image(page, "save")
    assert (picture["width"], picture["height"]) == (96, 64), picture


def test_a_combo_offers_the_choices_of_the_widget_it_feeds(page, shot):
    open_editor(page)
    load_workflow(page, small(example("txt2img.json"), prefix="web-combo"))
    x, y = find_free_point(page, page.locator("[data-testid=canvas]").bounding_box())
    combo = add_via_search(page, "Combo", x, y, query="combo")
    node(page, "sched").locator('[data-testid="convert-name"]').click()
    page.evaluate("([s]) => window.nodeflow.connect(s, 'string', 'sched', 'name')", [combo])
    choices = widget(page, combo, "value")
    wait_until(lambda: choices.evaluate("e => e.tagName") == "SELECT", 5, "a choice list")
    options = choices.evaluate("e => [...e.options].map(o => o.value)")
    assert "euler" in options and "ddim" in options, options
    assert choices.input_value() == "euler"  # taken from the scheduler it feeds
    set_widget(page, combo, "value", "ddim")
    shot("combo-choices")
    assert get_workflow(page)["nodes"][combo]["inputs"]["value"] == "ddim"
