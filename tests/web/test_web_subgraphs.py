"""Subgraphs in the editor (issue 21): selected nodes become one subgraph node, which opens for
editing and goes back, saves to the library, round-trips through save/load, and runs on the
server as the same nodes written out flat would (the run finds every node cached).

Same harness as test_web_editor.py: a real ``nodeflow serve`` (tiny models), headless Chromium.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from webharness import (
    IN_CI,
    example,
    get_workflow,
    links,
    load_workflow,
    missing_requirement,
    node,
    node_body,
    open_editor,
    set_widget,
    small,
    wait_image,
    wait_state,
    wait_until,
)

if not IN_CI and (_missing := missing_requirement()):
    pytest.skip(_missing, allow_module_level=True)

INNER = ["pos", "neg", "cfg"]


def node_types(page: Any) -> dict[str, str]:
    return page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('[data-testid=node]')]"
        ".map(e => [e.getAttribute('data-node-id'), e.getAttribute('data-node-type')]))"
    )


def convert(page: Any, ids: list[str]) -> None:
    """Select ``ids`` and use the node menu's "Convert to subgraph"."""
    page.evaluate("(ids) => window.nodeflow.select(ids)", ids)
    node(page, ids[0]).locator("[data-testid=node-title]").click(button="right")
    page.locator("[data-testid=menu-convert-subgraph]").click()
    wait_until(lambda: "Subgraph" in node_types(page).values(), 5, "a Subgraph node on the canvas")


def instance_id(page: Any) -> str:
    return next(i for i, t in node_types(page).items() if t == "Subgraph")


def test_selected_nodes_become_a_subgraph_that_runs_as_its_flat_form(page, shot):
    open_editor(page)
    workflow = small(example("txt2img.json"), prompt=f"subgraph {time.time()}", prefix="web-sub")
    load_workflow(page, workflow)
    page.evaluate("() => window.nodeflow.fitView()")
    page.evaluate("() => window.nodeflow.queue()")
    assert wait_state(page, "save", ("done", "error"), timeout=120) == "done"
    flat_image = wait_image(page, "save")

    convert(page, INNER)
    shot("converted")
    saved = get_workflow(page)
    instance = instance_id(page)
    definition = saved["subgraphs"]["Subgraph"]
    assert sorted(definition["nodes"]) == sorted(INNER)
    assert not set(INNER) & set(saved["nodes"])
    declared = {"text_encoder": {"type": "TextEncoder"}, "unet": {"type": "UNet"}}
    assert definition["inputs"] == declared
    assert definition["outputs"] == {"guider": {"from": "cfg.guider", "type": "Guider"}}
    assert saved["nodes"][instance]["inputs"] == {
        "text_encoder": {"from": "model.text_encoder"},
        "unet": {"from": "model.unet"},
    }
    assert saved["nodes"]["denoise"]["inputs"]["guider"] == {"from": f"{instance}.guider"}
    assert definition["nodes"]["cfg"]["inputs"]["positive"] == {"from": "pos.conditioning"}
    assert definition["nodes"]["pos"]["inputs"]["text_encoder"] == {"from": "inputs.text_encoder"}
    assert page.locator(".react-flow__edge").count() == len(links(saved))

    # the server expands it to the same nodes: the same cache keys, nothing runs again
    page.evaluate("() => window.nodeflow.queue()")
    assert wait_state(page, "save", ("cached", "done", "error"), timeout=60) == "cached"
    assert wait_state(page, instance, ("cached", "done", "error"), timeout=10) == "cached"
    assert wait_image(page, "save")["src"] == flat_image["src"]
    shot("ran-cached")


