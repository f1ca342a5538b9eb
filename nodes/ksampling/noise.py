"""The noise ComfyUI's samplers add while they sample, seeded from the run's seed.

Ancestral samplers (and LCM) draw from a fresh ``torch.Generator`` on the latents' device,
seeded with the seed plus one on the CPU (ComfyUI's ``default_noise_sampler``: so the first
draw is not the initial noise again). The SDE samplers use a Brownian tree (``torchsde``) kept
on the CPU and seeded with the seed, so their noise is consistent across step sizes; a step
from sigma to sigma' takes the tree's increment over that interval, scaled to unit variance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NoiseFn = Callable[[Any, Any], Any]
"""``noise(sigma, sigma_next)``: standard normal noise shaped like the latents."""


class SamplerNoise:
    """Where a solver's noise comes from: ``ancestral`` and ``brownian`` make the noise function
    for latents like ``x`` (called once, when a solver starts)."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed

    def ancestral(self, x: Any) -> NoiseFn:
        import torch

        generator = None
        if self.seed is not None:
            seed = self.seed + 1 if x.device.type == "cpu" else self.seed
            generator = torch.Generator(device=x.device).manual_seed(seed % 2**64)

        def draw(sigma: Any, sigma_next: Any) -> Any:
            return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)

        return draw

    def brownian(self, x: Any, sigma_min: Any, sigma_max: Any) -> NoiseFn:
        import torch

        try:
            import torchsde
        except ImportError as error:  # a dependency of nodeflow; only a broken install lacks it
            raise RuntimeError("the SDE samplers need the torchsde package") from error
        seed = self.seed if self.seed is not None else int(torch.randint(0, 2**63 - 1, []))
        low, high = torch.as_tensor(sigma_min).cpu(), torch.as_tensor(sigma_max).cpu()
        if high < low:
            low, high = high, low
        tree = torchsde.BrownianTree(
            low, torch.zeros(x.shape, dtype=x.dtype).cpu(), high, entropy=seed
        )

        def increment(sigma: Any, sigma_next: Any) -> Any:
            t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
            sign = 1 if t0 < t1 else -1
            lo, hi = (t0, t1) if t0 < t1 else (t1, t0)
            w = tree(lo.cpu().float(), hi.cpu().float()).to(dtype=x.dtype, device=x.device)
            return sign * w / (t1 - t0).abs().sqrt()

        return increment


class SilentNoise(SamplerNoise):
    """No noise at all: for tracing which sigmas a solver evaluates the model at."""

    def __init__(self) -> None:
        super().__init__(None)

    def ancestral(self, x: Any) -> NoiseFn:
        import torch

        return lambda sigma, sigma_next: torch.zeros_like(x)

    def brownian(self, x: Any, sigma_min: Any, sigma_max: Any) -> NoiseFn:
        return self.ancestral(x)
