"""The mask editor on LoadImage (issue 18, part 5): paint, erase, undo/redo, clear, invert, and
save into the picture's alpha as a new upload that the node's image widget then names.

Same harness as test_web_editor.py: a real ``nodeflow serve`` (tiny models), headless Chromium,
screenshots under each test's tmp_path. The saved PNG is read back from the server's input folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from webharness import (
    IN_CI,
    clear_canvas,
    example,
    get_workflow,
    load_workflow,
    missing_requirement,
    node,
    open_editor,
    queue,
    small,
    wait_image,
    wait_until,
)

if not IN_CI and (_missing := missing_requirement()):
    pytest.skip(_missing, allow_module_level=True)

ASSET = Path(__file__).resolve().parents[2] / "nodes" / "assets" / "red-circle.png"
SIZE = 64  # red-circle.png is 64 x 64


def editor(page: Any) -> Any:
    return page.locator("[data-testid=mask-editor]")


def painted(page: Any) -> int:
    return int(editor(page).get_attribute("data-painted") or -1)


def open_mask_editor(page: Any) -> None:
    node(page, "load").locator('[data-testid="edit-mask-path"]').click()
    wait_until(lambda: editor(page).get_attribute("data-width") == str(SIZE), 10,
               "the mask editor with the picture loaded")  # fmt: skip


def image_path(page: Any) -> str:
    return get_workflow(page)["nodes"]["load"]["inputs"]["path"]


def stroke(page: Any, points: list[tuple[float, float]]) -> None:
    """Drag the mouse through ``points`` given in picture pixels."""
    box = page.locator("[data-testid=mask-canvas]").bounding_box()
    scale = box["width"] / SIZE
    to_page = [(box["x"] + x * scale, box["y"] + y * scale) for x, y in points]
    page.mouse.move(*to_page[0])
    page.mouse.down()
    for point in to_page[1:]:
        page.mouse.move(*point, steps=6)
    page.mouse.up()


def set_brush(page: Any, size: int) -> None:
    page.locator("[data-testid=mask-brush-size]").fill(str(size))
    assert page.locator("[data-testid=mask-brush-size-value]").inner_text() == str(size)


def save_mask(page: Any, before: str) -> str:
    page.locator("[data-testid=mask-save]").click()
    editor(page).wait_for(state="detached")
    return wait_until(lambda: (p := image_path(page)) != before and p, 10,
                      "the node naming the upload")  # fmt: skip


def alpha(server: Any, name: str) -> np.ndarray:
    with Image.open(server.input / name) as picture:
        assert picture.mode == "RGBA" and picture.size == (SIZE, SIZE), (picture.mode, picture.size)
        rgba = np.asarray(picture)
    with Image.open(ASSET) as source:
        # the colour under the mask is kept (no premultiplied black where transparent)
        assert np.array_equal(rgba[..., :3], np.asarray(source.convert("RGB")))
    return rgba[..., 3]


def test_paint_undo_save_run_and_reload(page, shot, nodeflow_server, tmp_path):
    open_editor(page)
    # the shipped inpaint workflow, but repainting where the mask editor painted (LoadImage's
    # mask) instead of where the red is
    workflow = small(example("inpaint.json"), prefix="web-mask")
    workflow["nodes"]["grow"]["inputs"]["mask"] = {"from": "load.mask"}
    load_workflow(page, workflow)
    assert image_path(page) == "red-circle.png"
    open_mask_editor(page)
    assert painted(page) == 0
    set_brush(page, 6)

    stroke(page, [(8, 10), (30, 10)])  # across the top
    first = painted(page)
    assert first > 0
    shot("first-stroke")
    page.locator("[data-testid=mask-undo]").click()
    wait_until(lambda: painted(page) == 0, 5, "the stroke undone")
    page.locator("[data-testid=mask-redo]").click()
    wait_until(lambda: painted(page) == first, 5, "the stroke redone")
    # Ctrl+Z is the mask's undo while the editor is open, not the graph's
    nodes_before = set(get_workflow(page)["nodes"])
    page.keyboard.press("Control+z")
    wait_until(lambda: painted(page) == 0, 5, "the stroke undone again with Ctrl+Z")
    assert set(get_workflow(page)["nodes"]) == nodes_before
    assert image_path(page) == "red-circle.png"

    stroke(page, [(8, 52), (30, 52)])  # across the bottom instead
    second = painted(page)
    assert second > 0
    # erasing part of it takes pixels away; undo brings them back
    page.locator("[data-testid=mask-erase]").click()
    stroke(page, [(19, 52), (19, 52)])
    assert 0 < painted(page) < second
    page.locator("[data-testid=mask-undo]").click()
    wait_until(lambda: painted(page) == second, 5, "the erase undone")
    assert page.locator("[data-testid=mask-redo]").is_enabled()
    shot("second-stroke")

    name = save_mask(page, "red-circle.png")
    assert name == "red-circle-masked.png"
    # the picture itself is untouched (it stays the pack's asset)
    assert not (nodeflow_server.input / "red-circle.png").exists()
    a = alpha(nodeflow_server, name)
    transparent = a < 128
    assert transparent[52, 10:29].all() and transparent[50:55, 19].all()  # where painted
    assert (a[:40] == 255).all() and (a[:, 40:] == 255).all()  # the undone stroke, and elsewhere
    assert int((a < 128).sum()) == second  # the editor counts pixels masked at least half
    node(page, "load").locator('[data-testid="input-image-path"]').wait_for(state="visible")
    shot("saved")

    # the workflow runs on the masked upload and makes a new picture
    outputs_before = set(nodeflow_server.output.rglob("web-mask*.png"))
    queue(page)
    info = wait_image(page, "save", timeout=180)
    assert info["width"] == SIZE and info["complete"], info
    made = set(nodeflow_server.output.rglob("web-mask*.png")) - outputs_before
    assert len(made) == 1, made
    with Image.open(made.pop()) as picture:
        result = np.asarray(picture.convert("RGB")).astype(int)
    with Image.open(ASSET) as source:
        original = np.asarray(source.convert("RGB")).astype(int)
    # far from the mask (feathered by 3 pixels) the source is kept; inside it, repainted
    assert np.abs(result[:44] - original[:44]).max() <= 1
    assert np.abs(result[50:55, 10:29] - original[50:55, 10:29]).mean() > 5
    run = nodeflow_server.get(f"/api/runs/{nodeflow_server.runs()[0]['run_id']}")
    assert run["status"] == "finished", run
    assert run["workflow"]["nodes"]["load"]["inputs"]["path"] == name
    shot("ran")

    # save the workflow and load it back: the node still names the masked upload, whose mask the
    # editor shows again
    with page.expect_download() as download_info:
        page.locator("[data-testid=save-workflow]").click()
    saved_path = tmp_path / "masked-workflow.json"
    download_info.value.save_as(saved_path)
    saved = json.loads(saved_path.read_text())
    assert saved["nodes"]["load"]["inputs"]["path"] == name
    clear_canvas(page)
    load_workflow(page, saved)
    assert image_path(page) == name
    open_mask_editor(page)
    wait_until(lambda: painted(page) == second, 5, "the saved mask in the editor")
    page.locator("[data-testid=mask-cancel]").click()
    editor(page).wait_for(state="detached")
    assert image_path(page) == name


def test_clear_and_invert(page, shot, nodeflow_server):
    open_editor(page)
    load_workflow(page, example("inpaint.json"))
    # Escape cancels, leaving the node as it was
    open_mask_editor(page)
    page.locator("[data-testid=mask-invert]").click()
    page.keyboard.press("Escape")
    editor(page).wait_for(state="detached")
    assert image_path(page) == "red-circle.png"

    open_mask_editor(page)
    assert painted(page) == 0
    page.locator("[data-testid=mask-invert]").click()
    wait_until(lambda: painted(page) == SIZE * SIZE, 5, "everything masked after invert")
    name = save_mask(page, "red-circle.png")
    assert (alpha(nodeflow_server, name) == 0).all()

    # the masked picture opens with its mask; clear, one dot, invert: all but the dot
    open_mask_editor(page)
    wait_until(lambda: painted(page) == SIZE * SIZE, 5, "the whole mask back from the upload")
    page.locator("[data-testid=mask-clear]").click()
    wait_until(lambda: painted(page) == 0, 5, "nothing masked after clear")
    page.locator("[data-testid=mask-undo]").click()
    wait_until(lambda: painted(page) == SIZE * SIZE, 5, "clear undone")
    page.locator("[data-testid=mask-clear]").click()
    set_brush(page, 8)
    # the slider's arrow keys still work while the editor keeps keys from the graph
    size_value = page.locator("[data-testid=mask-brush-size-value]")
    page.locator("[data-testid=mask-brush-size]").press("ArrowRight")
    wait_until(lambda: size_value.inner_text() == "9", 5, "brush 9 after ArrowRight")
    page.locator("[data-testid=mask-brush-size]").press("ArrowLeft")
    wait_until(lambda: size_value.inner_text() == "8", 5, "brush 8 after ArrowLeft")
    stroke(page, [(32, 32), (32, 32)])
    dot = painted(page)
    assert 0 < dot < 100
    page.locator("[data-testid=mask-invert]").click()
    wait_until(lambda: painted(page) == SIZE * SIZE - dot, 5, "all but the dot after invert")
    shot("inverted")
    again = save_mask(page, name)
    assert again.startswith("red-circle-masked") and again != name, again
    a = alpha(nodeflow_server, again)
    assert a[32, 32] > 128 and a[0, 0] == 0 and a[63, 63] == 0
    assert int((a >= 128).sum()) == dot
    assert (alpha(nodeflow_server, name) == 0).all()  # the earlier upload is kept as it was


@pytest.mark.parametrize("kind", ["jpeg", "palette-png", "16-bit-png"])
def test_pictures_the_png_reader_does_not_decode_go_through_a_canvas(page, nodeflow_server, kind):
    """JPEGs, palette and 16-bit PNGs are read through a canvas; the mask still lands in alpha."""
    with Image.open(ASSET) as source:
        rgb = source.convert("RGB")
    name = f"mask-source-{kind}.{'jpg' if kind == 'jpeg' else 'png'}"
    target = nodeflow_server.input / name
    if kind == "jpeg":
        rgb.save(target, quality=95)
        with Image.open(target) as written:
            expected = np.asarray(written.convert("RGB")).astype(int)
    elif kind == "palette-png":
        palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
        palette.save(target)
        expected = np.asarray(palette.convert("RGB")).astype(int)
    else:  # 16-bit grey: the 8-bit grey value v stored as v * 257
        grey = np.asarray(rgb.convert("L")).astype(np.uint16)
        Image.fromarray((grey * 257).astype("<u2")).save(target)
        expected = np.repeat(grey.astype(int)[..., None], 3, axis=2)

    open_editor(page)
    workflow = example("inpaint.json")
    workflow["nodes"]["load"]["inputs"]["path"] = name
    load_workflow(page, workflow)
    open_mask_editor(page)
    assert painted(page) == 0
    set_brush(page, 10)
    stroke(page, [(32, 32), (32, 32)])
    dot = painted(page)
    assert dot > 0
    saved = save_mask(page, name)
    assert saved == f"mask-source-{kind}-masked.png"
    with Image.open(nodeflow_server.input / saved) as picture:
        assert picture.mode == "RGBA" and picture.size == (SIZE, SIZE)
        rgba = np.asarray(picture).astype(int)
    assert int((rgba[..., 3] < 128).sum()) == dot and rgba[32, 32, 3] == 0
    assert (rgba[:20, :, 3] == 255).all()
    opaque = rgba[..., 3] == 255
    # opaque pixels keep the picture's colours (a canvas may round them by one)
    assert np.abs(rgba[..., :3][opaque] - expected[opaque]).max() <= 2
