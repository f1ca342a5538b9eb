"""LCM, LCM-LoRA and TCD against their diffusers pipelines (fp32, CPU, <= 1e-4 on the image).

The LCM U-Net takes the guidance scale as an embedding, so its family runs one pass per step
and no CFG pair; an LCM-LoRA on a plain SD U-Net keeps CFG, as ``StableDiffusionPipeline`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sdgraphs import sd_graph

from nodeflow.workflow import Workflow
from nodes.families.lcm import LatentConsistencyUNet
from nodes.tiny_lcm import make_tiny_lcm, write_tiny_lcm_lora

TOLERANCE = 1e-4
PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def lcm_path(models_dir: Path) -> Path:
    path = models_dir / "checkpoints" / "tiny-lcm"
    if not path.exists():
        make_tiny_lcm(path, seed=3)
    return path


@pytest.fixture(scope="module")
def lcm_loras(models_dir: Path) -> dict[str, Path]:
    checkpoints, loras = models_dir / "checkpoints", models_dir / "loras"
    return {
        name: write_tiny_lcm_lora(checkpoints / name, loras / f"lcm-{name}.safetensors")
        for name in ("tiny", "tiny-sdxl")
    }


def _settings_graph(**settings: Any) -> dict[str, Any]:
    extra = {k: settings.pop(k) for k in ("eta", "lora") if k in settings}
    doc = sd_graph(save=False, **settings).to_json()
    nodes = doc["nodes"]
    if "eta" in extra:
        nodes["sched"]["inputs"]["eta"] = extra["eta"]
    if "lora" in extra:
        nodes["lora"] = {
            "type": "LoadLoRA",
            "inputs": {
                "unet": {"from": "model.unet"},
                "text_encoder": {"from": "model.text_encoder"},
                "path": extra["lora"],
            },
        }
        for node_id in ("pos", "neg", "sched", "cfg"):
            inputs = nodes[node_id]["inputs"]
            for name, link in (("unet", "lora.unet"), ("text_encoder", "lora.text_encoder")):
                if name in inputs:
                    inputs[name] = {"from": link}
    return doc


def nodeflow_image(make_executor: Any, **settings: Any) -> np.ndarray:
    workflow = Workflow.model_validate(_settings_graph(**settings))
    result = make_executor().run(workflow, targets=["decode"])
    assert result.ok, result.error and result.error.traceback
    return result.values["decode"]["image"].pixels.numpy()


def diffusers_image(pipeline: Any, *, seed: int, **kwargs: Any) -> np.ndarray:
    pipeline.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipeline(generator=generator, output_type="np", **kwargs).images


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= TOLERANCE


def test_the_loader_gives_an_lcm_unet_the_guidance_embedding_family(lcm_path, make_executor):
    result = make_executor().run(sd_graph(checkpoint="tiny-lcm", save=False), targets=["model"])
    assert result.ok, result.error and result.error.traceback
    assert isinstance(result.values["model"]["unet"].family, LatentConsistencyUNet)


@pytest.mark.parametrize("scale, steps, seed", [(8.5, 4, 0), (1.5, 2, 7), (1.0, 1, 11)])
def test_lcm_equals_the_latent_consistency_pipeline(lcm_path, make_executor, scale, steps, seed):
    from diffusers import LatentConsistencyModelPipeline

    pipe = LatentConsistencyModelPipeline.from_pretrained(
        lcm_path, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    expected = diffusers_image(
        pipe, seed=seed, prompt=PROMPT, num_inference_steps=steps, guidance_scale=scale,
        width=64, height=48,
    )  # fmt: skip
    actual = nodeflow_image(
        make_executor, checkpoint="tiny-lcm", prompt=PROMPT, seed=seed, scheduler="lcm",
        steps=steps, scale=scale, width=64, height=48,
    )  # fmt: skip
    assert_close(actual, expected)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_sd_with_an_lcm_lora_equals_the_pipeline_with_lcm_scheduler(
    tiny_path, lcm_loras, make_executor, scale
):
    from diffusers import LCMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_path, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(lcm_loras["tiny"]))
    settings = dict(prompt=PROMPT, seed=4, steps=4, width=64, height=64)
    expected = diffusers_image(
        pipe, seed=4, prompt=PROMPT, num_inference_steps=4, guidance_scale=scale,
        width=64, height=64,
    )  # fmt: skip
    actual = nodeflow_image(
        make_executor, scheduler="lcm", scale=scale, lora=lcm_loras["tiny"].name, **settings
    )
    assert_close(actual, expected)
    without = nodeflow_image(make_executor, scheduler="lcm", scale=scale, **settings)
    assert np.abs(without - actual).max() > 100 * TOLERANCE  # the LoRA did something


def test_sdxl_with_an_lcm_lora_equals_the_pipeline_with_lcm_scheduler(
    models_dir, lcm_loras, make_executor
):
    from diffusers import LCMScheduler, StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(
        models_dir / "checkpoints" / "tiny-sdxl", local_files_only=True
    )
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(lcm_loras["tiny-sdxl"]))
    expected = diffusers_image(
        pipe, seed=2, prompt=PROMPT, num_inference_steps=4, guidance_scale=1.0,
        width=64, height=64,
    )  # fmt: skip
    actual = nodeflow_image(
        make_executor, checkpoint="tiny-sdxl", prompt=PROMPT, seed=2, scheduler="lcm", steps=4,
        scale=1.0, width=64, height=64, lora=lcm_loras["tiny-sdxl"].name,
    )  # fmt: skip
    assert_close(actual, expected)


@pytest.mark.parametrize("eta, scale", [(0.3, 1.0), (0.7, 3.0), (0.0, 1.0)])
def test_tcd_equals_the_pipeline_with_tcd_scheduler_and_its_gamma(
    tiny_path, make_executor, eta, scale
):
    from diffusers import StableDiffusionPipeline, TCDScheduler

    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_path, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = TCDScheduler.from_config(pipe.scheduler.config)
    expected = diffusers_image(
        pipe, seed=9, prompt=PROMPT, num_inference_steps=4, guidance_scale=scale, eta=eta,
        width=64, height=64,
    )  # fmt: skip
    actual = nodeflow_image(
        make_executor, prompt=PROMPT, seed=9, scheduler="tcd", steps=4, scale=scale, eta=eta,
        width=64, height=64,
    )  # fmt: skip
    assert_close(actual, expected)


def test_tcd_on_the_lcm_unet_equals_the_pipeline(lcm_path, make_executor):
    """A guidance-embedding U-Net under TCD: one pass per step, the guidance as its embedding,
    and TCD's stochastic steps drawing from the run's generator after the initial noise.
    (``LatentConsistencyModelPipeline`` passes TCD no eta, so ``StableDiffusionPipeline``, which
    embeds the guidance for such a U-Net too, is the reference.)"""
    from diffusers import StableDiffusionPipeline, TCDScheduler

    pipe = StableDiffusionPipeline.from_pretrained(
        lcm_path, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = TCDScheduler.from_config(pipe.scheduler.config)
    expected = diffusers_image(
        pipe, seed=5, prompt=PROMPT, num_inference_steps=3, guidance_scale=2.0, eta=0.3,
        width=64, height=64,
    )  # fmt: skip
    actual = nodeflow_image(
        make_executor, checkpoint="tiny-lcm", prompt=PROMPT, seed=5, scheduler="tcd", steps=3,
        scale=2.0, eta=0.3, width=64, height=64,
    )  # fmt: skip
    assert_close(actual, expected)


def test_eta_on_a_scheduler_without_one_is_refused(make_executor):
    result = make_executor().run(
        Workflow.model_validate(_settings_graph(scheduler="euler", eta=0.3)), targets=["sched"]
    )
    assert not result.ok
    assert "eta" in result.error.message and "euler" in result.error.message
