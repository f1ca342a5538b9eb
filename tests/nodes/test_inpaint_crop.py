"""Inpainting a crop around the mask (crop and stitch) against diffusers' ``padding_mask_crop``.

``StableDiffusionInpaintPipeline(..., padding_mask_crop=p)`` cuts the mask's box plus ``p``
pixels, widened to the output's aspect ratio (``get_crop_region``), scales the crop and the mask
to the output size with PIL's Lanczos filter in 8 bits, inpaints it, rounds the decode to 8 bits,
scales it back to the crop's size (Lanczos again) and pastes it into the original through the
mask (``apply_overlay``). The same graph in nodes: CropToMask with ``fit_width``/``fit_height``,
ScaleImage/ScaleMask with ``lanczos`` and crop ``fill`` (diffusers' fitting of a box of another
aspect ratio), ThresholdMask (diffusers binarizes the mask), the inpainting, ScaleImage back to
the crop's size (crop ``cover``) and ImageCompositeMasked at the crop's place.

Tolerances: the decode of the crop, before diffusers rounds it, agrees to 1e-4 like every parity
test (``tests/nodes/pixels.py``). The final pictures are both 8-bit: outside the mask they are the
source exactly; inside, the two decodes are rounded to 0..255 before the Lanczos filter, and where
a value lies within their float difference (about 1e-6) of a rounding boundary the two round
apart by one level, which the filter spreads to a few neighbours (its weights sum to 1, the
largest is below 1.2). So the final pictures may differ by at most 2 levels, in at most 0.1% of
the values; a wrong box, filter, rounding or paste changes far more (measured 2026-11-30: bicubic
instead of lanczos on the way back, 67-85 levels in 5% of the values; the graph as written, 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_inpaint import NEGATIVE, PROMPT, SCALE, SEED, STEPS, inpaint_models  # noqa: F401
from test_parity import TOLERANCE, reference_scheduler

from nodeflow.builder import WorkflowBuilder
from nodeflow.workflow import Workflow
from nodes.mask_crop import aspect_box, crop_to_mask, mask_box
from nodes.types import Image as Picture
from nodes.types import Mask

WIDTH, HEIGHT = 96, 64
"""The source picture; the crop is inpainted at the size a case gives."""
PADDING = 6
LEVEL = 1 / 255
BOXES = {"inside": np.s_[20:36, 50:70], "edge": np.s_[44:62, 60:96]}
"""Masked boxes: one well inside the picture; one at its edge, whose crop box for 64x48 is clamped
to 42x31, not 4:3, so diffusers fits it with a stretched line above and below (``fill``)."""


@pytest.fixture
def pictures(tmp_path: Path) -> dict[str, Image.Image]:
    """A random picture and hard masks of ``BOXES``, in the input folder."""
    rng = np.random.default_rng(1)
    picture = Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), "RGB")
    folder = tmp_path / "input"
    folder.mkdir(exist_ok=True)
    picture.save(folder / "picture.png")
    made = {"picture": picture}
    for name, box in BOXES.items():
        values = np.zeros((HEIGHT, WIDTH), np.uint8)
        values[box] = 255
        made[name] = Image.fromarray(values, "L")
        made[name].save(folder / f"{name}.png")
    return made


def crop_graph(checkpoint: str, how: str, mask: str, size: tuple[int, int]) -> Workflow:
    """Crop, scale up to ``size``, inpaint (``how``: "conditioning" for a 9-channel model,
    "noise-mask" for an ordinary one), scale back, paste, through the mask ``mask``. Targets:
    ``decode`` (the crop) and ``paste``."""
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", path=checkpoint)
    pos = b.add("TextEncode", text_encoder=model.text_encoder, text=PROMPT)
    neg = b.add("TextEncode", text_encoder=model.text_encoder, text=NEGATIVE)
    picture = b.add("LoadImage", path="picture.png")
    selection = b.add("ImageToMask", image=b.add("LoadImage", path=f"{mask}.png").image)
    crop = b.add("CropToMask", image=picture.image, mask=selection.mask, padding=PADDING,
                 fit_width=size[0], fit_height=size[1])  # fmt: skip
    image = b.add("ScaleImage", image=crop.image, width=size[0], height=size[1],
                  method="lanczos", crop="fill")  # fmt: skip
    scaled = b.add("ScaleMask", mask=crop.mask, width=size[0], height=size[1],
                   method="lanczos", crop="fill")  # fmt: skip
    mask = b.add("ThresholdMask", mask=scaled.mask, value=0.5).mask
    if how == "conditioning":
        conditioning = b.add("InpaintModelConditioning", positive=pos.conditioning,
                             negative=neg.conditioning, vae=model.vae, image=image.image,
                             mask=mask)  # fmt: skip
        positive, negative = conditioning.positive, conditioning.negative
        latent = conditioning.latent
    else:
        encoded = b.add("VAEEncode", vae=model.vae, image=image.image)
        latent = b.add("SetLatentNoiseMask", latent=encoded.latent, mask=mask).latent
        positive, negative = pos.conditioning, neg.conditioning
    cfg = b.add("CFG", unet=model.unet, positive=positive, negative=negative, scale=SCALE)
    sched = b.add("Scheduler", unet=model.unet, name="euler", steps=STEPS)
    denoised = b.add("Denoise", guider=cfg.guider, scheduler=sched.scheduler, latent=latent,
                     seed=SEED, strength=1.0)  # fmt: skip
    decoded = b.add("VAEDecode", id="decode", vae=model.vae, latent=denoised.latent)
    back = b.add("ScaleImage", image=decoded.image, width=crop.width, height=crop.height,
                 method="lanczos", crop="cover")  # fmt: skip
    b.add("ImageCompositeMasked", id="paste", destination=picture.image, source=back.image,
          x=crop.x, y=crop.y, mask=crop.mask)  # fmt: skip
    return b.build()


def diffusers_crop(
    folder: Path, picture: Image.Image, mask: Image.Image, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """diffusers' final 8-bit picture (as floats) and its float decode of the crop, read where
    the pipeline hands it to ``postprocess``."""
    from diffusers import StableDiffusionInpaintPipeline

    pipeline = StableDiffusionInpaintPipeline.from_pretrained(folder, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.scheduler = reference_scheduler(pipeline, "euler")
    decodes = []
    postprocess = pipeline.image_processor.postprocess

    def recording(image, **kwargs):
        decodes.append((image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy())
        return postprocess(image, **kwargs)

    pipeline.image_processor.postprocess = recording
    final = pipeline(prompt=PROMPT, negative_prompt=NEGATIVE, image=picture, mask_image=mask,
                     width=size[0], height=size[1], padding_mask_crop=PADDING, strength=1.0,
                     num_inference_steps=STEPS, guidance_scale=SCALE,
                     generator=torch.Generator("cpu").manual_seed(SEED)).images[0]  # fmt: skip
    return np.asarray(final, dtype=np.float32)[None] / 255, decodes[0]


@pytest.mark.parametrize(
    ("checkpoint", "how", "mask", "size"),
    [
        ("tiny-inpaint", "conditioning", "inside", (64, 64)),
        ("tiny", "noise-mask", "inside", (64, 64)),
        ("tiny-inpaint", "conditioning", "edge", (64, 48)),
    ],
)
@pytest.mark.usefixtures("inpaint_models")
def test_crop_and_stitch_equals_diffusers_padding_mask_crop(
    models_dir, pictures, make_executor, checkpoint, how, mask, size
):
    """The edge case's crop box is clamped by the picture and is not of the output's aspect
    ratio, so diffusers fits it (``fill``) and covers the box on the way back (``cover``)."""
    folder = models_dir / "checkpoints" / checkpoint
    expected_final, expected_decode = diffusers_crop(folder, pictures["picture"],
                                                     pictures[mask], size)  # fmt: skip
    workflow = crop_graph(checkpoint, how, mask, size)
    result = make_executor().run(workflow, targets=["decode", "paste"])
    assert result.ok, result.error and result.error.traceback
    decode = result.values["decode"]["image"].pixels.numpy()
    final = result.values["paste"]["image"].pixels.numpy()
    assert decode.shape == expected_decode.shape == (1, size[1], size[0], 3)
    assert np.abs(decode - expected_decode).max() <= TOLERANCE
    assert final.shape == expected_final.shape == (1, HEIGHT, WIDTH, 3)
    difference = np.abs(final - expected_final)
    assert difference.max() <= 2 * LEVEL + 1e-6
    assert (difference > LEVEL / 2).mean() <= 1e-3
    source = np.asarray(pictures["picture"], dtype=np.float32)[None] / 255
    outside = np.asarray(pictures[mask])[None] == 0
    assert np.array_equal(final[outside], source[outside])
    assert np.abs(final - source)[~outside].mean() > 10 * LEVEL  # the box was repainted


def diffusers_box(values: np.ndarray, padding: int, fit: tuple[int, int]) -> tuple[int, ...]:
    from diffusers.image_processor import VaeImageProcessor

    mask = Image.fromarray(values.astype(np.uint8) * 255, "L")
    return tuple(VaeImageProcessor.get_crop_region(mask, fit[0], fit[1], pad=padding))


def test_the_fitted_crop_box_is_diffusers_get_crop_region_near_edges_and_for_any_aspect():
    rng = np.random.default_rng(0)
    for _ in range(300):
        height, width = (int(v) for v in rng.integers(8, 80, 2))
        values = np.zeros((height, width), bool)
        y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
        y1 = y0 + int(rng.integers(1, height - y0 + 1))
        x1 = x0 + int(rng.integers(1, width - x0 + 1))
        values[y0:y1, x0:x1] = True
        padding = int(rng.integers(0, 20))
        fit = (int(rng.integers(8, 128)), int(rng.integers(8, 128)))
        box = mask_box(torch.from_numpy(values)[None])
        assert aspect_box(box, padding, width, height, fit) == diffusers_box(values, padding, fit)


def test_crop_to_mask_fitted_cuts_that_box_and_says_its_size():
    values = torch.zeros(1, 40, 60)
    values[0, 10:14, 50:58] = 1.0
    pixels = torch.rand(1, 40, 60, 3, generator=torch.Generator().manual_seed(0))
    crop = crop_to_mask(Picture(pixels), Mask(values), padding=2, fit_width=32, fit_height=16)
    x0, y0, x1, y1 = diffusers_box(values[0].numpy() > 0, 2, (32, 16))
    assert (crop.x, crop.y, crop.width, crop.height) == (x0, y0, x1 - x0, y1 - y0)
    assert torch.equal(crop.image.pixels, pixels[:, y0:y1, x0:x1])
    with pytest.raises(ValueError, match="both fit_width and fit_height"):
        crop_to_mask(Picture(pixels), Mask(values), fit_width=32)


@pytest.mark.parametrize("mode", ["fill", "cover"])
def test_fill_and_cover_are_diffusers_resize_modes(mode):
    """ScaleImage's lanczos ``fill``/``cover`` against ``VaeImageProcessor.resize`` with
    ``resize_mode`` ``fill``/``crop`` (PIL), for aspect ratios above, equal to and below."""
    from diffusers.image_processor import VaeImageProcessor

    from nodes.scale import scale_image

    processor = VaeImageProcessor()
    rng = np.random.default_rng(3)
    sizes = [((42, 31), (64, 48)), ((61, 46), (64, 48)), ((40, 30), (64, 48)),
             ((64, 48), (33, 25)), ((64, 48), (42, 31)), ((30, 50), (64, 64))]  # fmt: skip
    for (width, height), (to_width, to_height) in sizes:
        levels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        expected = processor.resize(Image.fromarray(levels), to_height, to_width,
                                    resize_mode="fill" if mode == "fill" else "crop")  # fmt: skip
        pixels = torch.from_numpy(levels[None].astype(np.float32) / 255)
        out = scale_image(Picture(pixels), width=to_width, height=to_height, method="lanczos",
                          crop=mode).pixels[0]  # fmt: skip
        assert torch.equal(out, torch.from_numpy(np.asarray(expected, np.float32) / 255))
    with pytest.raises(ValueError, match="needs method 'lanczos'"):
        scale_image(Picture(pixels), width=8, height=8, method="bicubic", crop=mode)
