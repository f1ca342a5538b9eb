"""ComfyUI's sigma schedules (its ``scheduler`` names), from a model's sigma table.

Each returns ``steps + 1`` descending float32 sigmas ending in 0 (one step between each pair).
Written from ComfyUI's ``comfy/samplers.py`` and k-diffusion's ``get_sigmas_*`` as the behaviour
to match, including their quirks (``normal`` drops the final 0 when the table's smallest sigma
is 0; ``ddim_uniform`` strides through the table; ``beta`` may return fewer steps when two
quantiles round to the same timestep).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from nodes.ksampling.sigmas import DiscreteSigmas

SCHEDULE_NAMES = (
    "normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta",
)  # fmt: skip

DISCARD_PENULTIMATE = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})
"""Samplers ComfyUI gives one step more and then drops the last sigma before 0 (their final
second-order step would land on a tiny sigma and waste a model call)."""


def _tensor(values: list[float]) -> Any:
    import torch

    return torch.tensor(values, dtype=torch.float32)


def _zero_appended(sigmas: Any) -> Any:
    import torch

    return torch.cat([sigmas, sigmas.new_zeros([1])])


def karras(table: DiscreteSigmas, steps: int, rho: float = 7.0) -> Any:
    """Karras et al. (2022): sigmas evenly spaced in sigma^(1/rho)."""
    import torch

    sigma_min, sigma_max = float(table.sigma_min), float(table.sigma_max)
    ramp = torch.linspace(0, 1, steps)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _zero_appended((high + ramp * (low - high)) ** rho)


def exponential(table: DiscreteSigmas, steps: int) -> Any:
    """Sigmas evenly spaced in log-sigma."""
    import torch

    sigma_min, sigma_max = float(table.sigma_min), float(table.sigma_max)
    return _zero_appended(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def normal(table: DiscreteSigmas, steps: int, sgm: bool = False) -> Any:
    """Timesteps evenly spaced from the largest to the smallest (``sgm``: leaving the smallest
    out, as SGM's uniform discretisation does), each mapped to its sigma."""
    import torch

    start, end = table.timestep(table.sigma_max), table.timestep(table.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(float(start), float(end), steps + 1)[:-1]
    else:
        if math.isclose(float(table.sigma(end)), 0, abs_tol=1e-5):
            steps, append_zero = steps + 1, False
        timesteps = torch.linspace(float(start), float(end), steps)
    sigmas = [float(table.sigma(t)) for t in timesteps]
    return _tensor([*sigmas, 0.0] if append_zero else sigmas)


def sgm_uniform(table: DiscreteSigmas, steps: int) -> Any:
    return normal(table, steps, sgm=True)


def simple(table: DiscreteSigmas, steps: int) -> Any:
    """Every ``len/steps``-th sigma of the table, from the top."""
    stride = len(table.sigmas) / steps
    return _tensor([float(table.sigmas[-(1 + int(i * stride))]) for i in range(steps)] + [0.0])


def ddim_uniform(table: DiscreteSigmas, steps: int) -> Any:
    """DDIM's uniform timesteps: every ``len // steps``-th sigma of the table from timestep 1."""
    index = 1
    if math.isclose(float(table.sigmas[index]), 0, abs_tol=1e-5):
        steps, sigmas = steps + 1, []
    else:
        sigmas = [0.0]
    stride = max(len(table.sigmas) // steps, 1)
    while index < len(table.sigmas):
        sigmas.append(float(table.sigmas[index]))
        index += stride
    return _tensor(sigmas[::-1])


def beta(table: DiscreteSigmas, steps: int, alpha: float = 0.6, beta_: float = 0.6) -> Any:
    """Timesteps at the quantiles of a Beta(0.6, 0.6) distribution (Lee et al. 2024), denser at
    both ends; a timestep that two quantiles round to is kept once."""
    import numpy as np
    from scipy import stats

    total = len(table.sigmas) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    timesteps = np.rint(stats.beta.ppf(quantiles, alpha, beta_) * total)
    sigmas, last = [], -1.0
    for t in timesteps:
        if t != last:
            sigmas.append(float(table.sigmas[int(t)]))
        last = t
    return _tensor([*sigmas, 0.0])


SCHEDULES: dict[str, Callable[[DiscreteSigmas, int], Any]] = {
    "normal": normal,
    "karras": karras,
    "exponential": exponential,
    "sgm_uniform": sgm_uniform,
    "simple": simple,
    "ddim_uniform": ddim_uniform,
    "beta": beta,
}


def ksampler_sigmas(table: DiscreteSigmas, schedule: str, sampler: str, steps: int) -> Any:
    """The sigmas ComfyUI's ``KSampler`` runs for ``steps`` steps of ``sampler``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; one of {', '.join(SCHEDULE_NAMES)}")
    if sampler in DISCARD_PENULTIMATE:
        import torch

        sigmas = SCHEDULES[schedule](table, steps + 1)
        return torch.cat([sigmas[:-2], sigmas[-1:]])
    return SCHEDULES[schedule](table, steps)
