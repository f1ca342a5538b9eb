"""The editor opens ComfyUI workflows (through ``POST /api/import``) and asks before a file, a run
or a picture replaces a canvas with unsaved changes.

1. A ComfyUI API file dropped on the page: the translated nodes appear, and it runs (a tiny
   single-file checkpoint is placed under the name the fixture uses); a run's picture loads back
   from the lightbox, after the question about unsaved changes.
2. A ComfyUI UI file through the Load button: the translated nodes at the file's positions; an
   approximation (a sampler only diffusers' schedulers have) is a warning notice. A ComfyUI PNG
   dropped opens too.
3. A file the import refuses: its errors in the banner and notices, the canvas as it was.
4. A file or a run replacing an unsaved canvas asks first (``confirm-dialog``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from webharness import (
    clear_canvas,
    drop_files,
    example,
    get_workflow,
    load_workflow,
    node,
    node_ids,
    open_editor,
    positions,
    set_widget,
    small,
    wait_image,
    wait_state,
    wait_until,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"

# what the txt2img fixtures translate to: a KSampler is a ComfyScheduler, a CFG guider, a Denoise
TXT2IMG = {
    "4": "LoadCheckpoint",
    "5": "EmptyLatent",
    "6": "TextEncode",
    "7": "TextEncode",
    "3-sched": "ComfyScheduler",
    "3-cfg": "CFG",
    "3": "Denoise",
    "8": "VAEDecode",
    "9": "SaveImage",
}


@pytest.fixture(scope="module")
def comfy_checkpoint(nodeflow_server: Any) -> Path:
    """The server's tiny SD model as an original-layout single file, under the fixtures' name."""
    from nodes.tiny import write_single_file

    checkpoints = nodeflow_server.models / "checkpoints"
    path = checkpoints / CHECKPOINT
    if not path.exists():
        write_single_file(checkpoints / "tiny", path, seed=0)
    return path


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def types_of(workflow: dict[str, Any]) -> dict[str, str]:
    return {k: v["type"] for k, v in workflow["nodes"].items()}


def notices(page: Any) -> list[str]:
    return page.locator("[data-testid=notice]").all_inner_texts()


def banner(page: Any) -> str:
    found = page.locator("[data-testid=error-banner]")
    return found.inner_text() if found.count() else ""


def open_with_button(page: Any, path: Path) -> None:
    page.locator("input[type=file][data-testid=load-workflow]").set_input_files(str(path))


# --- 1. an API file, dropped, runs; its picture loads back ------------------------------------


def test_a_dropped_comfyui_api_file_opens_translated_and_runs(page, shot, comfy_checkpoint,
                                                              nodeflow_server):  # fmt: skip
    open_editor(page)
    clear_canvas(page)
    prompt = json.loads(fixture_bytes("txt2img_api.json"))
    prompt["3"]["inputs"]["steps"] = 2
    prompt["9"]["inputs"]["filename_prefix"] = f"web-comfy-{time.time()}"
    drop_files(page, [("txt2img_api.json", "application/json", json.dumps(prompt).encode())])
    wait_until(lambda: node_ids(page) == set(TXT2IMG), 10, "the translated ComfyUI nodes")
    for node_id in TXT2IMG:
        node(page, node_id).wait_for(state="visible", timeout=5_000)
    shot("api-file-dropped")
    opened = get_workflow(page)
    assert types_of(opened) == TXT2IMG
    assert opened["nodes"]["4"]["inputs"]["path"] == CHECKPOINT
    assert opened["nodes"]["3"]["inputs"]["seed"] == 156680208700286
    assert opened["nodes"]["3-sched"]["inputs"]["steps"] == 2
    assert not page.locator("[data-testid=confirm-dialog]").count()  # an empty canvas: no question
    assert not notices(page), notices(page)  # euler/normal map exactly: no warnings

    page.locator("[data-testid=queue-button]").click()
    assert wait_state(page, "9", ("done", "error"), timeout=120) == "done", banner(page)
    picture = wait_image(page, "9")
    assert (picture["width"], picture["height"]) == (64, 64), picture
    shot("api-file-ran")

    # the picture's workflow (nodeflow's PNG of the translated graph) loads back from the
    # lightbox, after the question about the unsaved change, which shows above the lightbox
    set_widget(page, "6", "text", "an unsaved prompt")
    src = picture["src"].removeprefix(page.evaluate("() => location.origin"))
    page.locator(f'[data-testid=gallery] [data-testid=gallery-image][src="{src}"]').click()
    page.locator("[data-testid=lightbox-load]").click()
    page.locator("[data-testid=confirm-dialog]").wait_for(state="visible", timeout=5_000)
    shot("lightbox-asks")
    page.locator("[data-testid=confirm-ok]").click()
    page.locator("[data-testid=lightbox]").wait_for(state="hidden", timeout=5_000)
    text = prompt["6"]["inputs"]["text"]
    wait_until(lambda: get_workflow(page)["nodes"]["6"]["inputs"]["text"] == text, 10,
               "the picture's workflow loaded")  # fmt: skip
    assert types_of(get_workflow(page)) == TXT2IMG


# --- 2. a UI file through the Load button: its layout; warnings are notices ---------------------


def test_a_comfyui_ui_file_opens_with_its_layout_and_warnings(page, shot, tmp_path):
    open_editor(page)
    clear_canvas(page)
    open_with_button(page, FIXTURES / "txt2img_ui.json")
    wait_until(lambda: node_ids(page) == set(TXT2IMG), 10, "the translated ComfyUI UI nodes")
    opened = get_workflow(page)
    assert types_of(opened) == TXT2IMG
    # the layout of the UI file: each node where ComfyUI had it
    ui = json.loads(fixture_bytes("txt2img_ui.json"))
    placed = positions(opened)
    for entry in ui["nodes"]:
        assert placed[str(entry["id"])] == tuple(entry["pos"]), (entry["id"], placed)
    title = node(page, "4").locator("[data-testid=node-title]").inner_text()
    assert "Load Checkpoint" in title
    x4, x5 = (node(page, i).bounding_box()["x"] for i in ("4", "5"))
    assert x5 > x4  # drawn where the file put them, not stacked
    shot("ui-file-opened")
    assert not notices(page), notices(page)

    # hires fix with ddpm (ComfyScheduler lacks it) as its second sampler: it runs on diffusers'
    # nearest scheduler, and says so
    graph = json.loads(fixture_bytes("hires_fix_ui.json"))
    second = next(entry for entry in graph["nodes"] if entry["id"] == 11)
    second["widgets_values"][4:6] = ["ddpm", "normal"]  # sampler_name, scheduler
    (tmp_path / "hires_fix_ui.json").write_text(json.dumps(graph))
    clear_canvas(page)
    open_with_button(page, tmp_path / "hires_fix_ui.json")
    wait_until(lambda: "10" in node_ids(page), 10, "the hires fix workflow")
    assert get_workflow(page)["nodes"]["10"]["type"] == "ScaleLatent"
    page.locator("[data-testid=notice]").first.wait_for(state="visible", timeout=5_000)
    shot("hires-fix-warning")
    (warning,) = notices(page)
    assert "hires_fix_ui.json (ComfyUI)" in warning and "node 11" in warning, warning
    assert "'ddpm' with 'normal' runs as diffusers' nearest" in warning, warning
    assert page.locator("[data-testid=group]").count() == 1  # its group came along


def test_a_dropped_comfyui_png_opens_its_workflow(page, shot):
    """ComfyUI writes "prompt" (API format) and "workflow" (UI format) chunks: not nodeflow's own
    workflow chunk, so the editor sends the PNG to /api/import, not to a LoadImage node."""
    import io

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("prompt", fixture_bytes("txt2img_api.json").decode())
    info.add_text("workflow", fixture_bytes("txt2img_ui.json").decode())
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (20, 90, 160)).save(png, format="PNG", pnginfo=info)
    open_editor(page)
    clear_canvas(page)
    drop_files(page, [("ComfyUI_00001_.png", "image/png", png.getvalue())])
    wait_until(lambda: node_ids(page) == set(TXT2IMG), 10, "the ComfyUI PNG's workflow")
    opened = get_workflow(page)
    assert types_of(opened) == TXT2IMG
    assert positions(opened)["4"] == (390, 80)  # the layout of its workflow chunk
    assert "LoadImage" not in types_of(opened).values()
    shot("comfy-png-dropped")


# --- 3. a file the import refuses ---------------------------------------------------------------


def test_an_import_error_shows_its_errors_and_keeps_the_canvas(page, shot):
    open_editor(page)
    load_workflow(page, example("txt2img.json"))
    before = get_workflow(page)

    prompt = json.loads(fixture_bytes("txt2img_api.json"))
    prompt["10"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "x"}}
    prompt["8"]["inputs"]["samples"] = ["99", 0]
    prompt["3"]["inputs"]["sampler_name"] = "dpm_fast"
    drop_files(page, [("broken_api.json", "application/json", json.dumps(prompt).encode())])
    page.locator("[data-testid=error-banner]").wait_for(state="visible", timeout=10_000)
    wait_until(lambda: len(notices(page)) >= 3, 5, "a notice per import error")
    shot("import-errors")
    told = banner(page)
    assert "Cannot open broken_api.json" in told and "problems" in told, told
    told = "\n".join(notices(page))
    assert "node 10 (UpscaleModelLoader): ComfyUI node UpscaleModelLoader" in told, told
    assert "node 8 (VAEDecode), samples: links to a missing node '99'" in told, told
    assert "node 3 (KSampler), sampler_name: sampler 'dpm_fast'" in told, told
    # nothing was loaded: the canvas (and its unsaved state) is as it was, no node marked
    assert get_workflow(page)["nodes"] == before["nodes"]
    assert page.locator("[data-testid=node-error]").count() == 0
    assert not page.locator("[data-testid=confirm-dialog]").count()

    # one problem: told in the banner itself; broken JSON: the server's located message
    ui = json.loads(fixture_bytes("txt2img_ui.json"))
    ui["nodes"][0]["type"] = "FancySampler"
    drop_files(page, [("fancy_ui.json", "application/json", json.dumps(ui).encode())])
    wait_until(lambda: "fancy_ui.json" in banner(page), 10, "the UI file's error")
    assert "node 3 (FancySampler): ComfyUI node FancySampler" in banner(page), banner(page)
    drop_files(page, [("cut.json", "application/json", b'{"3": {"class_type": ')])
    wait_until(lambda: "cut.json" in banner(page), 10, "the broken file's error")
    assert "malformed JSON" in banner(page), banner(page)
    assert get_workflow(page)["nodes"] == before["nodes"]


# --- 4. a file or a run replacing an unsaved canvas asks first ----------------------------------


def test_opening_a_file_or_a_run_over_unsaved_changes_asks_first(page, shot, nodeflow_server):
    workflow = small(example("txt2img.json"), prompt=f"for loading back {time.time()}",
                     prefix="web-comfy-ask")  # fmt: skip
    run = nodeflow_server.wait_run(nodeflow_server.submit(workflow))
    assert run["status"] == "finished", run
    open_editor(page)
    load_workflow(page, example("lora.json"))
    confirm = page.locator("[data-testid=confirm-dialog]")

    # unchanged since loaded: a file opens without a question
    drop_files(page, [("txt2img_api.json", "application/json", fixture_bytes("txt2img_api.json"))])
    wait_until(lambda: node_ids(page) == set(TXT2IMG), 10, "the ComfyUI file over a saved canvas")
    assert not confirm.is_visible()

    # changed: dropping a file asks; cancel keeps the change, OK replaces the canvas
    set_widget(page, "6", "text", "my unsaved prompt")
    drop_files(page, [("lora_api.json", "application/json", fixture_bytes("lora_api.json"))])
    confirm.wait_for(state="visible", timeout=10_000)
    shot("file-asks")
    assert "Opening lora_api.json" in confirm.inner_text()
    page.locator("[data-testid=confirm-cancel]").click()
    confirm.wait_for(state="hidden")
    assert get_workflow(page)["nodes"]["6"]["inputs"]["text"] == "my unsaved prompt"

    open_with_button(page, FIXTURES / "lora_api.json")
    confirm.wait_for(state="visible", timeout=10_000)
    page.locator("[data-testid=confirm-ok]").click()
    wait_until(lambda: "LoadLoRA" in types_of(get_workflow(page)).values(), 10, "lora_api.json")

    # "load" on a run in the queue panel asks too
    set_widget(page, "6", "text", "another unsaved prompt")
    item = page.locator(f'[data-testid=run-item][data-run-id="{run["run_id"]}"]')
    item.locator("[data-testid=load-run]").click()
    confirm.wait_for(state="visible", timeout=5_000)
    assert "Loading run" in confirm.inner_text()
    page.keyboard.press("Escape")
    confirm.wait_for(state="hidden")
    assert get_workflow(page)["nodes"]["6"]["inputs"]["text"] == "another unsaved prompt"
    item.locator("[data-testid=load-run]").click()
    page.locator("[data-testid=confirm-ok]").click()
    wait_until(lambda: get_workflow(page)["nodes"] == workflow["nodes"], 10, "the run's workflow")
    shot("run-loaded")
