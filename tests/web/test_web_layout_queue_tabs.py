"""Align/distribute, batch count, queue to front and workflow tabs in the editor (issue 21).

Same harness as test_web_editor.py: a real ``nodeflow serve`` (tiny models), headless Chromium.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from webharness import (
    IN_CI,
    example,
    get_workflow,
    http_json,
    load_workflow,
    missing_requirement,
    node,
    node_body,
    open_editor,
    small,
    wait_until,
)

if not IN_CI and (_missing := missing_requirement()):
    pytest.skip(_missing, allow_module_level=True)


def boxes(page: Any, ids: list[str]) -> dict[str, dict[str, float]]:
    return {i: node_body(page, i).bounding_box() for i in ids}


def select(page: Any, ids: list[str]) -> None:
    page.evaluate("(ids) => window.nodeflow.select(ids)", ids)


def run_ids(server: Any) -> list[str]:
    return [r["run_id"] for r in server.get("/api/runs?limit=50")["runs"]]


def test_align_and_distribute_from_the_menu_and_the_keyboard(page, shot):
    open_editor(page)
    load_workflow(page, small(example("txt2img.json"), prefix="web-align"))
    page.evaluate("() => window.nodeflow.fitView()")
    chosen = ["pos", "neg", "empty"]
    before = boxes(page, chosen)
    assert len({round(b["x"]) for b in before.values()}) > 1  # not aligned yet

    select(page, chosen)
    node(page, "pos").locator("[data-testid=node-title]").click(button="right")
    page.locator("[data-testid=menu-align-left]").click()
    wait_until(lambda: len({round(b["x"]) for b in boxes(page, chosen).values()}) == 1, 5,
               "left edges lined up")  # fmt: skip
    left = min(b["x"] for b in before.values())
    assert abs(boxes(page, ["pos"])["pos"]["x"] - left) < 1  # on the leftmost node's edge
    shot("aligned-left")

    page.keyboard.press("Alt+Shift+ArrowRight")  # right edges
    wait_until(lambda: len({round(b["x"] + b["width"]) for b in boxes(page, chosen).values()}) == 1,
               5, "right edges lined up by Alt+Shift+Right")  # fmt: skip
    page.keyboard.press("Control+z")
    wait_until(lambda: len({round(b["x"]) for b in boxes(page, chosen).values()}) == 1, 5,
               "undo goes back to the left-aligned layout")  # fmt: skip

    page.keyboard.press("Alt+Shift+KeyV")  # equal vertical gaps

    def gaps() -> list[float]:
        ordered = sorted(boxes(page, chosen).values(), key=lambda b: b["y"])
        return [b["y"] - (a["y"] + a["height"]) for a, b in itertools.pairwise(ordered)]

    wait_until(lambda: abs(gaps()[0] - gaps()[1]) < 1.5, 5, f"equal vertical gaps ({gaps()})")
    saved = get_workflow(page)["ui"]["nodes"]
    assert len({saved[i]["pos"][0] for i in chosen}) == 1  # saved with the workflow
    shot("distributed")


def test_batch_count_queues_that_many_runs_with_seeds_per_the_seed_control(
    page, nodeflow_server, shot
):
    server = nodeflow_server
    open_editor(page)
    workflow = small(example("txt2img.json"), prompt=f"batch {time.time()}", prefix="web-batch")
    load_workflow(page, workflow)
    seed = get_workflow(page)["nodes"]["denoise"]["inputs"]["seed"]
    node(page, "denoise").locator("[data-testid=seed-control-seed]").select_option("increment")
    page.locator("[data-testid=batch-count]").fill("3")
    known = set(run_ids(server))
    page.locator("[data-testid=queue-button]").click()

    def queued() -> list[str]:
        ids = [r for r in run_ids(server) if r not in known]
        return ids if len(ids) == 3 else []

    new = wait_until(queued, 20, "three runs queued by one click")
    seeds = sorted(
        server.get(f"/api/runs/{r}")["workflow"]["nodes"]["denoise"]["inputs"]["seed"] for r in new
    )
    assert seeds == [seed, seed + 1, seed + 2]
    wait_until(lambda: get_workflow(page)["nodes"]["denoise"]["inputs"]["seed"] == seed + 3, 5,
               "the widget moved on three times")  # fmt: skip
    page.reload()
    page.wait_for_function("() => window.nodeflow && window.nodeflow.ready === true")
    assert page.locator("[data-testid=batch-count]").input_value() == "3"  # kept
    for run_id in new:
        wait_until(lambda r=run_id: server.get(f"/api/runs/{r}")["status"] not in
                   ("queued", "running"), 120, f"run {run_id} to end")  # fmt: skip
    shot("batch")


def test_queue_to_front_goes_ahead_of_the_waiting_runs(page, nodeflow_server, shot):
    server = nodeflow_server
    open_editor(page)
    stamp = time.time()
    blocker = small(example("txt2img.json"), steps=1000, prompt=f"blocker {stamp}", prefix="web-f")
    status, body = http_json(server.url("/api/runs"), {"workflow": blocker})
    assert status == 201
    blocker_id = body["run_id"]
    try:
        wait_until(lambda: server.get(f"/api/runs/{blocker_id}")["status"] == "running", 60,
                   "the long run to start")  # fmt: skip
        other = small(example("txt2img.json"), prefix="web-f")
        waiting = []
        for i in range(2):
            other["nodes"]["pos"]["inputs"]["text"] = f"wait {i} {stamp}"
            waiting.append(server.submit(other))
        load_workflow(page, small(example("txt2img.json"), prompt=f"front {stamp}", prefix="web-f"))
        known = set(run_ids(server))
        page.locator("[data-testid=queue-front]").click()
        front = wait_until(lambda: [r for r in run_ids(server) if r not in known], 10, "queued")[0]
        assert server.get(f"/api/runs/{blocker_id}")["status"] == "running"
        assert server.get(f"/api/runs/{front}")["position"] == 0
        assert [server.get(f"/api/runs/{r}")["position"] for r in waiting] == [1, 2]
        shot("front")
    finally:
        for run_id in run_ids(server):
            if server.get(f"/api/runs/{run_id}")["status"] == "queued":
                http_json(server.url(f"/api/runs/{run_id}/cancel"), {})
        http_json(server.url("/api/interrupt"), {})
    wait_until(lambda: server.get(f"/api/runs/{blocker_id}")["status"] != "running", 60, "stop")


def tabs(page: Any) -> list[tuple[str, bool]]:
    found = page.evaluate(
        "() => [...document.querySelectorAll('[data-testid=workflow-tab]')].map(t =>"
        " [t.querySelector('.nf-tab-name').textContent, t.getAttribute('data-active') === 'true'])"
    )
    return [(name, active) for name, active in found]


def tab(page: Any, name: str) -> Any:
    return page.locator("[data-testid=workflow-tab]", has_text=name)


def test_workflow_tabs_hold_several_workflows_across_reloads(page, shot):
    open_editor(page)
    first = small(example("txt2img.json"), prefix="web-tabs")
    load_workflow(page, first)
    assert tabs(page) == [("Workflow 1", True)]
    page.locator("[data-testid=new-tab]").click()
    wait_until(lambda: tabs(page) == [("Workflow 1", False), ("Workflow 2", True)], 5, "two tabs")
    assert get_workflow(page)["nodes"] == {}
    added = page.evaluate("() => window.nodeflow.addNode('EmptyLatent', 50, 50)")
    node(page, added).wait_for(state="attached")
    shot("second-tab")

    tab(page, "Workflow 1").click()
    wait_until(lambda: set(get_workflow(page)["nodes"]) == set(first["nodes"]), 5, "tab 1 back")
    assert get_workflow(page)["nodes"]["pos"] == first["nodes"]["pos"]

    page.reload()
    page.wait_for_function("() => window.nodeflow && window.nodeflow.ready === true")
    assert tabs(page) == [("Workflow 1", True), ("Workflow 2", False)]
    assert set(get_workflow(page)["nodes"]) == set(first["nodes"])
    tab(page, "Workflow 2").click()
    wait_until(lambda: list(get_workflow(page)["nodes"]) == [added], 5, "tab 2 after the reload")
    shot("after-reload")

    tab(page, "Workflow 2").locator("[data-testid=tab-close]").click()
    page.locator("[data-testid=confirm-dialog]").wait_for()  # its node was never saved
    page.locator("[data-testid=confirm-ok]").click()
    wait_until(lambda: tabs(page) == [("Workflow 1", True)], 5, "one tab left, the first")
    assert set(get_workflow(page)["nodes"]) == set(first["nodes"])
    page.reload()
    page.wait_for_function("() => window.nodeflow && window.nodeflow.ready === true")
    assert tabs(page) == [("Workflow 1", True)]
