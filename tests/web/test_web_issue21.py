"""What a ComfyUI user hit in an hour with the editor (issue 21's bugs), each as they saw it.

Same harness as test_web_editor.py: a real ``nodeflow serve`` (tiny models), headless Chromium,
screenshots under each test's tmp_path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from webharness import (
    IN_CI,
    center,
    drag,
    example,
    find_free_point,
    get_workflow,
    handle,
    http_json,
    links,
    load_workflow,
    missing_requirement,
    node,
    node_body,
    node_ids,
    open_editor,
    queue,
    recorded,
    set_widget,
    small,
    start_recording,
    states_seen,
    wait_image,
    wait_state,
    wait_until,
)

if not IN_CI and (_missing := missing_requirement()):
    pytest.skip(_missing, allow_module_level=True)

TXT2IMG_NODES = ("model", "pos", "neg", "sched", "cfg", "empty", "denoise", "decode", "save")
UPSTREAM = ("model", "pos", "neg", "sched", "cfg", "empty")


def state(page: Any, node_id: str) -> str | None:
    return node_body(page, node_id).get_attribute("data-state")


def queue_by_api(page: Any) -> str:
    """Queue as the button does (window.nodeflow.queue); the new run's id."""
    result = page.evaluate("() => window.nodeflow.queue()")
    assert result.get("run_id"), result
    return result["run_id"]


def run_item(page: Any, run_id: str) -> Any:
    return page.locator(f'[data-testid=queue-panel] [data-testid=run-item][data-run-id="{run_id}"]')


# --- 1. a fully cached rerun shows SaveImage's picture; the gallery lists the file once ----------


def test_cached_rerun_shows_the_picture_and_the_gallery_lists_it_once(page, shot):
    open_editor(page)
    load_workflow(page, small(example("txt2img.json"), prompt=f"cached picture {time.time()}",
                              prefix="web-cached-picture"))  # fmt: skip
    first_run = queue_by_api(page)
    assert wait_state(page, "save", ("done", "error"), timeout=90) == "done"
    first = wait_image(page, "save")
    run_item(page, first_run).and_(page.locator('[data-status="finished"]')).wait_for()

    second_run = queue_by_api(page)  # the same graph (loaded seeds are fixed): all cached
    wait_until(lambda: all(state(page, k) == "cached" for k in TXT2IMG_NODES), 30,
               "every node cached on the unchanged rerun")  # fmt: skip
    run_item(page, second_run).and_(page.locator('[data-status="finished"]')).wait_for()
    again = wait_image(page, "save", timeout=10)
    shot("cached-rerun")
    assert again["src"] == first["src"] and (again["width"], again["height"]) == (64, 64), again

    src = first["src"].removeprefix(page.evaluate("() => location.origin"))
    gallery = page.locator(f'[data-testid=gallery] [data-testid=gallery-image][src="{src}"]')
    assert gallery.count() == 1, f"the gallery lists {src} {gallery.count()} times"


# --- 2. and 3. queueing while a run executes ------------------------------------------------------


@pytest.fixture
def busy(page: Any, nodeflow_server: Any) -> Iterator[None]:
    """A long run executing (Denoise running) with the editor on it; every run still queued or
    running is cancelled afterwards, so the next test finds the server idle."""
    open_editor(page)
    load_workflow(page, small(example("txt2img.json"), steps=400, prompt=f"slow {time.time()}",
                              prefix="web-busy"))  # fmt: skip
    queue_by_api(page)
    wait_state(page, "denoise", "running", timeout=60)
    try:
        yield
    finally:
        busy = [r["run_id"] for r in nodeflow_server.runs() if r["status"] in ("queued", "running")]
        for run_id in reversed(busy):
            http_json(nodeflow_server.url(f"/api/runs/{run_id}/cancel"), {})
        for run_id in busy:
            nodeflow_server.wait_run(run_id, timeout=60)


def test_queueing_while_a_run_executes_leaves_its_nodes_alone(page, shot, busy):
    before = {k: state(page, k) for k in UPSTREAM}
    assert set(before.values()) <= {"done", "cached"}, before
    set_widget(page, "pos", "text", f"the next picture {time.time()}")
    start_recording(page)
    queue(page)  # the toolbar button
    wait_until(lambda: page.locator('[data-testid=run-item][data-status="queued"]').count(), 10,
               "the second run listed as queued")  # fmt: skip
    time.sleep(0.5)
    shot("second-run-queued")
    assert state(page, "denoise") == "running", "the first run ended too early for this test"
    log = recorded(page)
    for key in UPSTREAM:
        assert "queued" not in states_seen(log, key), (key, states_seen(log, key))
        assert state(page, key) == before[key], key


