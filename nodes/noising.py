"""Putting noise on clean latents at a timestep, for either family of schedulers."""

from __future__ import annotations

from typing import Any


def noised(scheduler: Any, init: Any, noise: Any, timesteps: Any) -> Any:
    """``init`` noised to ``timesteps`` the way the scheduler's family does it: ``add_noise``
    for diffusion schedulers, ``(1 - sigma) x + sigma noise`` (``scale_noise``) for flow ones."""
    if not hasattr(scheduler, "add_noise"):
        return scheduler.scale_noise(init, timesteps, noise)
    return scheduler.add_noise(init, noise, timesteps)
