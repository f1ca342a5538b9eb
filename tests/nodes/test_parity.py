"""diffusers is the oracle: same components and settings, same pixels (fp32, CPU, <= 1e-4)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sdgraphs import sd_graph

TOLERANCE = 1e-4

# The reference: which diffusers scheduler each name means, written independently of nodes/.
REFERENCE_SCHEDULERS = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}


def reference_scheduler(pipe, name, **extra):
    """Always from the model's own scheduler config: swapping ``pipe.scheduler`` carries config
    keys over (e.g. an earlier ``algorithm_type``), which would corrupt the next reference."""
    import diffusers

    class_name, overrides = REFERENCE_SCHEDULERS[name]
    config = json.loads(
        (Path(pipe.name_or_path) / "scheduler" / "scheduler_config.json").read_text()
    )
    return getattr(diffusers, class_name).from_config(config, **overrides, **extra)


def nodeflow_image(make_executor, **settings) -> np.ndarray:
    result = make_executor().run(sd_graph(save=False, **settings), targets=["decode"])
    assert result.ok, result.error and result.error.traceback
    return result.values["decode"]["image"].pixels.numpy()


def diffusers_image(pipeline, *, seed, **kwargs) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipeline(generator=generator, output_type="np", **kwargs).images


CASES = [
    # (prompt, negative, seed, width, height)
    ("a red circle on a blue background", "", 0, 64, 64),
    ("two small yellow squares", "blurry, green", 1234, 48, 64),
    ("a photo of a cat", "dog", 2**40 + 7, 64, 32),
]


@pytest.mark.parametrize(
    "scheduler, case",
    [(name, CASES[i % len(CASES)]) for i, name in enumerate(REFERENCE_SCHEDULERS)],
)
def test_txt2img_equals_the_diffusers_pipeline_for_every_scheduler(
    pipe, make_executor, scheduler, case
):
    prompt, negative, seed, width, height = case
    steps = 4
    pipe.scheduler = reference_scheduler(pipe, scheduler)
    expected = diffusers_image(
        pipe,
        seed=seed,
        prompt=prompt,
        negative_prompt=negative or None,
        num_inference_steps=steps,
        guidance_scale=7.5,
        width=width,
        height=height,
    )
    actual = nodeflow_image(
        make_executor,
        prompt=prompt,
        negative=negative,
        seed=seed,
        scheduler=scheduler,
        steps=steps,
        width=width,
        height=height,
    )
    assert actual.shape == expected.shape == (1, height, width, 3)
    assert np.abs(actual - expected).max() <= TOLERANCE


@pytest.mark.parametrize("prompt, negative, seed, width, height", CASES)
def test_prompts_negatives_seeds_and_sizes(
    pipe, make_executor, prompt, negative, seed, width, height
):
    pipe.scheduler = reference_scheduler(pipe, "dpmpp_2m")
    expected = diffusers_image(
        pipe,
        seed=seed,
        prompt=prompt,
        negative_prompt=negative,
        num_inference_steps=5,
        guidance_scale=5.0,
        width=width,
        height=height,
    )
    actual = nodeflow_image(
        make_executor,
        prompt=prompt,
        negative=negative,
        seed=seed,
        scheduler="dpmpp_2m",
        steps=5,
        scale=5.0,
        width=width,
        height=height,
    )
    assert np.abs(actual - expected).max() <= TOLERANCE


def test_karras_sigmas_and_a_beta_schedule_override(pipe, make_executor):
    pipe.scheduler = reference_scheduler(
        pipe, "euler", use_karras_sigmas=True, beta_schedule="linear"
    )
    expected = diffusers_image(pipe, seed=5, prompt="a square", num_inference_steps=4)
    actual = nodeflow_image(
        make_executor, prompt="a square", seed=5, karras=True, beta_schedule="linear"
    )
    assert np.abs(actual - expected).max() <= TOLERANCE


def test_guidance_rescale_equals_diffusers(pipe, make_executor):
    pipe.scheduler = reference_scheduler(pipe, "ddim")
    kwargs = dict(prompt="a blue triangle", num_inference_steps=4, guidance_scale=9.0)
    expected = diffusers_image(pipe, seed=3, guidance_rescale=0.7, **kwargs)
    plain = diffusers_image(pipe, seed=3, **kwargs)
    actual = nodeflow_image(
        make_executor, prompt="a blue triangle", seed=3, scheduler="ddim", scale=9.0, rescale=0.7
    )
    assert np.abs(expected - plain).max() > 1e-3  # the rescale really changes the picture
    assert np.abs(actual - expected).max() <= TOLERANCE


def test_scale_one_skips_the_negative_pass_like_diffusers(pipe, make_executor):
    pipe.scheduler = reference_scheduler(pipe, "euler")
    expected = diffusers_image(
        pipe,
        seed=9,
        prompt="a dog",
        negative_prompt="cat",
        num_inference_steps=3,
        guidance_scale=1.0,
    )
    actual = nodeflow_image(
        make_executor, prompt="a dog", negative="cat", seed=9, steps=3, scale=1.0
    )
    assert np.abs(actual - expected).max() <= TOLERANCE


def test_batch_of_two_equals_num_images_per_prompt(pipe, make_executor):
    pipe.scheduler = reference_scheduler(pipe, "euler_ancestral")
    expected = diffusers_image(
        pipe, seed=11, prompt="a green circle", num_inference_steps=4, num_images_per_prompt=2
    )
    actual = nodeflow_image(
        make_executor, prompt="a green circle", seed=11, scheduler="euler_ancestral", batch_size=2
    )
    assert actual.shape == (2, 64, 64, 3)
    assert np.abs(actual[0] - actual[1]).max() > 1e-3  # two different pictures
    assert np.abs(actual - expected).max() <= TOLERANCE


@pytest.mark.parametrize("strength", [0.5, 0.8])
@pytest.mark.parametrize("scheduler", ["ddim", "euler_ancestral"])
def test_img2img_equals_the_diffusers_pipeline(pipe, make_executor, tmp_path, strength, scheduler):
    from diffusers import StableDiffusionImg2ImgPipeline

    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), "RGB")
    path = tmp_path / "input.png"
    picture.save(path)

    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    img2img.scheduler = reference_scheduler(pipe, scheduler)
    expected = diffusers_image(
        img2img,
        seed=21,
        prompt="a red square",
        image=picture,
        strength=strength,
        num_inference_steps=10,
        guidance_scale=6.0,
    )
    actual = nodeflow_image(
        make_executor,
        prompt="a red square",
        seed=21,
        image=str(path),
        strength=strength,
        steps=10,
        scale=6.0,
        scheduler=scheduler,
    )
    assert actual.shape == expected.shape == (1, 48, 64, 3)
    assert np.abs(actual - expected).max() <= TOLERANCE
