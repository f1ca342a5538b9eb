"""nodeflow-imageops: the operations, and the plugin as nodeflow loads it from its entry point."""

from __future__ import annotations

import pytest
import torch
from nodeflow_imageops import grid, lut, ops

from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodeflow.plugins import load_catalog
from nodeflow.validate import validate
from nodeflow.workflow import Workflow
from nodes.types import Image


def pictures(batch: int = 2, height: int = 8, width: int = 12) -> Image:
    generator = torch.Generator().manual_seed(0)
    return Image(torch.rand((batch, height, width, 3), generator=generator))


def test_the_plugin_loads_namespaced_with_its_loader_and_extension():
    catalog = load_catalog()
    assert not [f for f in catalog.failures if f.plugin == "imageops"], catalog.failures
    info = catalog.plugin("imageops")
    assert (info.distribution, info.api_version) == ("nodeflow-imageops", 1)
    expected = {"Resize", "Crop", "LanczosUpscale", "Composite", "ImageGrid", "ApplyLUT"}
    assert {t for t, p in catalog.node_plugins.items() if p == "imageops"} == {
        f"imageops.{name}" for name in expected
    }
    assert catalog.loaders.owners[".cube"] == "imageops"
    (extension,) = [e for e in catalog.web_extensions if e.plugin == "imageops"]
    assert extension.to_json()["scripts"] == ["/extensions/imageops/imageops.js"]


def test_resize_and_upscale_keep_values_in_range_and_identity_at_the_same_size():
    image = pictures()
    same = ops.resize(image, width=12, height=8, method="lanczos")
    assert torch.allclose(same.pixels, image.pixels, atol=1e-5)
    bigger = ops.lanczos_upscale(image, scale=2.0)
    assert bigger.pixels.shape == (2, 16, 24, 3)
    assert bigger.pixels.min() >= 0 and bigger.pixels.max() <= 1
    nearest = ops.resize(image, width=24, height=16, method="nearest")
    assert torch.equal(nearest.pixels[:, ::2, ::2], image.pixels)


def test_crop_cuts_exactly_and_refuses_a_rectangle_outside():
    image = pictures()
    cut = ops.crop(image, x=2, y=1, width=5, height=4)
    assert torch.equal(cut.pixels, image.pixels[:, 1:5, 2:7])
    with pytest.raises(ValueError, match="does not fit a 12x8 picture"):
        ops.crop(image, x=10, y=0, width=5, height=4)


def test_composite_pastes_clipped_and_blends_by_opacity():
    dest = Image(torch.zeros((2, 8, 8, 3)))
    src = Image(torch.ones((1, 4, 4, 3)))
    out = ops.composite(dest, src, x=6, y=-2, opacity=0.5).pixels
    assert torch.equal(out[:, 0:2, 6:8], torch.full((2, 2, 2, 3), 0.5))
    assert out.sum() == 2 * 2 * 2 * 3 * 0.5  # the rest fell outside
    assert dest.pixels.sum() == 0  # inputs are never modified (they may be cached)


def test_image_grid_lays_out_cells_exactly_with_labels_above():
    image = pictures(batch=3)
    out = grid.make_grid(image, columns=2, labels=["cfg 1", "cfg 7.5", "cfg 15"], padding=4)
    strip = grid._strip_height(grid._label_font(["cfg 1", "cfg 7.5", "cfg 15"], 12))
    height = 2 * (8 + strip) + 3 * 4
    assert out.pixels.shape == (1, height, 2 * 12 + 3 * 4, 3)
    canvas = out.pixels[0]
    top = 4 + 8 + strip + 4 + strip  # second row, below its label
    assert torch.equal(canvas[4 + strip : 4 + strip + 8, 4:16], image.pixels[0])
    assert torch.equal(canvas[top : top + 8, 4:16], image.pixels[2])
    label = canvas[4 : 4 + strip, 4:16]
    assert label.min() < 0.5 < label.max()  # text drawn
    assert torch.all(canvas[top : top + 8, 20:32] == 1)  # the empty fourth cell
    unlabelled = grid.image_grid(image, labels="", columns=3, padding=0)
    assert unlabelled.pixels.shape == (1, 8, 36, 3)
    with pytest.raises(ValueError, match="4 labels for 3 pictures"):
        grid.image_grid(image, labels="a\nb\nc\nd")


PROMPTS = [  # the README's grid (workflows/prompt_grid.json)
    "a large red circle on a blue background",
    "two small yellow squares on a black background",
    "three small orange circles on a purple background",
    "a small blue square at the top on a yellow background",
    "two small green triangles on a red background",
]


def _words_seen(strip: torch.Tensor, gap: int = 3) -> int:
    """How many runs of ink a label strip shows, separated by at least ``gap`` blank columns."""
    ink = (strip[..., 0] < 0.5).any(dim=0).tolist()
    runs, blank = 0, gap
    for column in ink:
        if column:
            runs += blank >= gap
            blank = 0
        else:
            blank += 1
    return runs


