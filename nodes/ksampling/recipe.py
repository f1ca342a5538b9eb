"""The ``ComfyScheduler`` node: a ComfyUI sampler and schedule as a ``Scheduler`` recipe.

It makes the same kind of value as the ``Scheduler`` node (diffusers' schedulers), so ``CFG``
and ``Denoise`` take either; the names are ComfyUI's ``sampler_name`` and ``scheduler``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from nodeflow import node
from nodes.ksampling.scheduler import KSamplerScheduler
from nodes.types import Scheduler, UNet

ComfySamplerName = Literal[
    "euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2m",
    "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddim", "lcm", "uni_pc", "uni_pc_bh2",
]  # fmt: skip
ComfyScheduleName = Literal[
    "normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta",
]  # fmt: skip

MODEL_KEYS = (
    "beta_schedule", "beta_start", "beta_end", "num_train_timesteps", "prediction_type",
    "rescale_betas_zero_snr",
)  # fmt: skip
"""What the recipe takes from the model's scheduler config: its noise levels (zero terminal SNR
included) and prediction."""


def make_comfy_scheduler(
    model_config: dict[str, Any],
    sampler_name: str,
    scheduler: str,
    steps: int,
    end_at_step: int | None = None,
    return_with_leftover_noise: bool = False,
    add_noise: bool = True,
    flow: tuple[str, float] | None = None,
) -> Scheduler:
    """``flow``: (shift kind, shift) for a rectified-flow model, None for a diffusion model."""
    config = {key: model_config[key] for key in MODEL_KEYS if key in model_config}
    if flow is not None:
        config = {"prediction_type": "flow", "flow_shift": flow[0], "shift": flow[1]}
    config.update(
        sampler=sampler_name,
        schedule=scheduler,
        end_at_step=end_at_step,
        full_denoise=not return_with_leftover_noise,
        add_noise=add_noise,
    )
    KSamplerScheduler.from_config(config)  # refuse a model it cannot sample now, not mid-run
    return Scheduler(
        name=f"comfy:{sampler_name}/{scheduler}", cls=KSamplerScheduler, config=config, steps=steps
    )


@node("ComfyScheduler", category="sampling")
def comfy_scheduler(
    unet: UNet,
    sampler_name: ComfySamplerName = "euler",
    scheduler: ComfyScheduleName = "normal",
    steps: Annotated[int, Field(ge=1, le=10000)] = 20,
    end_at_step: Annotated[int, Field(ge=0, le=10000)] = 10000,
    return_with_leftover_noise: bool = False,
    add_noise: bool = True,
    shift: Annotated[float, Field(ge=0, le=100)] = 0.0,
) -> Scheduler:
    """ComfyUI's KSampler sampling (k-diffusion samplers over ComfyUI's sigma schedules), so a
    seed gives ComfyUI's picture; the Scheduler node offers diffusers' schedulers instead.

    ``end_at_step`` stops early (a refiner's first pass), keeping the leftover noise when
    ``return_with_leftover_noise`` is on; ``add_noise`` off continues such a latent without new
    noise (use it with Denoise's strength below 1). Denoise's strength runs the last
    ``int(steps * strength)`` steps.

    A rectified-flow model (SD3, Flux) samples as ComfyUI samples it, over its shifted flow
    sigmas: ``shift`` is ModelSamplingSD3's shift or ModelSamplingFlux's mu (0: the one a
    FlowShift node set on the model, else the model's default, SD3 3.0, Flux 1.15); it is
    ignored for diffusion models.
    """
    end = None if end_at_step >= steps else end_at_step
    return make_comfy_scheduler(
        unet.scheduler_config,
        sampler_name,
        scheduler,
        steps,
        end_at_step=end,
        return_with_leftover_noise=return_with_leftover_noise,
        add_noise=add_noise,
        flow=_flow_sampling(unet, shift),
    )


def _flow_sampling(unet: UNet, shift: float) -> tuple[str, float] | None:
    flow = unet.family.comfy_flow_sampling(unet)
    shift = shift or unet.sampling_shift or 0.0
    if flow is None or not shift:
        return flow
    return flow[0], shift
