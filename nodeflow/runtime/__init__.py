"""Where computation happens: device and dtype policy, and the model manager.

torch is imported only when a node first asks for the device, so the engine itself (validation,
planning, caching, the server) works without touching it.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from nodeflow.runtime.device import pick_device, resolve_dtype
from nodeflow.runtime.models import ModelManager


class Runtime:
    """The device a run uses, its default dtype, and the models loaded for it."""

    def __init__(self, device: str | None = None, dtype: str | None = None) -> None:
        self.device_name = device or "auto"
        self.dtype_name = dtype or "auto"

    @cached_property
    def device(self) -> Any:
        return pick_device(self.device_name)

    @cached_property
    def models(self) -> ModelManager:
        return ModelManager()

    def dtype(self, requested: str | None = None) -> Any:
        """The torch dtype for ``requested`` (``auto``, fp32, fp16, bf16) on this device."""
        name = requested if requested not in (None, "auto") else self.dtype_name
        return resolve_dtype(name, self.device)


__all__ = ["ModelManager", "Runtime", "pick_device", "resolve_dtype"]