@pytest.mark.parametrize("width", [320, 256])
def test_grid_labels_keep_the_spaces_between_words(width):
    """Each word is its own run of ink, at least 3 px from the next, while letters within a word
    are closer: at 10 px Pillow's default font put "two" and "small" 2 px apart, as close as its
    letters ("twosmall yellowsquareson" in the README's grid)."""
    font = grid._label_font(PROMPTS, width)
    assert font.size >= grid.MIN_FONT
    height = grid._strip_height(font)
    for prompt in PROMPTS:
        strip = grid._label(prompt, width, height, font)
        assert strip.min() < 0.5, "nothing drawn"
        assert _words_seen(strip) == len(prompt.split()), prompt
        assert not torch.any(strip[-1] < 0.5) and not torch.any(strip[0] < 0.5), "text clipped"


def test_a_long_label_is_cut_at_the_cell_with_an_ellipsis():
    font = grid._label_font(PROMPTS, 96)
    assert font.size == grid.MIN_FONT  # nothing fits 96 px: the smallest size, then cut
    strip = grid._label(PROMPTS[1], 96, grid._strip_height(font), font)
    ink = (strip[..., 0] < 0.5).any(dim=0)
    assert ink[:2].sum() == 0 and ink[-2:].sum() == 0  # inside its cell, margins kept
    assert grid._text_width("two small…", font) <= 92


def test_a_cube_lut_is_read_and_an_identity_lut_changes_nothing(tmp_path):
    rows = [f"{r / 2} {g / 2} {b / 2}" for b in range(3) for g in range(3) for r in range(3)]
    (tmp_path / "id.cube").write_text('TITLE "identity"\nLUT_3D_SIZE 3\n' + "\n".join(rows))
    identity = lut.load_cube(tmp_path / "id.cube")
    assert identity.size == 3 and identity.title == "identity"
    image = pictures()
    assert torch.allclose(lut.apply(identity, image).pixels, image.pixels, atol=1e-6)
    warm = lut.load_cube(lut.BUNDLED / "warm.cube")
    graded = lut.apply(warm, Image(torch.full((1, 1, 1, 3), 0.5))).pixels.flatten()
    assert graded[0] > 0.5 and graded[2] < 0.5  # warmer: more red, less blue
    (tmp_path / "short.cube").write_text("LUT_3D_SIZE 3\n0 0 0\n")
    with pytest.raises(ValueError, match="needs 27 rows, found 1"):
        lut.load_cube(tmp_path / "short.cube")


def test_apply_lut_runs_in_a_workflow_through_the_registered_loader(tmp_path):
    catalog = load_catalog()
    env = Environment.from_dirs(tmp_path / "models", tmp_path / "out", tmp_path / "in")
    executor = Executor(catalog, env=env)
    calls = []
    catalog.loaders.loaders[".cube"] = lambda path: calls.append(path) or lut.load_cube(path)
    from PIL import Image as PILImage

    (tmp_path / "in").mkdir()
    PILImage.new("RGB", (8, 8), (128, 128, 128)).save(tmp_path / "in" / "grey.png")
    workflow = Workflow.from_json(
        {
            "version": 1,
            "nodes": {
                "load": {"type": "LoadImage", "inputs": {"path": "grey.png"}},
                "up": {
                    "type": "imageops.LanczosUpscale",
                    "inputs": {"image": {"from": "load.image"}},
                },
                "lut": {"type": "imageops.ApplyLUT", "inputs": {"image": {"from": "up.image"}}},
            },
        }
    )
    result = executor.run(workflow, targets=["lut"])
    assert result.ok, result.error
    assert calls and calls[0].name == "warm.cube"  # the bundled default, via ctx.loaders
    assert result.values["lut"]["image"].pixels.shape == (1, 16, 16, 3)


def test_a_missing_lut_is_found_by_validation_through_the_registered_file_kind(tmp_path):
    catalog = load_catalog()
    assert catalog.loaders.owners["luts"] == "imageops"
    env = Environment.from_dirs(tmp_path / "models", tmp_path / "out", tmp_path / "in")
    workflow = Workflow.from_json(
        {
            "version": 1,
            "nodes": {
                "load": {"type": "LoadImage", "inputs": {"path": "red-circle.png"}},
                "warm": {
                    "type": "imageops.ApplyLUT",
                    "inputs": {"image": {"from": "load.image"}},  # the bundled warm.cube
                },
                "lut": {
                    "type": "imageops.ApplyLUT",
                    "inputs": {"image": {"from": "load.image"}, "path": "cool.cube"},
                },
            },
        }
    )
    (issue,) = validate(workflow, catalog, targets=["warm", "lut"], env=env)[1]
    assert (issue.node, issue.input, issue.code) == ("lut", "path", "file_not_found")
    assert issue.message == (
        f"no LUT 'cool.cube' in {tmp_path / 'models' / 'luts'} or {lut.BUNDLED}"
    )
    with pytest.raises(FileNotFoundError, match=r"no LUT 'cool\.cube'"):  # the node agrees
        lut.resolve("cool.cube", env)
    (tmp_path / "models" / "luts").mkdir(parents=True)
    (tmp_path / "models" / "luts" / "cool.cube").write_text("LUT_3D_SIZE 2\n" + "0 0 0\n" * 8)
    assert validate(workflow, catalog, targets=["warm", "lut"], env=env)[1] == []
    assert lut.resolve("cool.cube", env) == tmp_path / "models" / "luts" / "cool.cube"
