"""Mask nodes: each against values worked out by hand, and LoadImage's alpha as ComfyUI reads it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from nodeflow.builder import WorkflowBuilder
from nodes.mask_crop import crop_to_mask, image_composite_masked
from nodes.masks import (
    blur_mask,
    color_to_mask,
    feather_mask,
    grow_mask,
    image_to_mask,
    invert_mask,
    mask_composite,
    mask_to_image,
    scale_mask,
    solid_mask,
    threshold_mask,
)
from nodes.types import Image, Mask


def square(size: int = 9, box: tuple[int, int, int, int] = (3, 3, 6, 6)) -> Mask:
    """A mask of ``size`` x ``size`` with ones in [left, right) x [top, bottom) of ``box``."""
    values = torch.zeros(1, size, size)
    left, top, right, bottom = box
    values[:, top:bottom, left:right] = 1
    return Mask(values)


def test_load_image_gives_one_minus_alpha_as_the_mask(make_executor, tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    rgba[1, 2, 3] = 0  # transparent: to repaint
    rgba[2, 3, 3] = 51  # mostly transparent
    PILImage.fromarray(rgba, "RGBA").save(tmp_path / "hole.png")
    PILImage.fromarray(rgba[..., :3], "RGB").save(tmp_path / "solid.png")
    b = WorkflowBuilder()
    b.add("LoadImage", id="hole", path=str(tmp_path / "hole.png"))
    b.add("LoadImage", id="solid", path=str(tmp_path / "solid.png"))
    result = make_executor().run(b.build(), targets=["hole", "solid"])
    assert result.ok, result.error
    mask = result.values["hole"]["mask"].values
    assert mask.shape == (1, 4, 6)
    expected = torch.zeros(1, 4, 6)
    expected[0, 1, 2] = 1.0
    expected[0, 2, 3] = 1 - 51 / 255
    assert torch.allclose(mask, expected)
    assert result.values["hole"]["image"].pixels[0, 0, 0].tolist() == [1.0, 0.0, 0.0]
    empty = result.values["solid"]["mask"].values
    assert empty.shape == (1, 4, 6) and not empty.any()


def test_mask_from_a_channel_a_colour_and_a_threshold():
    pixels = torch.zeros(1, 2, 2, 3)
    pixels[0, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    pixels[0, 0, 1] = torch.tensor([250 / 255, 2 / 255, 0.0])
    pixels[0, 1, 1] = torch.tensor([0.0, 0.4, 1.0])
    image = Image(pixels)
    assert torch.equal(image_to_mask(image, "green").values, pixels[..., 1])
    assert color_to_mask(image, 0xFF0000).values.tolist() == [[[1.0, 0.0], [0.0, 0.0]]]
    assert color_to_mask(image, 0xFF0000, tolerance=5).values.tolist() == [[[1.0, 1.0], [0, 0]]]
    soft = Mask(torch.tensor([[[0.2, 0.5], [0.51, 0.9]]]))
    assert threshold_mask(soft, 0.5).values.tolist() == [[[0.0, 0.0], [1.0, 1.0]]]
    assert torch.allclose(invert_mask(soft).values, torch.tensor([[[0.8, 0.5], [0.49, 0.1]]]))
    assert mask_to_image(soft).pixels[0, 1, 0].tolist() == pytest.approx([0.51] * 3)
    assert solid_mask(0.25, 3, 2).values.tolist() == [[[0.25] * 3] * 2]


def test_grow_and_shrink_by_pixels_square_or_tapered():
    grown = grow_mask(square(), 1, tapered_corners=False).values[0]
    assert grown.sum() == 25 and grown[2:7, 2:7].all()
    tapered = grow_mask(square(), 1, tapered_corners=True).values[0]
    assert tapered.sum() == 21 and tapered[2, 2] == 0 and tapered[2, 3] == 1
    shrunk = grow_mask(square(), -1, tapered_corners=False).values[0]
    assert shrunk.sum() == 1 and shrunk[4, 4] == 1
    assert grow_mask(square(), -2).values.sum() == 0
    assert torch.equal(grow_mask(square(), 0).values, square().values)


def test_blur_feathers_the_edge_and_keeps_the_middle_and_far_away():
    mask = square(21, (5, 5, 16, 16))
    blurred = blur_mask(mask, 2).values[0]
    assert blurred[10, 10] == pytest.approx(1.0, abs=1e-4)
    assert blurred[0, 0] == pytest.approx(0.0, abs=1e-6)
    edge = blurred[10, 3:8].tolist()
    assert edge == sorted(edge) and 0.2 < blurred[10, 5] < 0.8  # a ramp across the edge
    assert torch.equal(blur_mask(mask, 0).values, mask.values)


def test_feather_fades_towards_the_named_borders():
    values = feather_mask(solid_mask(1.0, 4, 2), left=2, right=0, top=0, bottom=2).values[0]
    # columns from the left x 1/2, 2/2; rows from the bottom x 1/2, 2/2
    assert values.tolist() == [[0.5, 1.0, 1.0, 1.0], [0.25, 0.5, 0.5, 0.5]]
    right = feather_mask(solid_mask(1.0, 4, 1), right=4).values[0, 0].tolist()
    assert right == [1.0, 0.75, 0.5, 0.25]


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ("multiply", [0.3 * 0.6, 0.0]),
        ("add", [0.9, 1.0]),
        ("subtract", [0.0, 1.0]),
        ("max", [0.6, 1.0]),
        ("min", [0.3, 0.0]),
        ("and", [0.0, 0.0]),
        ("or", [1.0, 1.0]),
        ("xor", [1.0, 1.0]),
    ],
)
def test_combine_masks(operation, expected):
    a = Mask(torch.tensor([[[0.3, 1.0]]]))
    b = Mask(torch.tensor([[[0.6, 0.0]]]))
    result = mask_composite(a, b, operation=operation).values[0, 0].tolist()
    assert result == pytest.approx(expected)


def test_combine_places_a_smaller_source_at_an_offset_and_refuses_other_sizes():
    placed = mask_composite(solid_mask(0, 4, 4), solid_mask(1, 2, 2), x=3, y=1, operation="add")
    assert placed.values[0].nonzero().tolist() == [[1, 3], [2, 3]]
    with pytest.raises(ValueError, match="source is 2x2 but destination is 4x4"):
        mask_composite(solid_mask(0, 4, 4), solid_mask(1, 2, 2))


def test_scale_mask_resizes_on_purpose():
    scaled = scale_mask(square(4, (0, 0, 2, 4)), 8, 0, "nearest-exact").values
    assert scaled.shape == (1, 8, 8) and scaled[0, :, :4].all() and not scaled[0, :, 4:].any()


def test_crop_to_mask_pads_rounds_to_a_multiple_and_stays_inside():
    image = Image(torch.rand(1, 40, 50, 3))
    mask = Mask(torch.zeros(1, 40, 50))
    mask.values[0, 10:14, 44:47] = 1  # x 44..46, y 10..13
    crop = crop_to_mask(image, mask, padding=2, multiple_of=8)
    # x: 42..49 padded (limit 50) -> 8 wide; y: 8..16 -> 8 high
    assert (crop.x, crop.y) == (42, 8)
    assert crop.image.pixels.shape == (1, 8, 8, 3)
    assert torch.equal(crop.image.pixels, image.pixels[:, 8:16, 42:50])
    assert torch.equal(crop.mask.values, mask.values[:, 8:16, 42:50])
    with pytest.raises(ValueError, match="mask is 9x9 but image is 50x40"):
        crop_to_mask(image, square(), padding=0)
    with pytest.raises(ValueError, match="selects nothing"):
        crop_to_mask(image, Mask(torch.zeros(1, 40, 50)))


def test_a_noise_mask_must_fit_the_latent():
    from nodes.noise_mask import set_latent_noise_mask
    from nodes.types import Latent

    latent = Latent(samples=torch.zeros(2, 4, 4, 4), width=8, height=8, batch_size=2)
    marked = set_latent_noise_mask(latent, solid_mask(1.0, 8, 8))
    assert marked.noise_mask.shape == (1, 8, 8) and marked.samples is latent.samples
    with pytest.raises(ValueError, match="mask is 8x4 but latent's picture is 8x8"):
        set_latent_noise_mask(latent, solid_mask(1.0, 8, 4))
    three = Mask(torch.ones(3, 8, 8))
    with pytest.raises(ValueError, match="mask has a batch of 3 but latent has 2"):
        set_latent_noise_mask(latent, three)
    empty = Latent(samples=None, width=8, height=8)
    with pytest.raises(ValueError, match="empty latent"):
        set_latent_noise_mask(empty, solid_mask(1.0, 8, 8))


def test_paste_back_through_the_mask_keeps_the_rest_exactly():
    destination = Image(torch.rand(1, 6, 6, 3))
    source = Image(torch.ones(1, 2, 3, 3))
    mask = Mask(torch.tensor([[[1.0, 0.5, 0.0], [0.0, 0.0, 1.0]]]))
    pasted = image_composite_masked(destination, source, x=2, y=3, mask=mask).pixels
    before, after = destination.pixels[0], pasted[0]
    changed = torch.zeros(6, 6, dtype=torch.bool)
    changed[3:5, 2:5] = True
    assert torch.equal(after[~changed], before[~changed])
    assert torch.allclose(after[3, 2], torch.ones(3))
    assert torch.allclose(after[3, 3], 0.5 + 0.5 * before[3, 3])
    assert torch.equal(after[3, 4], before[3, 4]) and torch.allclose(after[4, 4], torch.ones(3))
    whole = image_composite_masked(destination, source, x=5, y=5).pixels[0]
    assert torch.allclose(whole[5, 5], torch.ones(3)) and torch.equal(whole[:5], before[:5])
    with pytest.raises(ValueError, match="mask is 3x2 but source is 2x2"):
        image_composite_masked(destination, Image(torch.ones(1, 2, 2, 3)), mask=mask)
