"""ScaleLatent and ScaleImage: sizes, aspect ratio, crop, and empty latents."""

from __future__ import annotations

import torch

from nodes.scale import scale_image, scale_latent, target_size
from nodes.types import Image, Latent


def test_sizes_follow_the_other_side_or_the_factor():
    assert target_size(64, 32, 128, 0, 1.0) == (128, 64)
    assert target_size(64, 32, 0, 16, 1.0) == (32, 16)
    assert target_size(64, 32, 0, 0, 1.5) == (96, 48)
    assert target_size(60, 60, 0, 0, 1.5, multiple=8) == (88, 88)


def test_scale_latent_resizes_samples_and_keeps_their_scaling():
    samples = torch.arange(2 * 4 * 8 * 8, dtype=torch.float32).reshape(2, 4, 8, 8)
    latent = Latent(samples=samples, width=64, height=64, batch_size=2, scaling_factor=0.18)
    bigger = scale_latent(latent, width=96, height=96)
    assert bigger.samples.shape == (2, 4, 12, 12)
    assert (bigger.width, bigger.height, bigger.scaling_factor) == (96, 96, 0.18)
    empty = scale_latent(Latent(samples=None, width=64, height=48), factor=2.0)
    assert (empty.samples, empty.width, empty.height) == (None, 128, 96)


def test_scale_image_with_a_centre_crop_keeps_the_middle():
    pixels = torch.zeros(1, 20, 40, 3)
    pixels[:, :, 10:30] = 1.0  # a white middle half
    out = scale_image(Image(pixels), width=10, height=10, crop="center", method="nearest-exact")
    assert out.pixels.shape == (1, 10, 10, 3) and out.pixels.min() == 1.0


def test_each_method_is_torch_interpolate_with_that_mode():
    import torch.nn.functional as F

    samples = torch.randn(1, 4, 6, 10, generator=torch.Generator().manual_seed(0))
    latent = Latent(samples=samples, width=40, height=24)
    for method in ("nearest", "nearest-exact", "bilinear", "bicubic", "area"):
        out = scale_latent(latent, factor=2.0, method=method).samples
        kwargs = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
        expected = F.interpolate(samples, size=(12, 20), mode=method, **kwargs)
        assert torch.equal(out, expected), method
    nearest = scale_latent(latent, factor=2.0, method="nearest").samples
    assert torch.equal(nearest, samples.repeat_interleave(2, -1).repeat_interleave(2, -2))


def test_comfyui_names_find_the_scale_nodes():
    assert {"LatentUpscale", "LatentUpscaleBy"} <= set(scale_latent.__nodeflow_node__.aliases)
    assert {"ImageScale", "ImageScaleBy"} <= set(scale_image.__nodeflow_node__.aliases)


def test_lanczos_is_pil_lanczos_on_8_bit_pictures_and_masks():
    """ComfyUI's and diffusers' lanczos resize 8-bit pictures with PIL; so does ScaleImage."""
    import numpy as np
    from PIL import Image as PILImage

    from nodes.masks import scale_mask
    from nodes.types import Mask

    levels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    expected = PILImage.fromarray(levels).resize((45, 14), PILImage.Resampling.LANCZOS)
    pixels = torch.from_numpy(levels[None].astype(np.float32) / 255)
    out = scale_image(Image(pixels), width=45, height=14, method="lanczos").pixels
    assert torch.equal(out[0], torch.from_numpy(np.asarray(expected, np.float32) / 255))
    grey = PILImage.fromarray(levels[..., 0]).resize((10, 40), PILImage.Resampling.LANCZOS)
    mask = scale_mask(Mask(pixels[..., 0]), width=10, height=40, method="lanczos").values
    assert torch.equal(mask[0], torch.from_numpy(np.asarray(grey, np.float32) / 255))
