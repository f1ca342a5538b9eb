"""Where computation happens: device and dtype policy, and the model manager.

torch is imported only when a node first asks for the device, so the engine itself (validation,
planning, caching, the server) works without touching it.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from nodeflow.runtime.device import pick_device, resolve_dtype
from nodeflow.runtime.models import ModelManager, parse_bytes


class Runtime:
    """The device a run uses, its default dtype, and the models loaded for it."""

    def __init__(
        self,
        device: str | None = None,
        dtype: str | None = None,
        vram_budget: int | str | None = None,
    ) -> None:
        """``vram_budget``: bytes of weights kept on the device, or a size for ``parse_bytes``;
        None or ``auto`` is the device's default (``models.default_budget``). Checked here,
        so a bad value fails at startup rather than at the first model a run uses."""
        self.device_name = device or "auto"
        self.dtype_name = dtype or "auto"
        if isinstance(vram_budget, str):
            vram_budget = parse_bytes(vram_budget)
        if vram_budget is not None and vram_budget < 0:
            raise ValueError(f"vram_budget must not be negative, got {vram_budget}")
        self.vram_budget: int | None = vram_budget
        """The budget asked for, in bytes; None is the device's default."""

    @cached_property
    def device(self) -> Any:
        return pick_device(self.device_name)

    @cached_property
    def models(self) -> ModelManager:
        # the device name, not self.device: making the manager must not import torch
        budget = "auto" if self.vram_budget is None else self.vram_budget
        return ModelManager(budget_bytes=budget, device=self.device_name)

    def dtype(self, requested: str | None = None) -> Any:
        """The torch dtype for ``requested`` (``auto``, fp32, fp16, bf16) on this device."""
        name = requested if requested not in (None, "auto") else self.dtype_name
        return resolve_dtype(name, self.device)


__all__ = ["ModelManager", "Runtime", "parse_bytes", "pick_device", "resolve_dtype"]
