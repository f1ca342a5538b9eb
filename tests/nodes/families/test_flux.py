"""Flux through the standard nodes, against ``FluxPipeline`` (fp32, CPU): guidance embedding,
2x2 packing and the resolution-dependent shift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flowgraphs import diffusers_image, nodeflow_image
from pixels import assert_same_pixels


@pytest.fixture(scope="module")
def flux_folder(models_dir: Path) -> Path:
    from nodes.tiny_flow import make_tiny_flux

    folder = models_dir / "checkpoints" / "tiny-flux"
    if not (folder / "model_index.json").exists():
        make_tiny_flux(folder, seed=0)
    return folder


@pytest.fixture(scope="module")
def flux_pipe(flux_folder: Path) -> Any:
    from diffusers import FluxPipeline

    pipeline = FluxPipeline.from_pretrained(flux_folder, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_the_tiny_flux_shifts_by_resolution(flux_folder):
    config = json.loads((flux_folder / "scheduler" / "scheduler_config.json").read_text())
    assert config["use_dynamic_shifting"] is True
    transformer = json.loads((flux_folder / "transformer" / "config.json").read_text())
    assert transformer["guidance_embeds"] is True


@pytest.mark.parametrize(
    "guidance, seed, width, height, length",
    [
        (3.5, 0, 64, 64, 0),  # 256 image tokens: mu = base_shift
        (5.0, 9, 96, 64, 0),  # 384 tokens: a larger mu
        (1.5, 2**33 + 1, 32, 64, 77),
    ],
)
def test_flux_txt2img_equals_the_diffusers_pipeline(
    flux_folder, flux_pipe, make_executor, guidance, seed, width, height, length
):
    from diffusers import FlowMatchEulerDiscreteScheduler

    flux_pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(
        flux_folder, subfolder="scheduler"
    )
    prompt = "a yellow square on green grass"
    expected = diffusers_image(
        flux_pipe,
        seed=seed,
        prompt=prompt,
        num_inference_steps=4,
        guidance_scale=guidance,
        width=width,
        height=height,
        max_sequence_length=length or 512,
    )
    actual = nodeflow_image(
        make_executor,
        "tiny-flux",
        prompt=prompt,
        seed=seed,
        steps=4,
        scale=1.0,
        guidance=guidance,
        width=width,
        height=height,
        max_sequence_length=length,
    )
    assert actual.shape == expected.shape == (1, height, width, 3)
    assert_same_pixels(actual, expected)


def test_flux_guidance_changes_the_picture_and_cfg_scale_does_not(make_executor, flux_folder):
    """One pass per step: a CFG scale means nothing to a guidance-distilled model, the
    distilled value does; without FluxGuidance the model gets 3.5."""
    base = nodeflow_image(make_executor, "tiny-flux", prompt="a cat", seed=1, scale=1.0)
    cfg = nodeflow_image(make_executor, "tiny-flux", prompt="a cat", seed=1, scale=7.0)
    default = nodeflow_image(
        make_executor, "tiny-flux", prompt="a cat", seed=1, scale=1.0, guidance=3.5
    )
    stronger = nodeflow_image(
        make_executor, "tiny-flux", prompt="a cat", seed=1, scale=1.0, guidance=8.0
    )
    assert np.array_equal(base, cfg)
    assert np.array_equal(base, default)
    assert np.abs(base - stronger).max() > 1e-3
