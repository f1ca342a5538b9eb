"""The SD x4 upscaler: nodeflow against ``StableDiffusionUpscalePipeline`` on a tiny model of
its architecture (fp32, CPU, <= 1e-4 on the float image), and its refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from test_parity import TOLERANCE

from nodeflow.builder import WorkflowBuilder


@pytest.fixture(scope="module")
def x4_path(models_dir: Path) -> Path:
    from nodes.tiny_upscale import make_tiny_x4_upscaler

    return make_tiny_x4_upscaler(models_dir / "checkpoints" / "tiny-x4", seed=0)


@pytest.fixture(scope="module")
def low_res(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24x16 picture: a colour gradient with a dark disc."""
    yy, xx = np.mgrid[0:16, 0:24]
    picture = np.stack([xx * 10, yy * 15, 255 - xx * 8], axis=-1)
    picture[np.hypot(yy - 8, xx - 12) < 5] = (20, 20, 20)
    path = tmp_path_factory.mktemp("low-res") / "small.png"
    Image.fromarray(picture.clip(0, 255).astype(np.uint8)).save(path)
    return path


def upscale_graph(
    image: Path, *, checkpoint: str = "tiny-x4", prompt: str, negative: str = "", seed: int,
    steps: int, scale: float, noise_level: int, conditioned: bool = True,
) -> Any:  # fmt: skip
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path=checkpoint)
    pos = b.add("TextEncode", id="pos", text_encoder=model.text_encoder, text=prompt)
    neg = b.add("TextEncode", id="neg", text_encoder=model.text_encoder, text=negative)
    picture = b.add("LoadImage", id="small", path=str(image))
    up = b.add(
        "UpscaleConditioning", id="up", unet=model.unet, positive=pos.conditioning,
        negative=neg.conditioning, image=picture.image, noise_level=noise_level,
    )  # fmt: skip
    positive, negative_ = (up.positive, up.negative) if conditioned else (
        pos.conditioning, neg.conditioning)  # fmt: skip
    sched = b.add("Scheduler", id="sched", unet=model.unet, name="ddim", steps=steps)
    guider = b.add(
        "CFG", id="cfg", unet=model.unet, positive=positive, negative=negative_, scale=scale
    )
    den = b.add(
        "Denoise", id="denoise", guider=guider.guider, scheduler=sched.scheduler,
        latent=up.latent, seed=seed,
    )  # fmt: skip
    b.add("VAEDecode", id="decode", vae=model.vae, latent=den.latent)
    return b.build()


@pytest.mark.parametrize(
    "prompt, negative, seed, steps, scale, noise_level",
    [
        ("a cat on a sofa", "blurry", 0, 4, 9.0, 20),
        ("a red circle", "", 1234, 3, 1.0, 100),
        ("two squares", "", 7, 3, 5.0, 0),
    ],
)
def test_x4_upscale_equals_the_diffusers_pipeline(
    make_executor, x4_path, low_res, prompt, negative, seed, steps, scale, noise_level
):
    from diffusers import StableDiffusionUpscalePipeline

    pipeline = StableDiffusionUpscalePipeline.from_pretrained(x4_path, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    expected = pipeline(
        prompt=prompt,
        negative_prompt=negative,
        image=Image.open(low_res),
        num_inference_steps=steps,
        guidance_scale=scale,
        noise_level=noise_level,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    ).images
    workflow = upscale_graph(
        low_res, prompt=prompt, negative=negative, seed=seed, steps=steps, scale=scale,
        noise_level=noise_level,
    )  # fmt: skip
    result = make_executor().run(workflow, targets=["decode"])
    assert result.ok, result.error and result.error.traceback
    actual = result.values["decode"]["image"].pixels.numpy()
    assert actual.shape == expected.shape == (1, 64, 96, 3)
    diff = float(np.abs(actual - expected).max())
    assert diff <= TOLERANCE, f"max |difference| {diff:.3g} > {TOLERANCE}"


def test_the_upscaler_without_its_picture_is_refused_at_cfg(make_executor, x4_path, low_res):
    workflow = upscale_graph(
        low_res, prompt="a cat", seed=0, steps=2, scale=7.0, noise_level=20, conditioned=False
    )
    result = make_executor().run(workflow, targets=["decode"])
    assert not result.ok and result.error.node == "cfg"
    assert "x4 upscaler" in result.error.message and "UpscaleConditioning" in result.error.message


def test_a_noise_level_beyond_the_models_is_refused(make_executor, x4_path, low_res):
    workflow = upscale_graph(low_res, prompt="a cat", seed=0, steps=2, scale=7.0, noise_level=400)
    result = make_executor().run(workflow, targets=["decode"])
    assert not result.ok and result.error.node == "denoise"
    assert "noise_level 400 is outside 0..350" in result.error.message


def test_upscale_conditioning_on_an_ordinary_model_is_refused(make_executor, low_res):
    workflow = upscale_graph(
        low_res, checkpoint="tiny", prompt="a cat", seed=0, steps=2, scale=7.0, noise_level=20
    )
    result = make_executor().run(workflow, targets=["decode"])
    assert not result.ok and result.error.node == "cfg"
    assert "UpscaleConditioning is for x4 upscalers" in result.error.message
