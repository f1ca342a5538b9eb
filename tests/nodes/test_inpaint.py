"""Inpainting against diffusers' inpaint pipelines: 9-channel models through the conditioning,
ordinary ones by blending the known latents back, same pixels (fp32, CPU, <= 1e-4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_parity import TOLERANCE, reference_scheduler

from nodeflow.builder import WorkflowBuilder
from nodeflow.workflow import Workflow

PROMPT, NEGATIVE, SEED, STEPS, SCALE = "a red square", "blurry", 5, 6, 6.0
WIDTH, HEIGHT = 64, 48


@pytest.fixture(scope="module")
def inpaint_models(models_dir: Path) -> Path:
    """Tiny SD 1.x and SDXL inpainting models (9-channel U-Nets) beside the other tiny models,
    and the SD one as a single file."""
    from nodes.tiny import write_single_file
    from nodes.tiny_inpaint import make_tiny_inpaint

    checkpoints = models_dir / "checkpoints"
    make_tiny_inpaint(checkpoints / "tiny-inpaint", family="sd1", seed=0)
    make_tiny_inpaint(checkpoints / "tiny-sdxl-inpaint", family="sdxl", seed=0)
    write_single_file(checkpoints / "tiny-inpaint", checkpoints / "tiny-inpaint.safetensors")
    return checkpoints


@pytest.fixture
def pictures(make_executor, tmp_path: Path) -> tuple[Image.Image, Image.Image]:
    """A random picture and a hard rectangular mask, in the executor's input folder."""
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), "RGB")
    values = np.zeros((HEIGHT, WIDTH), np.uint8)
    values[10:30, 20:50] = 255
    mask = Image.fromarray(values, "L")
    folder = tmp_path / "input"
    folder.mkdir(exist_ok=True)
    picture.save(folder / "picture.png")
    mask.save(folder / "mask.png")
    return picture, mask


def inpaint_graph(
    checkpoint: str, how: str, strength: float, scheduler: str = "euler", mask: str = "mask.png"
) -> Workflow:
    """``how``: "conditioning" (InpaintModelConditioning), "noise-mask" (VAEEncode and
    SetLatentNoiseMask), or "both" (InpaintModelConditioning with noise_mask on)."""
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path=checkpoint)
    pos = b.add("TextEncode", text_encoder=model.text_encoder, text=PROMPT)
    neg = b.add("TextEncode", text_encoder=model.text_encoder, text=NEGATIVE)
    picture = b.add("LoadImage", path="picture.png")
    mask_picture = b.add("LoadImage", path=mask)
    selection = b.add("ImageToMask", image=mask_picture.image, channel="red")
    sched = b.add("Scheduler", unet=model.unet, name=scheduler, steps=STEPS)
    if how == "noise-mask":
        encoded = b.add("VAEEncode", vae=model.vae, image=picture.image)
        latent = b.add("SetLatentNoiseMask", latent=encoded.latent, mask=selection.mask).latent
        positive, negative = pos.conditioning, neg.conditioning
    else:
        conditioning = b.add(
            "InpaintModelConditioning",
            id="inpaint",
            positive=pos.conditioning,
            negative=neg.conditioning,
            vae=model.vae,
            image=picture.image,
            mask=selection.mask,
            noise_mask=how == "both",
        )
        positive, negative = conditioning.positive, conditioning.negative
        latent = conditioning.latent
    cfg = b.add("CFG", id="cfg", unet=model.unet, positive=positive, negative=negative, scale=SCALE)
    denoised = b.add(
        "Denoise",
        guider=cfg.guider,
        scheduler=sched.scheduler,
        latent=latent,
        seed=SEED,
        strength=strength,
    )
    b.add("VAEDecode", id="decode", vae=model.vae, latent=denoised.latent)
    return b.build()


def nodeflow_pixels(make_executor, workflow: Workflow) -> np.ndarray:
    result = make_executor().run(workflow, targets=["decode"])
    assert result.ok, result.error and result.error.traceback
    return result.values["decode"]["image"].pixels.numpy()


