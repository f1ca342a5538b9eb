"""SD3 / SD3.5 through the standard nodes, against ``StableDiffusion3Pipeline`` (fp32, CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flowgraphs import diffusers_image, nodeflow_image, reference_scheduler
from pixels import assert_same_pixels

MODELS = {"tiny-sd3": {}, "tiny-sd3-no-t5": {"t5": False}, "tiny-sd35": {"sd35": True}}


@pytest.fixture(scope="module")
def sd3_models(models_dir: Path) -> Path:
    from nodes.tiny_flow import make_tiny_sd3

    checkpoints = models_dir / "checkpoints"
    for name, options in MODELS.items():
        if not (checkpoints / name / "model_index.json").exists():
            make_tiny_sd3(checkpoints / name, seed=0, **options)
    return checkpoints


def _pipeline(folder: Path) -> Any:
    from diffusers import StableDiffusion3Pipeline

    extra = {} if (folder / "text_encoder_3").is_dir() else {"text_encoder_3": None,
                                                              "tokenizer_3": None}  # fmt: skip
    pipeline = StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True, **extra)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


CASES = [
    # (model, scheduler, shift, scale, seed, width, height, max_sequence_length)
    ("tiny-sd3", "euler", None, 5.0, 0, 64, 64, 0),
    ("tiny-sd3", "euler", 1.5, 7.0, 3, 48, 64, 77),
    ("tiny-sd3-no-t5", "euler", None, 5.0, 1, 64, 32, 0),
    ("tiny-sd3-no-t5", "dpmpp_2m", 2.0, 4.0, 2, 64, 64, 0),
    ("tiny-sd3", "dpmpp_2m", None, 6.0, 11, 32, 64, 0),
    ("tiny-sd3", "heun", None, 1.0, 5, 64, 64, 0),
    ("tiny-sd35", "euler", None, 5.0, 7, 64, 64, 0),
]


@pytest.mark.parametrize("model, scheduler, shift, scale, seed, width, height, length", CASES)
def test_sd3_txt2img_equals_the_diffusers_pipeline(
    sd3_models, make_executor, model, scheduler, shift, scale, seed, width, height, length
):
    folder = sd3_models / model
    pipeline = _pipeline(folder)
    pipeline.scheduler = reference_scheduler(folder, scheduler, shift)
    prompt, negative = "a red circle on a blue background", "blurry"
    expected = diffusers_image(
        pipeline,
        seed=seed,
        prompt=prompt,
        negative_prompt=negative,
        num_inference_steps=4,
        guidance_scale=scale,
        width=width,
        height=height,
        max_sequence_length=length or 256,
    )
    actual = nodeflow_image(
        make_executor,
        model,
        prompt=prompt,
        negative=negative,
        seed=seed,
        scheduler=scheduler,
        steps=4,
        scale=scale,
        shift=shift or 0.0,
        width=width,
        height=height,
        max_sequence_length=length,
    )
    assert actual.shape == expected.shape == (1, height, width, 3)
    assert_same_pixels(actual, expected)


def test_t5_and_the_shift_change_the_picture(sd3_models, make_executor):
    """The parity cases would pass if T5 or the shift were ignored on both sides; they are not."""
    settings = {"prompt": "a red circle", "seed": 4}
    base = nodeflow_image(make_executor, "tiny-sd3", **settings)
    without_t5 = nodeflow_image(make_executor, "tiny-sd3-no-t5", **settings)
    shifted = nodeflow_image(make_executor, "tiny-sd3", shift=1.0, **settings)
    assert np.abs(base - without_t5).max() > 1e-3
    assert np.abs(base - shifted).max() > 1e-3


@pytest.mark.parametrize("strength, scheduler", [(0.5, "euler"), (0.75, "heun")])
def test_sd3_img2img_equals_the_diffusers_pipeline(
    sd3_models, make_executor, tmp_path, strength, scheduler
):
    """VAEEncode's (z - shift) * scale and Denoise's flow noising (scale_noise) as diffusers'
    StableDiffusion3Img2ImgPipeline; steps x strength is whole, where the pipelines agree on
    the first step."""
    from diffusers import StableDiffusion3Img2ImgPipeline
    from PIL import Image

    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), "RGB")
    path = tmp_path / "input.png"
    picture.save(path)
    folder = sd3_models / "tiny-sd3"
    img2img = StableDiffusion3Img2ImgPipeline(**_pipeline(folder).components)
    img2img.set_progress_bar_config(disable=True)
    img2img.scheduler = reference_scheduler(folder, scheduler)
    expected = diffusers_image(
        img2img, seed=21, prompt="a red square", negative_prompt="", image=picture,
        strength=strength, num_inference_steps=4, guidance_scale=6.0, height=48, width=64,
    )  # fmt: skip
    actual = nodeflow_image(
        make_executor, "tiny-sd3", prompt="a red square", seed=21, image=str(path),
        strength=strength, steps=4, scale=6.0, scheduler=scheduler,
    )  # fmt: skip
    assert actual.shape == expected.shape == (1, 48, 64, 3)
    assert_same_pixels(actual, expected)
