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
    # the editor is ready before the restored graph's nodes are drawn: wait for the instance
    wait_until(lambda: "Subgraph" in node_types(page).values(), 10, "the restored subgraph")
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


def everything(stamp: float) -> dict[str, Any]:
    """txt2img with each of issue 21's workflow features: a bypassed LoRA, a muted SaveImage, a
    reroute point, a Seed primitive feeding Denoise's converted seed (a subgraph comes later)."""
    workflow = small(example("txt2img.json"), prompt=f"everything {stamp}", prefix="web-every")
    nodes, ui = workflow["nodes"], workflow["ui"]["nodes"]
    nodes["lora"] = {
        "type": "LoadLoRA",
        "inputs": {
            "unet": {"from": "model.unet"},
            "text_encoder": {"from": "model.text_encoder"},
            "path": "demo-style",
        },
        "mode": "bypass",
    }
    nodes["pos"]["inputs"]["text_encoder"] = {"from": "lora.text_encoder"}
    nodes["save2"] = {
        "type": "SaveImage",
        "inputs": {"image": {"from": "decode.image"}, "prefix": "web-every-muted"},
        "mode": "mute",
    }
    nodes["seed"] = {"type": "Seed", "inputs": {"seed": 1234}}
    nodes["denoise"]["inputs"]["seed"] = {"from": "seed.seed"}
    ui["lora"] = {"pos": [220, 0]}
    ui["save2"] = {"pos": [1800, 520]}
    ui["seed"] = {"pos": [800, 620]}
    ui["denoise"]["converted"] = ["seed"]
    workflow["ui"]["reroutes"] = {"cfg.positive": [[700, 40]]}
    return workflow