def diffusers_pixels(pipeline_class, folder: Path, pictures, strength, scheduler="euler"):
    pipeline = pipeline_class.from_pretrained(folder, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.scheduler = reference_scheduler(pipeline, scheduler)
    picture, mask = pictures
    return pipeline(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        image=picture,
        mask_image=mask,
        height=HEIGHT,
        width=WIDTH,
        strength=strength,
        num_inference_steps=STEPS,
        guidance_scale=SCALE,
        generator=torch.Generator("cpu").manual_seed(SEED),
        output_type="np",
    ).images


def assert_parity(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape == (1, HEIGHT, WIDTH, 3)
    assert np.abs(actual - expected).max() <= TOLERANCE


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_a_9_channel_model_equals_the_diffusers_inpaint_pipeline(
    inpaint_models, pictures, make_executor, strength
):
    from diffusers import StableDiffusionInpaintPipeline

    folder = inpaint_models / "tiny-inpaint"
    expected = diffusers_pixels(StableDiffusionInpaintPipeline, folder, pictures, strength)
    actual = nodeflow_pixels(make_executor, inpaint_graph("tiny-inpaint", "conditioning", strength))
    assert_parity(actual, expected)


@pytest.mark.parametrize(("strength", "scheduler"), [(1.0, "euler"), (0.6, "ddim")])
def test_blending_on_an_ordinary_model_equals_the_diffusers_inpaint_pipeline(
    models_dir, pictures, make_executor, strength, scheduler
):
    from diffusers import StableDiffusionInpaintPipeline

    folder = models_dir / "checkpoints" / "tiny"
    expected = diffusers_pixels(
        StableDiffusionInpaintPipeline, folder, pictures, strength, scheduler
    )
    workflow = inpaint_graph("tiny", "noise-mask", strength, scheduler)
    assert_parity(nodeflow_pixels(make_executor, workflow), expected)


def test_inpaint_conditioning_on_an_ordinary_model_draws_noise_as_diffusers_does(
    models_dir, pictures, make_executor
):
    """diffusers also encodes the masked picture for a 4-channel U-Net (and drops it); the
    conditioning node's sample is drawn at the same place, so even an ancestral sampler, which
    draws noise at every step, gives diffusers' pixels."""
    from diffusers import StableDiffusionInpaintPipeline

    folder = models_dir / "checkpoints" / "tiny"
    expected = diffusers_pixels(
        StableDiffusionInpaintPipeline, folder, pictures, 0.6, "euler_ancestral"
    )
    workflow = inpaint_graph("tiny", "both", 0.6, "euler_ancestral")
    assert_parity(nodeflow_pixels(make_executor, workflow), expected)


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_sdxl_inpainting_equals_the_diffusers_pipeline(
    inpaint_models, pictures, make_executor, strength
):
    from diffusers import StableDiffusionXLInpaintPipeline

    folder = inpaint_models / "tiny-sdxl-inpaint"
    expected = diffusers_pixels(StableDiffusionXLInpaintPipeline, folder, pictures, strength)
    workflow = inpaint_graph("tiny-sdxl-inpaint", "conditioning", strength)
    assert_parity(nodeflow_pixels(make_executor, workflow), expected)


def test_a_9_channel_single_file_loads_and_inpaints_as_its_folder(
    inpaint_models, pictures, make_executor
):
    folder = nodeflow_pixels(make_executor, inpaint_graph("tiny-inpaint", "conditioning", 1.0))
    single = inpaint_graph("tiny-inpaint.safetensors", "conditioning", 1.0)
    assert_parity(nodeflow_pixels(make_executor, single), folder)


def test_a_9_channel_model_without_inpaint_conditioning_is_refused_at_cfg(
    inpaint_models, pictures, make_executor
):
    workflow = inpaint_graph("tiny-inpaint", "noise-mask", 1.0)
    result = make_executor().run(workflow, targets=["decode"])
    assert not result.ok and result.error.node == "cfg"
    message = result.error.message
    assert "positive" in message and "9 input channels" in message
    assert "InpaintModelConditioning" in message


def test_a_mask_of_another_size_is_refused_naming_both(
    inpaint_models, pictures, make_executor, tmp_path
):
    Image.new("L", (32, 32), 255).save(tmp_path / "input" / "small.png")
    workflow = inpaint_graph("tiny-inpaint", "conditioning", 1.0, mask="small.png")
    result = make_executor().run(workflow, targets=["decode"])
    assert not result.ok and result.error.node == "inpaint"
    assert "mask is 32x32 but image is 64x48" in result.error.message