def test_a_subgraph_opens_for_editing_and_goes_back_with_the_changes(page, shot):
    open_editor(page)
    load_workflow(page, small(example("txt2img.json"), prefix="web-sub-open"))
    convert(page, INNER)
    instance = instance_id(page)
    node(page, instance).locator("[data-testid=node-title]").click(button="right")
    page.locator("[data-testid=menu-open-subgraph]").click()
    bar = page.locator("[data-testid=subgraph-bar]")
    bar.wait_for()
    assert page.locator("[data-testid=subgraph-path]").inner_text() == "Workflow › Subgraph"
    wait_until(lambda: set(node_types(page)) >= {*INNER, "inputs", "outputs"}, 5, "inner nodes")
    types = node_types(page)
    assert types["inputs"] == "@SubgraphInputs" and types["outputs"] == "@SubgraphOutputs"
    assert "model" not in types and "denoise" not in types
    canvas = page.evaluate("() => window.nodeflow.getCanvasWorkflow()")
    assert ("inputs", "unet", "cfg", "unet") in links(canvas)
    assert ("cfg", "guider", "outputs", "guider") in links(canvas)
    assert page.locator(".react-flow__edge").count() == len(links(canvas))
    shot("opened")

    set_widget(page, "cfg", "scale", 5)

    def scale() -> Any:
        return get_workflow(page)["subgraphs"]["Subgraph"]["nodes"]["cfg"]["inputs"].get("scale")

    wait_until(lambda: scale() == 5, 5, "the whole workflow (what Save and Queue use) has it")
    page.locator("[data-testid=subgraph-back]").click()
    bar.wait_for(state="detached")
    wait_until(lambda: instance in node_types(page), 5, "the workflow back on the canvas")
    saved = get_workflow(page)
    assert saved["subgraphs"]["Subgraph"]["nodes"]["cfg"]["inputs"]["scale"] == 5
    assert saved["subgraphs"]["Subgraph"]["outputs"]["guider"]["from"] == "cfg.guider"
    assert "inputs" not in saved["subgraphs"]["Subgraph"]["nodes"]
    assert saved["nodes"]["denoise"]["inputs"]["guider"] == {"from": f"{instance}.guider"}
    shot("back")


def test_a_workflow_with_a_subgraph_saves_and_loads_back_identical(page, shot):
    open_editor(page)
    workflow = small(example("txt2img.json"), prefix="web-sub-roundtrip")
    workflow["nodes"]["neg"]["mode"] = "bypass"
    workflow["ui"]["reroutes"] = {"cfg.positive": [[100, 40]]}
    load_workflow(page, workflow)
    convert(page, INNER)
    saved = get_workflow(page)
    assert saved["subgraphs"]["Subgraph"]["nodes"]["neg"]["mode"] == "bypass"
    assert saved["subgraphs"]["Subgraph"]["ui"]["reroutes"] == {"cfg.positive": [[100, 40]]}
    load_workflow(page, saved)
    assert get_workflow(page) == saved
    page.reload()
    page.wait_for_function("() => window.nodeflow && window.nodeflow.ready === true")
    node(page, instance_id(page)).wait_for(state="attached")
    assert get_workflow(page) == saved
    shot("reloaded")


def test_a_subgraph_saved_to_the_library_is_a_node_type_of_other_workflows(page, shot):
    open_editor(page)
    load_workflow(page, small(example("txt2img.json"), prefix="web-sub-library"))
    convert(page, ["pos", "neg"])
    definition = get_workflow(page)["subgraphs"]["Subgraph"]
    node(page, instance_id(page)).locator("[data-testid=node-title]").click(button="right")
    page.locator("[data-testid=menu-library-subgraph]").click()
    page.evaluate("() => window.nodeflow.clear()")
    wait_until(lambda: not get_workflow(page)["nodes"], 5, "an empty canvas")
    assert "subgraphs" not in get_workflow(page)
    added = page.evaluate("() => window.nodeflow.addNode('Subgraph', 100, 100)")
    node(page, added).wait_for(state="attached")
    body = node_body(page, added)
    assert body.get_attribute("data-node-type") == "Subgraph"
    assert body.locator("[data-testid=in-text_encoder]").count() == 1
    assert get_workflow(page)["subgraphs"] == {"Subgraph": definition}
    shot("from-the-library")
