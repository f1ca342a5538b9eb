"""Schedulers by name: each one the diffusers scheduler, built from the model's own config.

Building from the model's scheduler config keeps what the model was trained with (its beta
schedule, its prediction type, epsilon or v_prediction, its timestep spacing); the name only
chooses the sampling algorithm, as diffusers' ``Scheduler.from_config(pipe.scheduler.config)``.

A model trained with zero terminal SNR (``rescale_betas_zero_snr: true``; Lin et al. 2024) is
refused by the schedulers whose class has no such option (pndm, lms, heun, consistency): they
would silently sample the unrescaled schedule. The config's own class does not matter: diffusers
writes the key into a ``PNDMScheduler`` config too, where PNDM ignores it, so the key is what
the model was trained with and the default, euler, honours it. Such a model predicting epsilon
is refused by ddpm, ddim, lcm and tcd, whose last alphabar is then exactly 0 (a NaN first step).
"""

from __future__ import annotations

import inspect
import itertools
from typing import Annotated, Any, Literal

from pydantic import Field

from nodeflow import node
from nodes import hf
from nodes.types import Scheduler, UNet

SchedulerName = Literal[
    "ddpm",
    "ddim",
    "pndm",
    "lms",
    "euler",
    "euler_ancestral",
    "heun",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "unipc",
    "lcm",
    "tcd",
    "consistency",
]
BetaSchedule = Literal["default", "linear", "scaled_linear", "squaredcos_cap_v2"]

# name -> (diffusers class name, config overrides)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
    "dpmpp_2m_sde": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
    ),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
    "consistency": ("CMStochasticIterativeScheduler", {}),
}


def make_scheduler(
    name: str,
    model_config: dict[str, Any],
    steps: int,
    beta_schedule: str = "default",
    karras: bool = False,
    eta: float = 0.0,
    timesteps: tuple[int, ...] = (),
) -> Scheduler:
    class_name, overrides = SCHEDULERS[name]
    cls = getattr(hf.diffusers(), class_name)
    if model_config.get("rescale_betas_zero_snr") and not takes_zero_snr(class_name):
        raise ValueError(zero_snr_refusal(name, class_name))
    config = {k: v for k, v in model_config.items() if not k.startswith("_")}
    if class_name != "DDPMScheduler":
        # A learned variance (Kandinsky 2.2's DDPM) means nothing to other samplers, and a stale
        # key would make the denoiser hand them the variance channels too.
        config.pop("variance_type", None)
    config.update(overrides)
    if beta_schedule != "default":
        config["beta_schedule"] = beta_schedule
    if karras:
        if "use_karras_sigmas" not in inspect.signature(cls.__init__).parameters:
            raise ValueError(f"scheduler {name!r} ({class_name}) has no Karras sigmas option")
        config["use_karras_sigmas"] = True
    built = cls.from_config(config)
    config = dict(built.config)  # normalised: defaults filled
    epsilon = config.get("prediction_type") == "epsilon"
    if epsilon and config.get("rescale_betas_zero_snr") and float(built.alphas_cumprod[-1]) == 0:
        raise ValueError(zero_snr_epsilon_refusal(name, class_name))
    # Keys the class does not take (a PNDM config's ``skip_prk_steps`` under ``lcm``) are ignored
    # by ``from_config``, which also logs a warning about them on every ``Scheduler.create``, once
    # per picture; dropping them here builds the same scheduler without that cost and noise.
    accepted = inspect.signature(cls.__init__).parameters
    config = {k: v for k, v in config.items() if k in accepted or k.startswith("_")}
    if eta and "eta" not in inspect.signature(cls.step).parameters:
        raise ValueError(f"scheduler {name!r} ({class_name}) has no eta; eta applies to ddim, tcd")
    if timesteps and "timesteps" not in inspect.signature(cls.set_timesteps).parameters:
        raise ValueError(f"scheduler {name!r} ({class_name}) cannot run chosen timesteps")
    if timesteps:
        steps = len(timesteps)
    return Scheduler(
        name=name, cls=cls, config=config, steps=steps, eta=eta, timesteps=tuple(timesteps)
    )


def takes_zero_snr(class_name: str) -> bool:
    """Whether a diffusers scheduler class rescales its betas to zero terminal SNR when told."""
    cls = getattr(hf.diffusers(), class_name)
    return "rescale_betas_zero_snr" in inspect.signature(cls.__init__).parameters