def test_queue_panel_buttons_stay_inside_the_panel(page, shot, busy):
    queue_by_api(page)
    panel = page.locator("[data-testid=queue-panel]")
    for status in ("running", "queued"):
        page.locator(f'[data-testid=run-item][data-status="{status}"]').first.wait_for()
    shot("running-and-queued")
    right = panel.bounding_box()["x"] + panel.bounding_box()["width"]
    rows = page.locator("[data-testid=run-item]")
    for i in range(rows.count()):
        row = rows.nth(i)
        for testid in ("cancel-run", "load-run"):
            button = row.locator(f"[data-testid={testid}]")
            if button.count():
                box = button.bounding_box()
                assert box["x"] + box["width"] <= right, (row.get_attribute("data-status"),
                                                          testid, box, right)  # fmt: skip


# --- 4. converting an unconnected widget to an input keeps its value ------------------------------


def test_a_converted_widget_keeps_its_value_until_a_link_replaces_it(page, shot):
    open_editor(page)
    load_workflow(page, example("txt2img.json"))  # EmptyLatent 64 x 64 (its default is 512)
    set_widget(page, "empty", "width", 96)
    node(page, "empty").locator('[data-testid="convert-width"]').click()
    handle(page, "empty", "in-width").wait_for(state="visible")
    shot("width-converted")
    assert get_workflow(page)["nodes"]["empty"]["inputs"]["width"] == 96
    kept = node(page, "empty").locator('[data-testid="kept-width"]')
    assert "96" in kept.inner_text()
    assert get_workflow(page)["ui"]["nodes"]["empty"]["converted"] == ["width"]

    # the saved workflow loads back with the value and the socket
    load_workflow(page, get_workflow(page))
    assert get_workflow(page)["nodes"]["empty"]["inputs"]["width"] == 96
    handle(page, "empty", "in-width").wait_for(state="visible")
    # and back to a widget, with the value
    node(page, "empty").locator('[data-testid="convert-width"]').click()
    node(page, "empty").locator('[data-testid="widget-width"]').wait_for(state="visible")
    assert get_workflow(page)["nodes"]["empty"]["inputs"]["width"] == 96


# --- 5. the bundled example picture shows its preview --------------------------------------------


@pytest.mark.parametrize("name", ["img2img.json", "image_variation.json"])
def test_the_bundled_example_picture_shows_its_preview(page, shot, nodeflow_server, name):
    assert not (nodeflow_server.input / "red-circle.png").exists()
    open_editor(page)
    load_workflow(page, example(name))
    picture = node(page, "load").locator('[data-testid="input-image-path"]')
    picture.wait_for(state="visible")
    width = picture.evaluate("img => img.decode().then(() => img.naturalWidth, () => 0)")
    shot("example-picture")
    assert width > 0, "the LoadImage preview of red-circle.png does not load"
    # the fallback to the pack's assets keeps the route's refusals
    for path in ("..%2Fruns.sqlite3", "%2e%2e/%2e%2e/etc/passwd", "clip/..%2F..%2Fimage.py"):
        status, _ = http_json(nodeflow_server.url(f"/api/files/input/{path}"))
        assert status in (403, 404), (path, status)


# --- 6. dragging from a connected input picks up its link ---------------------------------------


def test_dragging_from_a_connected_input_detaches_or_moves_its_link(page, shot):
    open_editor(page)
    load_workflow(page, example("txt2img.json"))
    page.locator("[data-testid=fit-view]").click()
    canvas = page.locator("[data-testid=canvas]").bounding_box()
    assert ("decode", "image", "save", "image") in links(get_workflow(page))

    # dropped on nothing: the link is gone, and no node search opens
    drag(page, center(handle(page, "save", "in-image")), find_free_point(page, canvas))
    wait_until(lambda: ("decode", "image", "save", "image") not in links(get_workflow(page)), 3,
               "the link detached")  # fmt: skip
    shot("detached")
    time.sleep(0.3)
    assert not page.locator("[data-testid=node-search]").is_visible()

    # dropped on another input: the link moves there, from the same output
    page.locator("[data-testid=undo]").click()
    wait_until(lambda: ("decode", "image", "save", "image") in links(get_workflow(page)), 3,
               "the link back after undo")  # fmt: skip
    preview = page.evaluate("() => window.nodeflow.addNode('PreviewImage', 1700, 520)")
    node(page, preview).wait_for(state="visible")
    page.locator("[data-testid=fit-view]").click()
    time.sleep(0.3)
    drag(page, center(handle(page, "save", "in-image")), center(handle(page, preview, "in-image")))
    wait_until(lambda: ("decode", "image", preview, "image") in links(get_workflow(page)), 3,
               "the link moved to the PreviewImage")  # fmt: skip
    assert ("decode", "image", "save", "image") not in links(get_workflow(page))
    shot("moved")


