"""ComfyUI's ``sampler_name`` and ``scheduler`` choices onto a scheduler node's settings.

ComfyUI's own samplers and schedules (``nodes.ksampling``: the ``ComfyScheduler`` node) give
ComfyUI's pixels, and are used whenever they have the choice. The few ComfyUI samplers they lack
fall back to the nearest of diffusers' schedulers (the ``Scheduler`` node), which makes a
picture of the same kind, not the same pixels, and says so in a warning. A choice with no
counterpart at all is an import error, never a silent substitution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import get_args

from nodes.ksampling.recipe import ComfySamplerName, ComfyScheduleName

COMFY_FAMILY_SAMPLERS = frozenset(get_args(ComfySamplerName))
COMFY_FAMILY_SCHEDULES = frozenset(get_args(ComfyScheduleName))

NEAR_COMFY_SAMPLERS: dict[str, tuple[str, str]] = {
    f"{name}_gpu": (name, "its Brownian-tree noise is drawn on the CPU here (ComfyUI: the GPU)")
    for name in ("dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde")
}
"""ComfyUI samplers that differ from one of the family only in where their noise is drawn."""

SAMPLERS: dict[str, str] = {
    "euler": "euler",
    "euler_ancestral": "euler_ancestral",
    "heun": "heun",
    "lms": "lms",
    "dpmpp_2m": "dpmpp_2m",
    "dpmpp_2m_sde": "dpmpp_2m_sde",
    "ddim": "ddim",
    "ddpm": "ddpm",
    "uni_pc": "unipc",
    "lcm": "lcm",
}
"""The same algorithm under another name."""

NEAR_SAMPLERS: dict[str, tuple[str, str]] = {
    "dpmpp_2m_sde_gpu": ("dpmpp_2m_sde", "its noise is drawn on the CPU instead"),
    "uni_pc_bh2": ("unipc", "with UniPC's default bh1 variant"),
}
"""A close relative, with what differs."""

KARRAS_CAPABLE = frozenset({"lms", "euler", "heun", "dpmpp_2m", "dpmpp_2m_sde", "unipc"})

COMFY_SAMPLERS = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm",
    "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "gradient_estimation",
    "er_sde", "seeds_2", "seeds_3", "ddim", "uni_pc", "uni_pc_bh2",
)  # fmt: skip
"""ComfyUI's sampler names (``comfy/samplers.py``), for ``/object_info``'s choices."""

COMFY_SCHEDULERS = (
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
    "linear_quadratic", "kl_optimal",
)  # fmt: skip


@dataclass
class SamplerChoice:
    """The scheduler node (``ComfyScheduler`` or ``Scheduler``) and its inputs for a ComfyUI
    choice, or why there are none."""

    node: str = "ComfyScheduler"
    inputs: dict[str, object] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    """(the ComfyUI input it is about, what differs)."""
    error: tuple[str, str] | None = None


def map_sampler(sampler_name: object, scheduler: object) -> SamplerChoice:
    """The scheduler node and inputs for ComfyUI's sampler and scheduler names: ComfyUI's own
    where the ``ComfyScheduler`` family has them, else diffusers' nearest (with a warning)."""
    if not isinstance(sampler_name, str) or not isinstance(scheduler, str):
        return SamplerChoice(
            error=("sampler_name", "sampler_name and scheduler must be names (text)")
        )
    name, difference = NEAR_COMFY_SAMPLERS.get(sampler_name, (sampler_name, None))
    if name in COMFY_FAMILY_SAMPLERS and scheduler in COMFY_FAMILY_SCHEDULES:
        choice = SamplerChoice(inputs={"sampler_name": name, "scheduler": scheduler})
        if difference:
            choice.warnings.append(
                ("sampler_name", f"sampler {sampler_name!r} runs as {name!r}: {difference}")
            )
        return choice
    choice = diffusers_choice(sampler_name, scheduler)
    if choice.error is None:
        choice.warnings.append(
            (
                "sampler_name",
                f"{sampler_name!r} with {scheduler!r} runs as diffusers' nearest scheduler: "
                "a picture of the same kind, not ComfyUI's pixels",
            )
        )
    return choice


def diffusers_choice(sampler_name: str, scheduler: str) -> SamplerChoice:
    """``Scheduler`` inputs (``name``, ``karras``): diffusers' nearest to a ComfyUI choice."""
    choice = SamplerChoice(node="Scheduler")
    name = SAMPLERS.get(sampler_name)
    if name is None and sampler_name in NEAR_SAMPLERS:
        name, difference = NEAR_SAMPLERS[sampler_name]
        choice.warnings.append(
            ("sampler_name", f"sampler {sampler_name!r} runs as {name!r}: {difference}")
        )
    if name is None:
        known = ", ".join(
            sorted({*COMFY_FAMILY_SAMPLERS, *NEAR_COMFY_SAMPLERS, *SAMPLERS, *NEAR_SAMPLERS})
        )
        choice.error = (
            "sampler_name",
            f"sampler {sampler_name!r} has no equivalent here yet (mapped samplers: {known})",
        )
        return choice
    choice.inputs["name"] = name
    if scheduler == "karras":
        if name not in KARRAS_CAPABLE:
            choice.error = ("scheduler", f"sampler {sampler_name!r} has no Karras schedule here")
            return choice
        choice.inputs["karras"] = True
    elif scheduler == "normal" or (scheduler == "ddim_uniform" and name == "ddim"):
        pass  # the model's own schedule, as diffusers builds it: the nearest equivalent
    elif scheduler in ("simple", "sgm_uniform", "ddim_uniform"):
        choice.warnings.append(
            ("scheduler", f"scheduler {scheduler!r} runs as the model's default timestep spacing")
        )
    else:
        choice.error = (
            "scheduler",
            f"scheduler {scheduler!r} has no equivalent here yet "
            f"(mapped: {', '.join(sorted(COMFY_FAMILY_SCHEDULES))})",
        )
    return choice
