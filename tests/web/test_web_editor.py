"""The browser editor against a real server: build, run, see progress and pictures, save, load.

Runs headless Chromium through Playwright (see conftest.py); every test keeps screenshots under
its tmp_path. Pictures are 64x64 and runs take 2 steps, so the module takes well under a minute
of model time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from webharness import (
    IN_CI,
    add_via_search,
    assert_same_positions,
    center,
    clear_canvas,
    connect,
    drag,
    drop_files,
    example,
    find_free_point,
    get_workflow,
    links,
    load_workflow,
    missing_requirement,
    node,
    node_body,
    node_ids,
    open_editor,
    positions,
    queue,
    recorded,
    set_widget,
    small,
    start_recording,
    states_seen,
    wait_image,
    wait_ready,
    wait_state,
    wait_until,
)

# Outside CI a machine without Chromium, Playwright or a built editor skips this module (the
# fixtures fail instead in CI, where all three must be there).
if not IN_CI and (_missing := missing_requirement()):
    pytest.skip(_missing, allow_module_level=True)

TXT2IMG_LINKS = {
    ("model", "text_encoder", "pos", "text_encoder"),
    ("model", "text_encoder", "neg", "text_encoder"),
    ("model", "unet", "sched", "unet"),
    ("model", "unet", "cfg", "unet"),
    ("pos", "conditioning", "cfg", "positive"),
    ("neg", "conditioning", "cfg", "negative"),
    ("cfg", "guider", "denoise", "guider"),
    ("sched", "scheduler", "denoise", "scheduler"),
    ("empty", "latent", "denoise", "latent"),
    ("model", "vae", "decode", "vae"),
    ("denoise", "latent", "decode", "latent"),
    ("decode", "image", "save", "image"),
}
TXT2IMG_NODES = ("model", "pos", "neg", "sched", "cfg", "empty", "denoise", "decode", "save")


def edges_on_canvas(page: Any) -> int:
    return page.locator(".react-flow__edge").count()


def png_workflow(path: Path) -> dict[str, Any]:
    with Image.open(path) as picture:
        return json.loads(picture.text["workflow"])


# --- (1) build txt2img from an empty canvas, run it, watch it ------------------------------


# Where each node is added (fractions of the canvas), left to right along the graph, and its type.
BUILD_PLAN = [
    ("model", "LoadCheckpoint", (0.02, 0.05)),
    ("empty", "EmptyLatent", (0.02, 0.55)),
    ("pos", "TextEncode", (0.27, 0.03)),
    ("neg", "TextEncode", (0.27, 0.36)),
    ("sched", "Scheduler", (0.27, 0.69)),
    ("cfg", "CFG", (0.52, 0.05)),
    ("denoise", "Denoise", (0.52, 0.50)),
    ("decode", "VAEDecode", (0.77, 0.05)),
    ("save", "SaveImage", (0.77, 0.40)),
]


def test_build_txt2img_from_empty_canvas_and_run_it(page, shot, nodeflow_server):
    open_editor(page)
    clear_canvas(page)
    assert get_workflow(page)["nodes"] == {}
    shot("empty-canvas")

    canvas = page.locator("[data-testid=canvas]").bounding_box()
    ids: dict[str, str] = {}
    for key, node_type, (fx, fy) in BUILD_PLAN:
        x, y = canvas["x"] + fx * canvas["width"], canvas["y"] + fy * canvas["height"]
        ids[key] = add_via_search(page, node_type, x, y)
        box = node(page, ids[key]).bounding_box()
        # "Enter adds the first result at the click position"
        assert abs(box["x"] - x) < 60 and abs(box["y"] - y) < 60, (key, (x, y), box)
    shot("nodes-added")
    assert {n["type"] for n in get_workflow(page)["nodes"].values()} == {
        t for _, t, _ in BUILD_PLAN
    }

    for source, output, target, input_name in sorted(TXT2IMG_LINKS):
        connect(page, ids[source], output, ids[target], input_name)
        wait_link(page, ids[source], output, ids[target], input_name)
    assert edges_on_canvas(page) == len(TXT2IMG_LINKS)
    by_id = {v: k for k, v in ids.items()}
    built = {(by_id[a], o, by_id[b], i) for a, o, b, i in links(get_workflow(page))}
    assert built == TXT2IMG_LINKS

    prompt = f"a red circle, built by hand {time.time()}"
    set_widget(page, ids["model"], "path", "tiny")
    set_widget(page, ids["pos"], "text", prompt)
    set_widget(page, ids["sched"], "steps", 2)
    set_widget(page, ids["empty"], "width", 64)
    set_widget(page, ids["empty"], "height", 64)
    set_widget(page, ids["save"], "prefix", "web-built")
    values = {k: get_workflow(page)["nodes"][ids[k]]["inputs"] for k in ids}
    assert values["model"]["path"] == "tiny"
    assert values["pos"]["text"] == prompt
    assert values["sched"]["steps"] == 2
    assert (values["empty"]["width"], values["empty"]["height"]) == (64, 64)
    assert values["save"]["prefix"] == "web-built"
    shot("graph-built")

    start_recording(page)
    queue(page)
    wait_state(page, ids["save"], ("done", "error"), timeout=90)
    shot("run-finished")
    log = recorded(page)
    # The prompt is new, so it and everything downstream of it ran; the rest (the model, the
    # 64x64 EmptyLatent, ...) may come from the server's cache when an earlier test made it.
    fresh = {"pos", "cfg", "denoise", "decode", "save"}
    for key in TXT2IMG_NODES:
        expected = {"done"} if key in fresh else {"done", "cached"}
        assert body_state(page, ids[key]) in expected, (key, states_seen(log, ids[key]))
    denoise = [e for e in log if e["id"] == ids["denoise"]]
    assert "running" in states_seen(log, ids["denoise"]), states_seen(log, ids["denoise"])
    progress = [e["progress"] for e in denoise if e["progress"] is not None]
    assert progress, f"no node-progress on Denoise; its log: {denoise}"
    assert all(p[1] == "2" for p in progress), progress
    assert any(e["preview"] for e in denoise), f"no node-preview on Denoise; its log: {denoise}"

    image = wait_image(page, ids["save"])
    assert image["complete"] and (image["width"], image["height"]) == (64, 64), image
    files = sorted(nodeflow_server.output.glob("web-built_*.png"))
    assert len(files) == 1, files
    embedded = png_workflow(files[0])
    assert {(by_id[a], o, by_id[b], i) for a, o, b, i in links(embedded)} == TXT2IMG_LINKS
    assert embedded["nodes"][ids["pos"]]["inputs"]["text"] == prompt


def wait_link(page: Any, source: str, output: str, target: str, input_name: str) -> None:
    wanted = {"from": f"{source}.{output}"}
    wait_until(
        lambda: get_workflow(page)["nodes"][target]["inputs"].get(input_name) == wanted,
        3, f"link {source}.{output} -> {target}.{input_name}",
    )  # fmt: skip


def body_state(page: Any, node_id: str) -> str | None:
    return node_body(page, node_id).get_attribute("data-state")


# --- (2) an example from the examples list ---------------------------------------------------


def test_lora_example_from_the_examples_list_runs(page, shot, nodeflow_server):
    open_editor(page)
    page.locator("[data-testid=examples-button]").click()
    page.locator('[data-testid=example][data-name="lora.json"]').click()
    wait_until(lambda: node_ids(page) == set(example("lora.json")["nodes"]), 10,
               "the lora.json graph")  # fmt: skip
    loaded = get_workflow(page)
    assert loaded["nodes"] == example("lora.json")["nodes"]
    assert_same_positions(loaded, example("lora.json"))
    shot("lora-loaded")

    set_widget(page, "sched", "steps", 2)
    set_widget(page, "pos", "text", f"a red circle with a LoRA {time.time()}")
    set_widget(page, "save", "prefix", "web-lora")
    queue(page)
    assert wait_state(page, "save", ("done", "error"), timeout=90) == "done", page.locator(
        "[data-testid=node-error]"
    ).all_inner_texts()
    image = wait_image(page, "save")
    shot("lora-ran")
    assert (image["width"], image["height"]) == (64, 64), image
    assert body_state(page, "lora") == "done"
    assert len(list(nodeflow_server.output.glob("web-lora_*.png"))) == 1


def test_saved_workflows_record_the_plugins_they_need(page, nodeflow_server):
    """A workflow using third-party nodes names their plugins' distributions and versions (as
    the server stamps stored runs), and one using only built-in nodes names none."""
    system = nodeflow_server.get("/api/system")
    plugins = {p["name"]: p for p in system["plugins"]}
    if "sweep" not in plugins:
        pytest.fail("the example plugins must be installed (see the README's install command)")
    open_editor(page)
    load_workflow(page, example("cfg_sweep.json"))
    wait_until(lambda: "sweep" in (get_workflow(page).get("requires") or {}), 10,
               "requires in the saved workflow")  # fmt: skip
    requires = get_workflow(page)["requires"]
    types = [n["type"] for n in example("cfg_sweep.json")["nodes"].values()]
    used = {t.split(".")[0] for t in types if "." in t}
    assert set(requires) == used
    for name in used:
        assert requires[name] == {
            "distribution": plugins[name]["distribution"],
            "version": plugins[name]["version"],
        }
    load_workflow(page, example("txt2img.json"))
    assert "requires" not in get_workflow(page)


# --- (3) incompatible sockets ----------------------------------------------------------------


def test_incompatible_connection_is_refused(page, shot):
    open_editor(page)
    clear_canvas(page)
    empty = page.evaluate("() => window.nodeflow.addNode('EmptyLatent', 100, 150)")
    decode = page.evaluate("() => window.nodeflow.addNode('VAEDecode', 600, 150)")
    node(page, decode).wait_for(state="visible")
    shot("two-nodes")

    # Latent onto the VAE socket: no edge
    connect(page, empty, "latent", decode, "vae")
    time.sleep(0.3)
    shot("after-incompatible-drag")
    assert edges_on_canvas(page) == 0
    assert links(get_workflow(page)) == set()
    assert "vae" not in get_workflow(page)["nodes"][decode]["inputs"]

    # the same drag onto the Latent socket connects (so the drag itself works)
    connect(page, empty, "latent", decode, "latent")
    wait_until(lambda: links(get_workflow(page)), 3, "the compatible link")
    shot("after-compatible-drag")
    assert links(get_workflow(page)) == {(empty, "latent", decode, "latent")}
    assert edges_on_canvas(page) == 1


# --- (4) validation errors on the right nodes ------------------------------------------------


def test_invalid_graph_shows_errors_on_the_right_nodes(page, shot, nodeflow_server):
    open_editor(page)
    workflow = small(example("txt2img.json"), prefix="web-invalid")
    workflow["nodes"]["sched"]["inputs"]["steps"] = 0  # below the minimum of 1
    del workflow["nodes"]["decode"]["inputs"]["latent"]  # a required input left unconnected
    load_workflow(page, workflow)
    runs_before = len(nodeflow_server.runs())
    queue(page)
    steps_error = node(page, "sched").locator('[data-testid="input-error-steps"]')
    latent_error = node(page, "decode").locator('[data-testid="input-error-latent"]')
    steps_error.wait_for(state="visible", timeout=10_000)
    latent_error.wait_for(state="visible", timeout=10_000)
    shot("validation-errors")
    for other in ("model", "pos", "neg", "cfg", "empty", "denoise", "save"):
        assert (
            node(page, other)
            .locator('[data-testid=node-error], [data-testid^="input-error-"]')
            .count()
            == 0
        ), other
    assert node(page, "sched").locator('[data-testid^="input-error-"]').count() == 1
    assert len(nodeflow_server.runs()) == runs_before, "an invalid graph was queued"

    # fixed, the errors go and it runs
    set_widget(page, "sched", "steps", 2)
    connect(page, "denoise", "latent", "decode", "latent")
    wait_until(lambda: ("denoise", "latent", "decode", "latent") in links(get_workflow(page)), 3,
               "the latent link")  # fmt: skip
    queue(page)
    assert wait_state(page, "save", ("done", "error"), timeout=90) == "done"
    assert page.locator('[data-testid^="input-error-"], [data-testid=node-error]').count() == 0
    shot("fixed-and-ran")


def test_failing_node_shows_its_error(page, shot, nodeflow_server):
    # a file that is there (so validation passes) but is no checkpoint: it fails at run time
    (nodeflow_server.models / "checkpoints" / "broken.safetensors").write_bytes(b"not weights")
    open_editor(page)
    workflow = small(example("txt2img.json"), prefix="web-fail")
    workflow["nodes"]["model"]["inputs"]["path"] = "broken.safetensors"
    load_workflow(page, workflow)
    queue(page)
    error = node(page, "model").locator("[data-testid=node-error]")
    error.wait_for(state="visible", timeout=30_000)
    shot("node-error")
    assert "deserializing" in error.inner_text()
    assert body_state(page, "model") == "error"
    assert page.locator("[data-testid=node-error]").count() == 1
    # what the failure kept from running shows as not run, not as still waiting
    for downstream in ("pos", "denoise", "decode", "save"):
        wait_until(lambda n=downstream: body_state(page, n) == "idle", 10, f"{downstream} idle")


def test_missing_model_file_is_shown_on_its_input_before_running(page, shot, nodeflow_server):
    open_editor(page)
    workflow = small(example("txt2img.json"), prefix="web-missing")
    workflow["nodes"]["model"]["inputs"]["path"] = "no-such-model"
    load_workflow(page, workflow)
    runs_before = len(nodeflow_server.runs())
    queue(page)
    error = node(page, "model").locator('[data-testid="input-error-path"]')
    error.wait_for(state="visible", timeout=10_000)
    shot("file-not-found")
    assert "no-such-model" in error.inner_text()
    assert str(nodeflow_server.models / "checkpoints") in error.inner_text()
    assert len(nodeflow_server.runs()) == runs_before, "a workflow with a missing file was queued"


# --- (5) save, reload, load back ---------------------------------------------------------------


def test_save_reload_and_load_back_give_the_same_graph(page, shot, tmp_path):
    open_editor(page)
    load_workflow(page, example("txt2img.json"))
    page.locator("[data-testid=fit-view]").click()
    # move a node by dragging its title, and change a widget, so the graph is the editor's own
    title = node(page, "empty").locator("[data-testid=node-title]")
    start = center(title)
    drag(page, start, (start[0] + 40, start[1] + 60))
    set_widget(page, "pos", "text", "saved and loaded")
    before = get_workflow(page)
    assert positions(before)["empty"] != positions(example("txt2img.json"))["empty"]
    assert before["nodes"]["pos"]["inputs"]["text"] == "saved and loaded"
    shot("before-save")

    with page.expect_download() as download_info:
        page.locator("[data-testid=save-workflow]").click()
    saved_path = tmp_path / "saved-workflow.json"
    download_info.value.save_as(saved_path)
    saved = json.loads(saved_path.read_text())
    assert saved["version"] == 1
    assert saved["nodes"] == before["nodes"]
    assert_same_positions(saved, before)

    # a reload alone keeps the graph (localStorage)
    page.reload()
    wait_ready(page)
    wait_until(lambda: node_ids(page) == set(before["nodes"]), 10, "the graph after a reload")
    after_reload = get_workflow(page)
    assert after_reload["nodes"] == before["nodes"]
    assert_same_positions(after_reload, before)
    shot("after-reload")

    # cleared (and the empty canvas survives a reload too), then loaded from the file
    clear_canvas(page)
    page.reload()
    wait_ready(page)
    time.sleep(0.3)
    assert node_ids(page) == set()
    page.locator("input[type=file][data-testid=load-workflow]").set_input_files(str(saved_path))
    wait_until(lambda: node_ids(page) == set(before["nodes"]), 10, "the graph from the file")
    loaded = get_workflow(page)
    shot("loaded-from-file")
    assert loaded["nodes"] == before["nodes"]
    assert links(loaded) == links(before)
    assert_same_positions(loaded, before)
    assert edges_on_canvas(page) == len(links(before))


# --- (6) dropping a picture or a workflow file ------------------------------------------------


@pytest.fixture(scope="module")
def produced_png(nodeflow_server) -> Path:
    """A picture made by the server (SaveImage embeds the workflow that made it)."""
    workflow = small(example("txt2img.json"), prompt=f"for dropping {time.time()}",
                     prefix="web-drop")  # fmt: skip
    workflow["ui"]["nodes"]["save"]["pos"] = [1850, 333]
    run = nodeflow_server.wait_run(nodeflow_server.submit(workflow))
    assert run["status"] == "finished", run
    (image,) = run["outputs"]["save"]["images"]
    return nodeflow_server.output / image["subfolder"] / image["filename"]


def test_dropping_a_png_restores_its_workflow(page, shot, produced_png, nodeflow_server):
    embedded = png_workflow(produced_png)
    open_editor(page)
    clear_canvas(page)
    data = page.request.get(f"/api/files/output/{produced_png.name}").body()
    assert data == produced_png.read_bytes()
    drop_files(page, [(produced_png.name, "image/png", data)])
    wait_until(lambda: node_ids(page) == set(embedded["nodes"]), 10, "the PNG's workflow")
    shot("png-dropped")
    restored = get_workflow(page)
    assert restored["nodes"] == embedded["nodes"]
    assert_same_positions(restored, embedded)
    assert positions(restored)["save"] == (1850, 333)


def test_dropping_a_workflow_file_loads_it(page, shot):
    open_editor(page)
    clear_canvas(page)
    text = (Path(__file__).resolve().parents[2] / "workflows" / "lora.json").read_bytes()
    drop_files(page, [("lora.json", "application/json", text)])
    wait_until(lambda: node_ids(page) == set(example("lora.json")["nodes"]), 10, "lora.json")
    shot("json-dropped")
    assert get_workflow(page)["nodes"] == example("lora.json")["nodes"]


# --- (7) undo, redo, delete --------------------------------------------------------------------


def test_delete_undo_redo(page, shot):
    open_editor(page)
    load_workflow(page, example("txt2img.json"))
    page.locator("[data-testid=fit-view]").click()
    original = get_workflow(page)
    shot("loaded")

    # select a node by clicking its title; the Delete key (Backspace as React Flow's default)
    node(page, "save").locator("[data-testid=node-title]").click()
    page.keyboard.press("Delete")
    try:
        wait_until(lambda: "save" not in node_ids(page), 1, "deleted by Delete")
    except AssertionError:
        page.keyboard.press("Backspace")
    wait_until(lambda: "save" not in node_ids(page), 3, "the node deleted")
    node(page, "save").wait_for(state="detached", timeout=3_000)
    assert ("decode", "image", "save", "image") not in links(get_workflow(page))
    assert edges_on_canvas(page) == len(links(original)) - 1
    shot("deleted")

    page.locator("[data-testid=undo]").click()
    wait_until(lambda: "save" in node_ids(page), 3, "the node back after undo")
    restored = get_workflow(page)
    assert restored["nodes"] == original["nodes"]
    assert_same_positions(restored, original)
    node(page, "save").wait_for(state="visible", timeout=3_000)
    wait_until(lambda: edges_on_canvas(page) == len(links(original)), 3, "the edge back")
    shot("undone")

    page.locator("[data-testid=redo]").click()
    wait_until(lambda: "save" not in node_ids(page), 3, "the node gone again after redo")
    assert edges_on_canvas(page) == len(links(original)) - 1
    shot("redone")

    # adding a node through the search is undone and redone too
    page.locator("[data-testid=undo]").click()
    wait_until(lambda: "save" in node_ids(page), 3, "the node back")
    canvas = page.locator("[data-testid=canvas]").bounding_box()
    free = find_free_point(page, canvas)
    added = add_via_search(page, "PreviewImage", *free)
    shot("node-added")
    page.locator("[data-testid=undo]").click()
    wait_until(lambda: added not in node_ids(page), 3, "the added node undone")
    page.locator("[data-testid=redo]").click()
    wait_until(lambda: added in node_ids(page), 3, "the added node redone")
    shot("add-redone")


# --- (8) cached rerun ---------------------------------------------------------------------------


def test_rerun_marks_nodes_cached(page, shot):
    open_editor(page)
    workflow = small(example("txt2img.json"), prompt=f"cache me {time.time()}",
                     prefix="web-cache")  # fmt: skip
    load_workflow(page, workflow)
    seed_control = node(page, "denoise").locator('[data-testid="seed-control-seed"]')
    set_control(seed_control, "fixed")
    queue(page)
    assert wait_state(page, "save", ("done", "error"), timeout=90) == "done"
    # the server's cache is shared with the other tests: what the new prompt changes runs
    for key in ("pos", "cfg", "denoise", "decode", "save"):
        assert body_state(page, key) == "done", key
    for key in ("model", "neg", "sched", "empty"):
        assert body_state(page, key) in ("done", "cached"), key
    shot("first-run")

    start_recording(page)
    queue(page)
    wait_until(
        lambda: all(body_state(page, k) == "cached" for k in TXT2IMG_NODES), 30,
        "every node cached on the unchanged rerun",
    )  # fmt: skip
    shot("all-cached")
    log = recorded(page)
    assert all("running" not in states_seen(log, k) for k in TXT2IMG_NODES), log

    # a new seed: everything before Denoise is cached, Denoise and after run again
    set_widget(page, "denoise", "seed", 43)
    queue(page)
    wait_until(lambda: body_state(page, "save") == "done", 60, "the rerun with a new seed")
    for key in ("model", "pos", "neg", "sched", "cfg", "empty"):
        assert body_state(page, key) == "cached", key
    for key in ("denoise", "decode", "save"):
        assert body_state(page, key) == "done", key
    shot("partly-cached")


def set_control(control: Any, value: str) -> None:
    """A seed control: a select, or a button group whose buttons carry data-value."""
    tag = control.evaluate("e => e.tagName.toLowerCase()")
    if tag == "select":
        control.select_option(value)
    else:
        control.locator(f'[data-value="{value}"]').click()
    assert (control.input_value() if tag == "select" else
            control.get_attribute("data-value")) == value  # fmt: skip


# --- toolbar odds and ends -------------------------------------------------------------------


def test_keyboard_queue_queue_panel_gallery_and_help(page, shot, nodeflow_server):
    open_editor(page)
    load_workflow(page, small(example("txt2img.json"), prompt=f"ctrl enter {time.time()}",
                              prefix="web-keys"))  # fmt: skip
    page.locator("[data-testid=canvas]").click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+Enter")
    item = page.locator("[data-testid=queue-panel] [data-testid=run-item]").first
    item.wait_for(state="visible", timeout=10_000)
    run_id = item.get_attribute("data-run-id")
    run = nodeflow_server.wait_run(run_id)
    assert run["status"] == "finished", run
    wait_until(lambda: item.get_attribute("data-status") == "finished", 10, "finished run item")
    gallery_image = page.locator("[data-testid=gallery] img[data-testid=gallery-image]").first
    gallery_image.wait_for(state="visible", timeout=10_000)
    shot("queued-by-keyboard")

    page.locator("[data-testid=help-button]").click()
    page.locator("[data-testid=help-panel]").wait_for(state="visible", timeout=5_000)
    shot("help")
    loaded = gallery_image.evaluate(
        "img => img.decode().then(() => img.naturalWidth, () => 0)"
    )
    assert loaded == 64, "the gallery's newest picture does not load"
