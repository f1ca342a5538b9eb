"""ComfyUI's ``sampler_name`` and ``scheduler`` choices onto the ``Scheduler`` node's settings.

ComfyUI samples with k-diffusion; the pack uses diffusers' schedulers. Where the same algorithm
exists it is used, and the noise schedule is the nearest one the ``Scheduler`` node offers, so
an imported workflow makes a picture of the same kind, not the same pixels. A choice with a near
but not equal counterpart gives a warning; one with none is an import error, never a silent
substitution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """The ``Scheduler`` node's inputs for a ComfyUI choice, or why there are none."""

    inputs: dict[str, object] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    """(the ComfyUI input it is about, what differs)."""
    error: tuple[str, str] | None = None


def map_sampler(sampler_name: object, scheduler: object) -> SamplerChoice:
    """``Scheduler`` inputs (``name``, ``karras``) for ComfyUI's sampler and scheduler names."""
    choice = SamplerChoice()
    if not isinstance(sampler_name, str) or not isinstance(scheduler, str):
        choice.error = ("sampler_name", "sampler_name and scheduler must be names (text)")
        return choice
    name = SAMPLERS.get(sampler_name)
    if name is None and sampler_name in NEAR_SAMPLERS:
        name, difference = NEAR_SAMPLERS[sampler_name]
        choice.warnings.append(
            ("sampler_name", f"sampler {sampler_name!r} runs as {name!r}: {difference}")
        )
    if name is None:
        known = ", ".join(sorted({*SAMPLERS, *NEAR_SAMPLERS}))
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
            "(mapped: normal, karras; simple, sgm_uniform, ddim_uniform approximately)",
        )
    return choice
