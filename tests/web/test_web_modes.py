"""Bypass and mute in the editor (issue 21): Ctrl+B / Ctrl+M and the context menu toggle a node's
workflow ``mode``; the node shows it; saving, reloading and running keep it.

Same harness as test_web_editor.py: a real ``nodeflow serve`` (tiny models), headless Chromium,
screenshots under each test's tmp_path.
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
    small,
    wait_image,
    wait_state,
    wait_until,
)

if not IN_CI and (_missing := missing_requirement()):
    pytest.skip(_missing, allow_module_level=True)


def mode(page: Any, node_id: str) -> str | None:
    return node_body(page, node_id).get_attribute("data-mode")


def select(page: Any, node_id: str) -> None:
    node(page, node_id).locator("[data-testid=node-title]").click()


def test_bypass_and_mute_toggle_show_save_and_run(page, shot):
    open_editor(page)
    workflow = small(example("txt2img.json"), prompt=f"modes {time.time()}", prefix="web-modes")
    workflow["nodes"]["save2"] = {
        "type": "SaveImage",
        "inputs": {"image": {"from": "decode.image"}, "prefix": "web-modes-muted"},
    }
    workflow["ui"]["nodes"]["save2"] = {"pos": [1700, 420]}
    load_workflow(page, workflow)
    page.evaluate("() => window.nodeflow.fitView()")

    select(page, "pos")
    page.keyboard.press("Control+b")
    wait_until(lambda: mode(page, "pos") == "bypass", 5, "pos bypassed by Ctrl+B")
    page.keyboard.press("Control+b")
    wait_until(lambda: mode(page, "pos") is None, 5, "pos back to normal by Ctrl+B again")
    page.keyboard.press("Control+m")
    wait_until(lambda: mode(page, "pos") == "mute", 5, "pos muted by Ctrl+M")
    page.keyboard.press("Control+z")
    wait_until(lambda: mode(page, "pos") is None, 5, "undo takes the mute back")

    node(page, "save2").locator("[data-testid=node-title]").click(button="right")
    page.locator("[data-testid=menu-mute]").click()
    wait_until(lambda: mode(page, "save2") == "mute", 5, "save2 muted from the menu")
    node(page, "neg").locator("[data-testid=node-title]").click(button="right")
    page.locator("[data-testid=menu-bypass]").click()
    wait_until(lambda: mode(page, "neg") == "bypass", 5, "neg bypassed from the menu")
    shot("bypassed-and-muted")

    body = node_body(page, "neg")
    assert body.locator("[data-testid=node-mode]").inner_text().lower() == "bypassed"
    colors = body.evaluate("e => [getComputedStyle(e).opacity, getComputedStyle(e).borderColor]")
    assert float(colors[0]) < 1 and colors[1] == "rgb(156, 77, 204)", colors  # purple, see-through
    assert float(node_body(page, "save2").evaluate("e => getComputedStyle(e).opacity")) < 1

    saved = get_workflow(page)
    assert saved["nodes"]["save2"]["mode"] == "mute" and saved["nodes"]["neg"]["mode"] == "bypass"
    assert "mode" not in saved["nodes"]["pos"]
    page.reload()
    page.wait_for_function("() => window.nodeflow && window.nodeflow.ready === true")
    node(page, "save2").wait_for(state="attached")
    assert mode(page, "save2") == "mute" and mode(page, "neg") == "bypass"

    # the server honours them: neg is not run (TextEncode's text_encoder is not Conditioning, so
    # bypassing it would fail validation: un-bypass it first), save2 does not run
    select(page, "neg")
    page.keyboard.press("Control+b")
    wait_until(lambda: mode(page, "neg") is None, 5, "neg back to normal")
    result = page.evaluate("() => window.nodeflow.queue()")
    assert result.get("run_id"), result
    assert wait_state(page, "save", ("done", "error"), timeout=90) == "done"
    wait_image(page, "save")
    time.sleep(0.5)
    assert node_body(page, "save2").get_attribute("data-state") not in ("done", "running")
    shot("ran-with-a-muted-save")


def test_a_bypass_that_cannot_pass_its_output_is_shown_on_the_node(page, shot):
    open_editor(page)
    load_workflow(page, small(example("txt2img.json"), prefix="web-modes-bad"))
    select(page, "decode")
    page.keyboard.press("Control+b")
    wait_until(lambda: mode(page, "decode") == "bypass", 5, "decode bypassed")
    page.evaluate("() => window.nodeflow.queue()")
    wait_until(lambda: node_body(page, "decode").get_attribute("data-state") == "error", 10,
               "the bypass error shown on decode")  # fmt: skip
    shot("bypass-error")
    assert "no Image input" in node_body(page, "decode").inner_text()


def test_a_collapsed_node_keeps_its_links_and_is_saved_collapsed(page, shot):
    open_editor(page)
    load_workflow(page, small(example("txt2img.json"), prefix="web-collapse"))
    page.evaluate("() => window.nodeflow.fitView()")
    tall = node_body(page, "cfg").bounding_box()["height"]
    node(page, "cfg").locator("[data-testid=collapse-toggle]").click()
    wait_until(lambda: node_body(page, "cfg").bounding_box()["height"] < tall / 2, 5,
               "cfg drawn as its title bar")  # fmt: skip
    assert node(page, "cfg").locator("[data-testid=widget-scale]").count() == 0
    title = node_body(page, "cfg").bounding_box()
    for testid in ("in-positive", "out-guider"):  # the handles sit on the title bar
        box = node(page, "cfg").locator(f"[data-testid={testid}]").bounding_box()
        assert title["y"] <= box["y"] + box["height"] / 2 <= title["y"] + title["height"], testid
    shot("collapsed-cfg")
    saved = get_workflow(page)
    assert page.locator(".react-flow__edge").count() == len(links(saved))  # every link still drawn
    assert saved["ui"]["nodes"]["cfg"]["collapsed"] is True
    assert saved["nodes"]["cfg"]["inputs"]["scale"] == 7.5  # values stay
    node(page, "cfg").locator("[data-testid=node-title]").click(button="right")
    page.locator("[data-testid=menu-collapse]").click()
    wait_until(lambda: "collapsed" not in get_workflow(page)["ui"]["nodes"]["cfg"], 5, "expanded")
    node(page, "cfg").locator("[data-testid=widget-scale]").wait_for()


def test_a_reroute_point_is_added_moved_saved_and_removed(page, shot):
    open_editor(page)
    load_workflow(page, small(example("txt2img.json"), prefix="web-reroute"))
    page.evaluate("() => window.nodeflow.fitView()")
    time.sleep(0.3)
    edge = page.locator('.react-flow__edge[data-id^="model.vae"]').first
    edge.wait_for()
    path = edge.locator("path.react-flow__edge-interaction")
    middle = path.evaluate(  # a point of the link that no node covers, near its middle
        """p => { const l = p.getTotalLength(), m = p.getScreenCTM();
          for (const f of [0.5, 0.45, 0.55, 0.4, 0.6, 0.35, 0.65, 0.3, 0.7, 0.25, 0.75, 0.2, 0.8]) {
            const pt = p.getPointAtLength(l * f), x = pt.x * m.a + m.e, y = pt.y * m.d + m.f;
            if (document.elementFromPoint(x, y) === p) return [x, y];
          } return null; }"""
    )
    assert middle, "the link is covered everywhere"
    page.mouse.dblclick(*middle)
    point = page.locator("[data-testid=reroute]")
    wait_until(lambda: point.count() == 1, 5, "a reroute point where the link was double-clicked")
    box = point.bounding_box()
    start = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.move(*start)
    page.mouse.down()
    end = page.evaluate(  # somewhere on the empty pane above or below
        """([x, y]) => { for (const dy of [-120, 120, -160, 160, -80, 80]) {
            const e = document.elementFromPoint(x + 20, y + dy);
            if (e && e.closest('.react-flow__pane') && !e.closest('.react-flow__node'))
              return [x + 20, y + dy]; } return null; }""",
        list(start),
    )
    assert end, "no empty pane near the link"
    page.mouse.move(*end, steps=8)
    page.mouse.up()
    shot("rerouted-vae-link")
    saved = get_workflow(page)
    (key,) = saved["ui"]["reroutes"]
    assert key in ("decode.vae",), saved["ui"]["reroutes"]
    assert len(saved["ui"]["reroutes"][key]) == 1
    moved = point.bounding_box()
    assert abs(moved["y"] + moved["height"] / 2 - end[1]) < 3, (moved, end)
    load_workflow(page, saved)  # kept through a save and load
    wait_until(lambda: point.count() == 1, 5, "the point after loading")
    assert get_workflow(page)["ui"]["reroutes"] == saved["ui"]["reroutes"]
    point.dblclick()
    wait_until(lambda: "reroutes" not in get_workflow(page)["ui"], 5, "the point removed")
