"""SDXL and SD 2.x (v-prediction) through the same nodes, against their diffusers pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_parity import TOLERANCE, diffusers_image, nodeflow_image, reference_scheduler


@pytest.fixture(scope="module")
def sdxl_pipe(models_dir: Path) -> Any:
    from diffusers import StableDiffusionXLPipeline

    pipeline = StableDiffusionXLPipeline.from_pretrained(
        models_dir / "checkpoints" / "tiny-sdxl", local_files_only=True
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def sd2_pipe(models_dir: Path) -> Any:
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(
        models_dir / "checkpoints" / "tiny-sd2",
        local_files_only=True,
        safety_checker=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    assert pipeline.scheduler.config.prediction_type == "v_prediction"
    return pipeline


@pytest.mark.parametrize(
    "scheduler, prompt, negative, scale, seed, width, height",
    [
        ("euler", "a red circle on a blue background", "", 7.5, 0, 64, 64),
        ("dpmpp_2m", "two small yellow squares", "blurry", 5.0, 1234, 48, 64),
        ("euler_ancestral", "a photo of a cat", "dog", 1.0, 7, 64, 32),
    ],
)
def test_sdxl_txt2img_equals_the_diffusers_pipeline(
    sdxl_pipe, make_executor, scheduler, prompt, negative, scale, seed, width, height
):
    sdxl_pipe.scheduler = reference_scheduler(sdxl_pipe, scheduler)
    expected = diffusers_image(
        sdxl_pipe,
        seed=seed,
        prompt=prompt,
        negative_prompt=negative,  # given (even when empty), so diffusers encodes it as we do
        num_inference_steps=4,
        guidance_scale=scale,
        width=width,
        height=height,
    )
    actual = nodeflow_image(
        make_executor,
        checkpoint="tiny-sdxl",
        prompt=prompt,
        negative=negative,
        seed=seed,
        scheduler=scheduler,
        steps=4,
        scale=scale,
        width=width,
        height=height,
    )
    assert actual.shape == expected.shape == (1, height, width, 3)
    assert np.abs(actual - expected).max() <= TOLERANCE


def test_sdxl_size_conditioning_equals_diffusers(sdxl_pipe, make_executor):
    sdxl_pipe.scheduler = reference_scheduler(sdxl_pipe, "euler")
    settings = {"prompt": "a red circle", "negative": "", "seed": 3, "steps": 3}
    expected = diffusers_image(
        sdxl_pipe,
        seed=3,
        prompt="a red circle",
        negative_prompt="",
        num_inference_steps=3,
        guidance_scale=7.5,
        width=64,
        height=64,
        original_size=(32, 48),
        crops_coords_top_left=(4, 8),
        target_size=(96, 80),
    )
    size = {
        "original_width": 48, "original_height": 32, "crop_left": 8, "crop_top": 4,
        "target_width": 80, "target_height": 96,
    }  # fmt: skip
    actual = nodeflow_image(make_executor, checkpoint="tiny-sdxl", size=size, **settings)
    assert np.abs(actual - expected).max() <= TOLERANCE
    plain = nodeflow_image(make_executor, checkpoint="tiny-sdxl", **settings)
    assert np.abs(plain - actual).max() > 1e-3, "size conditioning must change the picture"


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmpp_2m"])
def test_sd2_v_prediction_equals_the_diffusers_pipeline(sd2_pipe, make_executor, scheduler):
    sd2_pipe.scheduler = reference_scheduler(sd2_pipe, scheduler)
    expected = diffusers_image(
        sd2_pipe,
        seed=5,
        prompt="a blue square",
        negative_prompt="red",
        num_inference_steps=4,
        guidance_scale=7.5,
        width=64,
        height=64,
    )
    for checkpoint in ("tiny-sd2", "tiny-sd2.safetensors"):
        actual = nodeflow_image(
            make_executor,
            checkpoint=checkpoint,
            prompt="a blue square",
            negative="red",
            seed=5,
            scheduler=scheduler,
            steps=4,
        )
        assert np.abs(actual - expected).max() <= TOLERANCE, checkpoint


def test_conditioning_from_another_model_is_a_clear_error_at_cfg(make_executor):
    from nodeflow.builder import WorkflowBuilder

    b = WorkflowBuilder()
    xl = b.add("LoadCheckpoint", id="xl", path="tiny-sdxl")
    sd = b.add("LoadCheckpoint", id="sd", path="tiny")
    pos = b.add("TextEncode", id="pos", text_encoder=sd.text_encoder, text="a")
    cfg = b.add("CFG", id="cfg", unet=xl.unet, positive=pos.conditioning,
                negative=pos.conditioning)  # fmt: skip
    sched = b.add("Scheduler", id="sched", unet=xl.unet, steps=1)
    empty = b.add("EmptyLatent", id="empty", width=64, height=64)
    b.add("Denoise", id="denoise", guider=cfg.guider, scheduler=sched.scheduler,
          latent=empty.latent)  # fmt: skip
    result = make_executor().run(b.build(), targets=["denoise"])
    assert result.status == "failed" and result.error.node == "cfg"
    assert "positive: the conditioning is 32 wide but this U-Net attends to 64" in (
        result.error.message
    )


def test_an_fp16_sdxl_vae_decodes_in_fp32_and_stays_fp16(models_dir: Path) -> None:
    """``force_upcast`` (SDXL's VAE overflows in fp16): decode in fp32, as diffusers does."""
    import torch
    from diffusers import AutoencoderKL

    from nodes.types import VAE, Latent
    from nodes.vae import decode

    folder = models_dir / "checkpoints" / "tiny-sdxl" / "vae"
    half = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float16, local_files_only=True)
    assert half.config.force_upcast
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)).half()
    actual = decode(VAE(half), Latent(samples=latents, width=32, height=32)).pixels
    assert half.dtype == torch.float16
    # The reference: the same (fp16-rounded) weights, decoded in fp32.
    full = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float16, local_files_only=True)
    torch.nn.Module.to(full, torch.float32)
    full.register_to_config(force_upcast=False)
    expected = decode(VAE(full), Latent(samples=latents.float(), width=32, height=32)).pixels
    assert torch.equal(actual, expected)
