"""A discrete-time model's noise levels as ComfyUI holds them (its ``ModelSamplingDiscrete``).

The model was trained on 1000 (or so) timesteps; timestep ``t`` has noise level
``sigma_t = sqrt((1 - alphabar_t) / alphabar_t)``. ComfyUI builds the betas in float64 and keeps
the sigmas and their logs in float32; a model call rounds a sigma to the timestep whose log-sigma
is nearest, and a fractional timestep maps back by interpolating log-sigma. Doing the same here,
rather than diffusers' float32 betas, is what makes the schedules equal ComfyUI's to the last bit.

A model trained with zero terminal SNR (``rescale_betas_zero_snr: true`` in its scheduler config;
Lin et al. 2024) has its table rescaled as ComfyUI's ``zsnr`` rescales it, in float64 before the
float32 rounding: sqrt(alphabar) shifted so that the last one is 0 and scaled so that the first
one keeps its value; the last alphabar is then set to a small constant instead of 0, so the
largest sigma is finite (about 4519) and the model is first called at pure noise, timestep 999.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def _betas(config: dict[str, Any]) -> Any:
    import torch

    steps = int(config.get("num_train_timesteps", 1000))
    start = float(config.get("beta_start", 0.00085))
    end = float(config.get("beta_end", 0.012))
    schedule = config.get("beta_schedule", "scaled_linear")
    if schedule == "scaled_linear":  # ComfyUI calls this one "linear"
        return torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float64) ** 2
    if schedule == "linear":
        return torch.linspace(start, end, steps, dtype=torch.float64)
    if schedule == "squaredcos_cap_v2":

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [
            min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)
        ]
        return torch.tensor(betas, dtype=torch.float64)
    raise ValueError(
        f"beta schedule {schedule!r} has no ComfyUI sigma table here "
        "(scaled_linear, linear, squaredcos_cap_v2 have)"
    )


ZERO_SNR_LAST_ALPHABAR = 4.8973451890853435e-08
"""The last timestep's alphabar after a zero-terminal-SNR rescale: ComfyUI's constant (the
rescale makes it 0, an infinite sigma)."""


def zero_terminal_snr(sigmas: Any) -> Any:
    """The sigma table of the same betas rescaled to zero terminal SNR (float64 in and out)."""
    root = (1.0 / (1.0 + sigmas * sigmas)).sqrt()  # sqrt(alphabar), timestep 0 first
    first, last = float(root[0]), float(root[-1])
    root = (root - last) * (first / (first - last))
    alphabar = root * root
    alphabar[-1] = ZERO_SNR_LAST_ALPHABAR
    return ((1.0 - alphabar) / alphabar).sqrt()


@dataclass(frozen=True, eq=False)
class DiscreteSigmas:
    """The sigma of every training timestep, ascending (index = timestep)."""

    sigmas: Any
    log_sigmas: Any

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DiscreteSigmas:
        """From a diffusers scheduler config (its beta schedule and range, and
        ``rescale_betas_zero_snr``)."""
        import torch

        alphas_cumprod = torch.cumprod(1.0 - _betas(config), dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if config.get("rescale_betas_zero_snr"):
            sigmas = zero_terminal_snr(sigmas)
        return cls(sigmas=sigmas.float(), log_sigmas=sigmas.log().float())

    @property
    def sigma_min(self) -> Any:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> Any:
        return self.sigmas[-1]

    def timestep(self, sigma: Any) -> Any:
        """The training timestep nearest in log-sigma, as a float (what the model is given)."""
        import torch

        log_sigma = torch.as_tensor(sigma, dtype=torch.float32).log()
        distances = log_sigma - self.log_sigmas[:, None]
        return distances.abs().argmin(dim=0).view(log_sigma.shape).float()

    def sigma(self, timestep: Any) -> Any:
        """The sigma of a (fractional) timestep: log-sigma interpolated between neighbours."""
        import torch

        t = torch.as_tensor(timestep).float().clamp(0, len(self.sigmas) - 1)
        low, high = t.floor().long(), t.ceil().long()
        weight = t.frac()
        return ((1 - weight) * self.log_sigmas[low] + weight * self.log_sigmas[high]).exp()