# --- 7. Denoise's progress bar and latent preview go when the run ends ---------------------------


def test_progress_and_preview_go_when_the_run_ends(page, shot):
    open_editor(page)
    load_workflow(page, small(example("txt2img.json"), prompt=f"progress {time.time()}",
                              prefix="web-progress"))  # fmt: skip
    start_recording(page)
    queue(page)
    assert wait_state(page, "save", ("done", "error"), timeout=90) == "done"
    denoise = [e for e in recorded(page) if e["id"] == "denoise"]
    assert any(e["progress"] for e in denoise), "no progress while it ran"
    wait_image(page, "save")
    time.sleep(0.5)
    shot("finished")
    assert node(page, "denoise").locator("[data-testid=node-progress]").count() == 0
    assert node(page, "denoise").locator("[data-testid=node-preview]").count() == 0


# --- 8. the example list says which examples draw noise -------------------------------------------


def test_examples_on_random_test_models_say_so(page, shot):
    open_editor(page)
    page.locator("[data-testid=examples-button]").click()
    sdxl = page.locator('[data-testid=example][data-name="sdxl.json"]')
    sdxl.wait_for(state="visible")
    shot("examples")
    assert sdxl.get_attribute("data-test-models") == "true"
    assert "noise" in sdxl.locator("[data-testid=example-test-models]").inner_text()
    assert "demo-sdxl" in (sdxl.get_attribute("title") or "")
    for name in ("txt2img.json", "lora.json", "img2img.json"):
        trained = page.locator(f'[data-testid=example][data-name="{name}"]')
        assert trained.get_attribute("data-test-models") == "false", name
        assert trained.locator("[data-testid=example-test-models]").count() == 0, name


# --- 9. an example or Clear asks before replacing an unsaved canvas -------------------------------


def test_replacing_an_unsaved_canvas_asks_first(page, shot):
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    open_editor(page)
    load_workflow(page, example("txt2img.json"))
    confirm = page.locator("[data-testid=confirm-dialog]")

    def pick_example(name: str) -> None:
        page.locator("[data-testid=examples-button]").click()
        page.locator(f'[data-testid=example][data-name="{name}"]').click()

    # nothing changed since it was loaded: no question
    pick_example("lora.json")
    wait_until(lambda: "lora" in node_ids(page), 10, "lora.json loaded")
    assert not confirm.is_visible()

    prompt = f"my unsaved prompt {time.time()}"
    set_widget(page, "pos", "text", prompt)
    pick_example("txt2img.json")
    confirm.wait_for(state="visible", timeout=5_000)
    shot("asked-before-example")
    page.locator("[data-testid=confirm-cancel]").click()
    confirm.wait_for(state="hidden")
    assert get_workflow(page)["nodes"]["pos"]["inputs"]["text"] == prompt
    assert "lora" in node_ids(page)

    page.locator("[data-testid=clear-canvas]").click()
    confirm.wait_for(state="visible", timeout=5_000)
    page.keyboard.press("Escape")
    confirm.wait_for(state="hidden")
    assert get_workflow(page)["nodes"]["pos"]["inputs"]["text"] == prompt

    page.locator("[data-testid=clear-canvas]").click()
    page.locator("[data-testid=confirm-ok]").click()
    wait_until(lambda: not node_ids(page), 5, "the canvas cleared")
    page.locator("[data-testid=undo]").click()
    wait_until(lambda: get_workflow(page)["nodes"].get("pos", {}).get("inputs", {}).get("text")
               == prompt, 5, "the graph back after undo")  # fmt: skip

    # saving it to a file counts as saved: the next example loads without asking
    with page.expect_download():
        page.locator("[data-testid=save-workflow]").click()
    pick_example("txt2img.json")
    wait_until(lambda: "lora" not in node_ids(page), 10, "txt2img.json loaded")
    assert not confirm.is_visible()
    assert dialogs == [], dialogs  # in-page, not window.confirm
