"""A rectified-flow model's noise levels as ComfyUI holds them, for its KSampler schedules.

ComfyUI samples SD3 and Flux with the same k-diffusion samplers as U-Nets, over a table of
sigmas in [0, 1] (the share of noise in ``x = sigma * noise + (1 - sigma) * x0``), shifted
toward noise:

- SD3 (``ModelSamplingDiscreteFlow``, the ``ModelSamplingSD3`` node): 1000 timesteps,
  ``sigma(t) = s t' / (1 + (s - 1) t')`` with ``t' = t / 1000``; default shift 3.0;
- Flux (``ModelSamplingFlux``, the ``ModelSamplingFlux`` node): 10000 timesteps in [0, 1],
  ``sigma(t) = e^mu / (e^mu + 1/t - 1)``; default mu 1.15 (1.0 for Flux schnell), or derived
  from the picture's size by the node (``flux_resolution_shift``).

A table answers what ``nodes.ksampling.schedules`` asks of ``DiscreteSigmas``: the sigmas in
ascending order, ``sigma_min``/``sigma_max``, and ``timestep``/``sigma`` (ComfyUI's units:
``t`` in [0, 1000] for SD3, [0, 1] for Flux). The operations are ComfyUI's, in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

FlowShift = Literal["snr", "exponential"]
"""How a family shifts its flow timesteps: SD3's ``snr`` shift or Flux's ``exponential`` one."""

FLUX_DEFAULT_SHIFT = 1.15
"""ComfyUI's mu for a Flux model with resolution-dependent shifting when no ModelSamplingFlux
node sets one (its ``ModelSamplingFlux`` default)."""


@dataclass(frozen=True, eq=False)
class FlowSigmas:
    """The sigma of every timestep of a flow model, ascending."""

    kind: FlowShift
    shift: float
    multiplier: float
    sigmas: Any

    @classmethod
    def make(cls, kind: FlowShift, shift: float) -> FlowSigmas:
        import torch

        if kind == "snr":
            steps, multiplier = 1000, 1000.0
            table = cls(kind, shift, multiplier, None)
            timesteps = (torch.arange(1, steps + 1, 1) / steps) * 1000
        elif kind == "exponential":
            steps, multiplier = 10000, 1.0
            table = cls(kind, shift, multiplier, None)
            timesteps = torch.arange(1, steps + 1, 1) / steps
        else:
            raise ValueError(f"unknown flow shift {kind!r} (snr: SD3; exponential: Flux)")
        return cls(kind, shift, multiplier, table.sigma(timesteps))

    @property
    def sigma_min(self) -> Any:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> Any:
        return self.sigmas[-1]

    def timestep(self, sigma: Any) -> Any:
        """ComfyUI's model time for ``sigma`` (continuous: no rounding to a training step)."""
        return sigma * self.multiplier

    def sigma(self, timestep: Any) -> Any:
        import torch

        t = torch.as_tensor(timestep)
        if self.kind == "snr":
            t = t / self.multiplier
            if self.shift == 1.0:
                return t
            return self.shift * t / (1 + (self.shift - 1) * t)
        return math.exp(self.shift) / (math.exp(self.shift) + (1 / t - 1) ** 1.0)


def flux_resolution_shift(
    width: int, height: int, max_shift: float = 1.15, base_shift: float = 0.5
) -> float:
    """ComfyUI's ``ModelSamplingFlux`` node: mu grows linearly with the number of 2x2 latent
    patches, from ``base_shift`` at 256 patches to ``max_shift`` at 4096 (a 1024x1024 picture)."""
    slope = (max_shift - base_shift) / (4096 - 256)
    return (width * height / (8 * 8 * 2 * 2)) * slope + (base_shift - slope * 256)