def zero_snr_refusal(name: str, class_name: str) -> str:
    """Why ``name`` cannot sample a zero-terminal-SNR model, and which schedulers can."""
    honouring = ", ".join(n for n, (c, _) in SCHEDULERS.items() if takes_zero_snr(c))
    return (
        f"scheduler {name!r} ({class_name}) has no zero-terminal-SNR option, and this model's "
        "scheduler config has rescale_betas_zero_snr: it would sample another noise schedule "
        f"than the one the model was trained on; use one of {honouring} (or ComfyScheduler)"
    )


def zero_snr_epsilon_refusal(name: str, class_name: str) -> str:
    """Why ``name`` cannot sample a zero-terminal-SNR model that predicts the noise, and which
    schedulers can (those whose rescaled schedule stops just short of pure noise)."""
    short = []
    for other, (other_class, _) in SCHEDULERS.items():
        if takes_zero_snr(other_class):
            built = getattr(hf.diffusers(), other_class)(rescale_betas_zero_snr=True)
            if float(built.alphas_cumprod[-1]) > 0:
                short.append(other)
    return (
        f"scheduler {name!r} ({class_name}) cannot sample a zero-terminal-SNR model that "
        "predicts epsilon: its last timestep is pure noise (alphabar exactly 0), where a noise "
        "prediction says nothing of the picture and its step divides by zero; such models "
        f"predict v (prediction_type v_prediction), or use {', '.join(short)}, which stop just "
        "short of pure noise"
    )


def parse_timesteps(text: str) -> tuple[int, ...]:
    """``"22, 0"`` -> ``(22, 0)``: chosen timesteps, strictly descending, as schedulers need."""
    if not text.strip():
        return ()
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        raise ValueError(f"timesteps {text!r}: expected whole numbers, comma-separated") from None
    if any(b >= a for a, b in itertools.pairwise(values)) or min(values) < 0:
        raise ValueError(f"timesteps {text!r}: must be non-negative and strictly descending")
    return values


@node("Scheduler", category="sampling", aliases=("BasicScheduler", "KSamplerSelect"))
def scheduler(
    unet: UNet,
    name: SchedulerName = "euler",
    steps: Annotated[int, Field(ge=1, le=1000)] = 20,
    beta_schedule: BetaSchedule = "default",
    karras: bool = False,
    eta: Annotated[float, Field(ge=0, le=1)] = 0.0,
    timesteps: str = "",
    shift: Annotated[float, Field(ge=0, le=100)] = 0.0,
) -> Scheduler:
    """Choose the sampling algorithm and step count; the noise schedule comes from the model.

    ``eta`` is the stochasticity of ddim (its eta) and tcd (its gamma; 0.3 is TCD's usual
    value): 0 is deterministic. ``timesteps`` (e.g. ``22, 0`` for a consistency model's two
    steps) runs those timesteps instead of ``steps`` evenly spaced ones. A model trained with
    zero terminal SNR (``rescale_betas_zero_snr``) refuses pndm, lms, heun and consistency,
    which have no such schedule.

    For rectified-flow models (SD3, Flux) the names mean their flow-matching forms (euler, heun,
    dpmpp_2m, unipc), and ``shift`` moves the timesteps toward noise: 0 keeps the model's own
    (SD3: 3.0; Flux: chosen from the picture's size); any other value is used as a fixed shift.
    """
    from nodes.flow_schedulers import is_flow, make_flow_scheduler

    config = unet.scheduler_config
    if is_flow(config):
        if beta_schedule != "default":
            raise ValueError("beta_schedule: a rectified-flow model has no beta schedule")
        if eta or timesteps.strip():
            raise ValueError("eta and timesteps apply to diffusion schedulers, not flow models")
        family = unet.family
        return make_flow_scheduler(
            name,
            config,
            steps,
            shift,
            karras,
            patch_size=family.token_size(unet),
            sigmas=family.sigmas(unet, steps),
        )
    if shift:
        raise ValueError("shift applies to rectified-flow models (SD3, Flux) only; set it to 0")
    chosen = parse_timesteps(timesteps)
    return make_scheduler(name, config, steps, beta_schedule, karras, eta, chosen)
