"""Sampling rectified-flow models (SD3, Flux) with the Scheduler node's names.

A model whose own scheduler is a flow-matching one predicts velocity, not noise, so the Scheduler
node's names mean the flow version of each algorithm: ``euler`` is
``FlowMatchEulerDiscreteScheduler``, ``heun`` ``FlowMatchHeunDiscreteScheduler``, ``dpmpp_2m`` and
``unipc`` the multistep solvers with flow sigmas (``use_flow_sigmas``, ``flow_shift``,
``prediction_type="flow_prediction"``). The others have no flow form in diffusers and are refused.

``shift`` moves the timesteps toward noise (sigma' = s*sigma / (1 + (s-1)*sigma)); 0 keeps the
model's own (SD3: 3.0). A model trained with resolution-dependent shifting (Flux) gets its shift
from the picture: ``mu`` grows linearly with the image's token count between the config's
``base_image_seq_len`` and ``max_image_seq_len``, as diffusers' ``calculate_shift``; a ``shift``
set by hand replaces it with that fixed shift.
"""

from __future__ import annotations

import inspect
from typing import Any

from nodes import hf
from nodes.types import Scheduler

FLOW_SOLVER = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
# name -> (diffusers class name, config overrides, the config key that holds the shift)
FLOW_SCHEDULERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "euler": ("FlowMatchEulerDiscreteScheduler", {}, "shift"),
    "heun": ("FlowMatchHeunDiscreteScheduler", {}, "shift"),
    "dpmpp_2m": (
        "DPMSolverMultistepScheduler",
        {**FLOW_SOLVER, "algorithm_type": "dpmsolver++", "solver_order": 2},
        "flow_shift",
    ),
    "unipc": ("UniPCMultistepScheduler", FLOW_SOLVER, "flow_shift"),
}


def is_flow(model_config: dict[str, Any]) -> bool:
    """A model sampled by flow matching: its own scheduler is a ``FlowMatch*`` one."""
    return str(model_config.get("_class_name", "")).startswith("FlowMatch")


def make_flow_scheduler(
    name: str,
    model_config: dict[str, Any],
    steps: int,
    shift: float,
    karras: bool,
    *,
    patch_size: int,
    sigmas: tuple[float, ...] | None,
) -> Scheduler:
    if name not in FLOW_SCHEDULERS:
        raise ValueError(
            f"scheduler {name!r} has no flow-matching form; this model (a rectified-flow model "
            f"such as SD3 or Flux) samples with one of {', '.join(FLOW_SCHEDULERS)}"
        )
    class_name, overrides, shift_key = FLOW_SCHEDULERS[name]
    cls = getattr(hf.diffusers(), class_name)
    config = {k: v for k, v in model_config.items() if not k.startswith("_")}
    model_shift = float(config.get("shift", 1.0))
    config.update(overrides)
    config[shift_key] = shift or model_shift
    if shift:
        config["use_dynamic_shifting"] = False
    if karras:
        if "use_karras_sigmas" not in inspect.signature(cls.__init__).parameters:
            raise ValueError(f"scheduler {name!r} ({class_name}) has no Karras sigmas option")
        config["use_karras_sigmas"] = True
    config = dict(cls.from_config(config).config)
    dynamic = bool(config.get("use_dynamic_shifting"))
    if dynamic and "mu" not in inspect.signature(cls.set_timesteps).parameters:
        raise ValueError(
            f"scheduler {name!r} ({class_name}) cannot shift by the picture's size, which this "
            "model is trained with; set the Scheduler's shift (e.g. 3.0) or choose euler"
        )
    return Scheduler(
        name=name, cls=cls, config=config, steps=steps, patch_size=patch_size, sigmas=sigmas
    )


def calculate_shift(tokens: int, config: dict[str, Any]) -> float:
    """Flux's ``mu``: linear in the image's token count through (base_seq, base_shift) and
    (max_seq, max_shift)."""
    base_seq = config.get("base_image_seq_len", 256)
    max_seq = config.get("max_image_seq_len", 4096)
    base_shift = config.get("base_shift", 0.5)
    max_shift = config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_seq - base_seq)
    return tokens * slope + base_shift - slope * base_seq


def timestep_options(recipe: Scheduler, latent_size: tuple[int, int]) -> dict[str, Any]:
    """What ``set_timesteps`` is given besides the step count, for latents of ``latent_size``
    (height, width): ``mu`` under resolution-dependent shifting, and the model's own sigmas where
    its pipeline passes them (not to a solver that makes its own flow sigmas)."""
    options: dict[str, Any] = {}
    accepted = inspect.signature(recipe.cls.set_timesteps).parameters
    if recipe.config.get("use_dynamic_shifting"):
        height, width = latent_size
        tokens = (height // recipe.patch_size) * (width // recipe.patch_size)
        options["mu"] = calculate_shift(tokens, recipe.config)
    if recipe.sigmas is not None and "sigmas" in accepted and not recipe.config.get(
        "use_flow_sigmas"
    ):
        options["sigmas"] = list(recipe.sigmas)
    return options