def pixels(data: bytes) -> Any:
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_every_feature_round_trips_and_runs_alike_in_the_editor_api_and_cli(
    page, nodeflow_server, tmp_path, shot
):
    import json
    import os
    import subprocess
    import sys
    import urllib.request

    open_editor(page)
    load_workflow(page, everything(time.time()))
    convert(page, INNER)
    saved = get_workflow(page)
    load_workflow(page, saved)
    assert get_workflow(page) == saved
    page.reload()
    page.wait_for_function("() => window.nodeflow && window.nodeflow.ready === true")
    node(page, "save").wait_for(state="attached")
    assert get_workflow(page) == saved

    page.evaluate("() => window.nodeflow.queue()")
    assert wait_state(page, "save", ("done", "error"), timeout=120) == "done"
    assert node_body(page, "save2").get_attribute("data-state") not in ("done", "running")
    src = wait_image(page, "save")["src"]
    assert src.startswith(nodeflow_server.base), src
    with urllib.request.urlopen(src) as r:
        editor_pixels = pixels(r.read())
    shot("ran")

    run = nodeflow_server.submit(saved)  # the API: same server, same keys: every node cached
    record = wait_until(
        lambda: (rec := nodeflow_server.get(f"/api/runs/{run}"))["status"] == "finished" and rec,
        60,
        "the API run",
    )
    assert list(record["outputs"]) == ["save"]

    path = tmp_path / "everything.json"
    path.write_text(json.dumps(saved))
    env = {**os.environ, "NODEFLOW_HOME": str(nodeflow_server.root / "home"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out"
    command = [sys.executable, "-m", "nodeflow", "run", str(path), "--device", "cpu",
               "--models-dir", str(nodeflow_server.models), "--output-dir", str(out)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "save2" not in done.stderr and " lora (" not in done.stderr  # muted, bypassed
    (made,) = out.rglob("web-every*.png")
    difference = abs(pixels(made.read_bytes()) - editor_pixels).max()
    assert difference <= 1, difference  # 8-bit rounding of the same fp32 computation


def test_pictures_of_a_save_inside_a_subgraph_show_on_its_instance(page, shot):
    open_editor(page)
    stamp = time.time()
    load_workflow(page, small(example("txt2img.json"), prompt=f"inside {stamp}", prefix="web-in"))
    convert(page, ["decode", "save"])
    instance = instance_id(page)
    page.evaluate("() => window.nodeflow.queue()")
    assert wait_state(page, instance, ("done", "error"), timeout=120) == "done"
    first = wait_image(page, instance)
    assert first["width"] == 64 and "web-in" in first["src"]
    page.reload()  # a fresh page: the next run is all cached, the picture comes from the record
    page.wait_for_function("() => window.nodeflow && window.nodeflow.ready === true")
    node(page, instance).wait_for(state="attached")
    assert node(page, instance).locator("img[data-testid=node-image]").count() == 0
    page.evaluate("() => window.nodeflow.queue()")
    assert wait_state(page, instance, ("cached", "done", "error"), timeout=60) == "cached"
    assert wait_image(page, instance)["src"] == first["src"]
    shot("cached-picture-on-the-instance")


def test_a_workflow_that_fails_to_load_leaves_the_canvas_its_subgraph_types(page):
    open_editor(page)
    load_workflow(page, small(example("txt2img.json"), prefix="web-sub-bad"))
    convert(page, INNER)
    broken = {"version": 1, "subgraphs": {"Other": {"nodes": {}}}, "nodes": {"x": 5}}
    error = page.evaluate(
        "(w) => { try { window.nodeflow.loadWorkflow(w); return null; }"
        " catch (e) { return String(e); } }",
        broken,
    )
    assert error and "node x" in error
    added = page.evaluate("() => window.nodeflow.addNode('Subgraph', 0, 600)")  # still a type
    node(page, added).wait_for(state="attached")
    assert page.evaluate("() => { try { window.nodeflow.addNode('Other'); return 'added'; }"
                         " catch (e) { return 'refused'; } }") == "refused"  # fmt: skip


def test_an_open_subgraph_declares_more_inputs_and_outputs_from_the_node_menu(page, shot):
    open_editor(page)
    workflow = small(example("txt2img.json"), prompt=f"ports {time.time()}", prefix="web-ports")
    load_workflow(page, workflow)
    convert(page, INNER)
    instance = instance_id(page)
    assert page.evaluate("(id) => window.nodeflow.openSubgraph(id)", instance)
    node(page, "inputs").wait_for(state="attached")

    node(page, "cfg").locator("[data-testid=node-title]").click(button="right")
    page.locator("[data-testid=menu-expose-input-scale]").click()
    node(page, "inputs").locator("[data-testid=out-scale]").wait_for()
    node(page, "pos").locator("[data-testid=node-title]").click(button="right")
    page.locator("[data-testid=menu-expose-output-conditioning]").click()
    node(page, "outputs").locator("[data-testid=in-conditioning]").wait_for()
    canvas = page.evaluate("() => window.nodeflow.getCanvasWorkflow()")
    assert ("inputs", "scale", "cfg", "scale") in links(canvas)
    assert ("pos", "conditioning", "outputs", "conditioning") in links(canvas)
    wait_until(lambda: page.locator(".react-flow__edge").count() == len(links(canvas)), 5,
               "the new links drawn")  # fmt: skip
    shot("exposed")
    page.keyboard.press("Control+z")  # undo takes the output back, socket and all
    node(page, "outputs").locator("[data-testid=in-conditioning]").wait_for(state="detached")
    page.keyboard.press("Control+Shift+z")
    node(page, "outputs").locator("[data-testid=in-conditioning]").wait_for()

    page.locator("[data-testid=subgraph-back]").click()
    node(page, instance).locator("[data-testid=widget-scale]").wait_for()
    node(page, instance).locator("[data-testid=out-conditioning]").wait_for()
    definition = get_workflow(page)["subgraphs"]["Subgraph"]
    assert definition["inputs"]["scale"] == {"type": "FLOAT", "default": 7.5}
    assert definition["outputs"]["conditioning"] == {
        "from": "pos.conditioning",
        "type": "Conditioning",
    }
    set_widget(page, instance, "scale", 3)
    wait_until(lambda: get_workflow(page)["nodes"][instance]["inputs"].get("scale") == 3, 5, "set")
    page.evaluate("() => window.nodeflow.queue()")
    assert wait_state(page, "save", ("done", "error"), timeout=120) == "done"  # the server runs it
