"""ComfyUI's KSampler over rectified-flow models (``ComfyScheduler`` on SD3 and Flux).

ComfyUI samples a flow model with k-diffusion's samplers over its shifted flow sigmas; Euler
there is ``x + velocity x (sigma' - sigma)``, exactly diffusers' ``FlowMatchEulerDiscreteScheduler``
given the same sigmas. The sigmas are worked out here by hand from ComfyUI's definitions
(``comfy/model_sampling.py``): SD3's table is ``s t / (1 + (s - 1) t)`` at t = i / 1000, Flux's
``e^mu / (e^mu + 1/t - 1)`` at t = i / 10000, and the ``simple`` schedule takes every
(table length / steps)-th entry from the top.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from flowgraphs import diffusers_image, flow_graph
from pixels import assert_same_pixels

from nodeflow.workflow import Workflow
from nodes.ksampling.flow_sigmas import FlowSigmas, flux_resolution_shift
from nodes.ksampling.schedules import ksampler_sigmas


def sd3_simple(shift: float, steps: int) -> list[float]:
    times = [(1000 - int(i * 1000 / steps)) / 1000 for i in range(steps)]
    return [shift * t / (1 + (shift - 1) * t) for t in times]


def flux_simple(mu: float, steps: int) -> list[float]:
    times = [(10000 - int(i * 10000 / steps)) / 10000 for i in range(steps)]
    return [math.exp(mu) / (math.exp(mu) + 1 / t - 1) for t in times]


def test_flow_tables_and_simple_schedules_follow_comfyuis_definitions():
    sd3 = ksampler_sigmas(FlowSigmas.make("snr", 3.0), "simple", "euler", 4)
    assert sd3.tolist() == pytest.approx([1.0, 0.9, 0.75, 0.5, 0.0], abs=1e-6)  # by hand
    flux = ksampler_sigmas(FlowSigmas.make("exponential", 1.15), "simple", "euler", 5)
    assert flux.tolist() == pytest.approx([*flux_simple(1.15, 5), 0.0], abs=1e-6)
    normal = ksampler_sigmas(FlowSigmas.make("snr", 2.0), "normal", "euler", 3)

    # normal: timesteps evenly from timestep(sigma_max) to timestep(sigma_min), where ComfyUI's
    # timestep(sigma) is 1000 sigma (not the shift's inverse), then sigma(t); 0 appended
    def shifted(t: float) -> float:
        return 2 * (t / 1000) / (1 + t / 1000)

    end = 1000 * shifted(1.0)  # sigma_min is the table's first entry, t = 1
    expected = [shifted(t) for t in (1000.0, (1000 + end) / 2, end)]
    assert normal.tolist() == pytest.approx([*expected, 0.0], abs=1e-6)
    # ModelSamplingFlux's rule: mu 0.5 at 256 patches (256x256), 1.15 at 4096 (1024x1024)
    assert flux_resolution_shift(256, 256) == pytest.approx(0.5)
    assert flux_resolution_shift(512, 512) == pytest.approx(0.5 + 0.65 * 768 / 3840)
    assert flux_resolution_shift(1024, 1024) == pytest.approx(1.15)


@pytest.fixture(scope="module")
def flow_models(models_dir: Path) -> Path:
    from nodes.tiny_flow import make_tiny_flux, make_tiny_sd3

    checkpoints = models_dir / "checkpoints"
    for name, make in (("tiny-sd3", make_tiny_sd3), ("tiny-flux", make_tiny_flux)):
        if not (checkpoints / name / "model_index.json").exists():
            make(checkpoints / name, seed=0)
    return checkpoints


def comfy_graph(checkpoint: str, shift: float, on_model: bool, **settings: Any) -> Workflow:
    """The shared flow graph with its schedule swapped for ComfyScheduler (euler / simple);
    ``on_model``: the shift set by a FlowShift node (ModelSamplingSD3) instead of the widget."""
    data = flow_graph(checkpoint, **settings).to_json()
    unet = {"from": "model.unet"}
    if on_model:
        data["nodes"]["shift"] = {"type": "FlowShift", "inputs": {"unet": unet, "shift": shift}}
        unet, shift = {"from": "shift.unet"}, 0.0
    data["nodes"]["sched"] = {
        "type": "ComfyScheduler",
        "inputs": {"unet": unet, "sampler_name": "euler", "scheduler": "simple",
                   "steps": settings["steps"], "shift": shift},
    }  # fmt: skip
    return Workflow.from_json(data)


@pytest.mark.parametrize(
    ("model", "shift", "on_model", "sigmas", "scale"),
    [
        ("tiny-sd3", 0.0, False, sd3_simple(3.0, 4), 5.0),  # the model's own: ComfyUI's 3.0
        ("tiny-sd3", 1.5, False, sd3_simple(1.5, 4), 5.0),  # ComfyScheduler's shift widget
        ("tiny-sd3", 1.5, True, sd3_simple(1.5, 4), 5.0),  # FlowShift (ModelSamplingSD3)
        ("tiny-flux", 0.0, False, flux_simple(1.15, 4), 1.0),  # Flux dev: ComfyUI's mu 1.15
    ],
)
def test_ksampler_euler_over_flow_sigmas_equals_flow_match_euler(
    flow_models, make_executor, model, shift, on_model, sigmas, scale
):
    import diffusers

    folder = flow_models / model
    cls = diffusers.FluxPipeline if model == "tiny-flux" else diffusers.StableDiffusion3Pipeline
    pipeline = cls.from_pretrained(folder, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(
        pipeline.scheduler.config, shift=1.0, use_dynamic_shifting=False
    )  # the sigmas below are already shifted
    prompt, seed = "a red circle on a blue background", 4
    kwargs: dict[str, Any] = {"prompt": prompt, "num_inference_steps": 4, "sigmas": sigmas,
                              "width": 64, "height": 64}  # fmt: skip
    if model == "tiny-sd3":
        kwargs.update(negative_prompt="blurry", guidance_scale=scale, max_sequence_length=256)
    else:  # FluxPipeline's guidance_scale is the embedded guidance (FluxGuidance's 3.5)
        kwargs.update(guidance_scale=3.5, max_sequence_length=512)
    expected = diffusers_image(pipeline, seed=seed, **kwargs)
    settings: dict[str, Any] = {"prompt": prompt, "seed": seed, "steps": 4, "scale": scale}
    if model == "tiny-sd3":
        settings["negative"] = "blurry"
    else:
        settings["guidance"] = 3.5
    workflow = comfy_graph(model, shift, on_model, **settings)
    result = make_executor().run(workflow, targets=["decode"])
    assert result.ok, result.error and result.error.traceback
    actual = result.values["decode"]["image"].pixels.numpy()
    assert_same_pixels(actual, expected)
    assert torch.isfinite(torch.from_numpy(actual)).all()
