"""Pixel-space models against their diffusers pipelines (fp32, CPU, <= 1e-4 on the image):
DDPM and DDIM (unconditional), consistency models (class-conditional, one step and multistep
with chosen timesteps), through LoadPixelModel -> Denoise -> LatentToImage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nodeflow.builder import WorkflowBuilder
from nodeflow.workflow import Workflow
from nodes.tiny_pixel import make_tiny_consistency, make_tiny_ddim, make_tiny_ddpm

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def pixel_models(models_dir: Path) -> dict[str, Path]:
    checkpoints = models_dir / "checkpoints"
    makers = {
        "tiny-ddpm": make_tiny_ddpm,
        "tiny-ddim": make_tiny_ddim,
        "tiny-cm": make_tiny_consistency,
    }
    for name, make in makers.items():
        if not (checkpoints / name).exists():
            make(checkpoints / name, seed=1)
    return {name: checkpoints / name for name in makers}


def pixel_graph(
    checkpoint: str,
    scheduler: str,
    *,
    steps: int = 1,
    timesteps: str = "",
    eta: float = 0.0,
    label: int | None = None,
    batch_size: int = 1,
    seed: int = 0,
    size: int = 32,
) -> Workflow:
    b = WorkflowBuilder()
    model = b.add("LoadPixelModel", id="model", path=checkpoint)
    sched = b.add(
        "Scheduler", id="sched", unet=model.unet, name=scheduler, steps=steps,
        timesteps=timesteps, eta=eta,
    )  # fmt: skip
    if label is None:
        cond = b.add("Unconditional", id="cond")
    else:
        cond = b.add("ClassLabel", id="cond", label=label)
    guider = b.add(
        "CFG", id="cfg", unet=model.unet, positive=cond.conditioning,
        negative=cond.conditioning, scale=1.0,
    )  # fmt: skip
    empty = b.add("EmptyLatent", id="empty", width=size, height=size, batch_size=batch_size)
    den = b.add(
        "Denoise", id="denoise", guider=guider.guider, scheduler=sched.scheduler,
        latent=empty.latent, seed=seed,
    )  # fmt: skip
    b.add("LatentToImage", id="image", latent=den.latent)
    return b.build()


def nodeflow_image(make_executor: Any, *args: Any, **kwargs: Any) -> np.ndarray:
    result = make_executor().run(pixel_graph(*args, **kwargs), targets=["image"])
    assert result.ok, result.error and result.error.traceback
    return result.values["image"]["image"].pixels.numpy()


def diffusers_image(pipeline: Any, *, seed: int, **kwargs: Any) -> np.ndarray:
    pipeline.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipeline(generator=generator, output_type="np", **kwargs).images


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.abs(actual - expected).max() <= TOLERANCE
    assert actual.std() > 0.01  # a picture, not a constant


@pytest.mark.parametrize("steps, batch, seed", [(10, 1, 0), (4, 2, 123)])
def test_ddpm_equals_the_ddpm_pipeline(pixel_models, make_executor, steps, batch, seed):
    from diffusers import DDPMPipeline

    pipe = DDPMPipeline.from_pretrained(pixel_models["tiny-ddpm"], local_files_only=True)
    expected = diffusers_image(pipe, seed=seed, batch_size=batch, num_inference_steps=steps)
    actual = nodeflow_image(
        make_executor, "tiny-ddpm", "ddpm", steps=steps, batch_size=batch, seed=seed
    )
    assert_close(actual, expected)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_equals_the_ddim_pipeline(pixel_models, make_executor, eta):
    from diffusers import DDIMPipeline

    pipe = DDIMPipeline.from_pretrained(pixel_models["tiny-ddim"], local_files_only=True)
    expected = diffusers_image(pipe, seed=3, num_inference_steps=8, eta=eta)
    actual = nodeflow_image(make_executor, "tiny-ddim", "ddim", steps=8, eta=eta, seed=3)
    assert_close(actual, expected)


@pytest.mark.parametrize(
    "steps, timesteps, label, batch, seed",
    [
        (1, "", 3, 1, 0),  # one step: straight from noise to a picture
        (1, "22, 0", 7, 1, 5),  # multistep at chosen timesteps, as the released models use
        (3, "", 0, 2, 9),  # multistep at evenly spaced ones, a batch of two
    ],
)
def test_consistency_model_equals_the_consistency_pipeline(
    pixel_models, make_executor, steps, timesteps, label, batch, seed
):
    from diffusers import ConsistencyModelPipeline

    pipe = ConsistencyModelPipeline.from_pretrained(pixel_models["tiny-cm"], local_files_only=True)
    chosen = [int(t) for t in timesteps.split(",")] if timesteps else None
    kwargs: dict[str, Any] = {"timesteps": chosen} if chosen else {"num_inference_steps": steps}
    expected = diffusers_image(
        pipe, seed=seed, batch_size=batch, class_labels=[label] * batch, **kwargs
    )
    actual = nodeflow_image(
        make_executor, "tiny-cm", "consistency", steps=steps, timesteps=timesteps, label=label,
        batch_size=batch, seed=seed,
    )  # fmt: skip
    assert_close(actual, expected)


def test_the_class_label_changes_the_picture(pixel_models, make_executor):
    first = nodeflow_image(make_executor, "tiny-cm", "consistency", label=1)
    second = nodeflow_image(make_executor, "tiny-cm", "consistency", label=2)
    assert np.abs(first - second).max() > 100 * TOLERANCE


@pytest.mark.parametrize(
    "checkpoint, label, expected",
    [
        ("tiny-cm", None, "class-conditional"),
        ("tiny-cm", 10, "out of range"),
        ("tiny-ddpm", 1, "unconditional"),
    ],
)
def test_the_wrong_conditioning_is_refused_by_cfg(
    pixel_models, make_executor, checkpoint, label, expected
):
    result = make_executor().run(pixel_graph(checkpoint, "ddpm", label=label), targets=["cfg"])
    assert not result.ok
    assert result.error.node == "cfg" and expected in result.error.message


def test_load_checkpoint_points_pixel_folders_to_the_pixel_loader(pixel_models, make_executor):
    b = WorkflowBuilder()
    b.add("LoadCheckpoint", id="model", path="tiny-ddpm")
    result = make_executor().run(b.build(), targets=["model"])
    assert not result.ok and "LoadPixelModel" in result.error.message


def test_image_to_latent_and_back_is_the_same_picture():
    from nodes.pixel_space import image_to_latent, latent_to_image
    from nodes.types import Image

    pixels = torch.rand(2, 16, 24, 3, generator=torch.Generator().manual_seed(0))
    latent = image_to_latent(Image(pixels))
    assert (latent.width, latent.height, latent.batch_size) == (24, 16, 2)
    back = latent_to_image(latent).pixels
    assert torch.allclose(back, pixels, atol=1e-6)


@pytest.mark.parametrize(
    "family, pipeline",
    [
        ("ddim", "DDIMPipeline"),
        ("consistency", "ConsistencyModelPipeline"),
        ("lcm", "LatentConsistencyModelPipeline"),
    ],
)
def test_make_tiny_writes_folders_their_pipelines_load(tmp_path, capsys, family, pipeline):
    import diffusers

    from nodeflow.cli import main

    path = tmp_path / family
    assert main(["models", "make-tiny", str(path), "--family", family]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    loaded = getattr(diffusers, pipeline).from_pretrained(path, local_files_only=True)
    assert type(loaded).__name__ == pipeline
