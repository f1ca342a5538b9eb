"""Where a model computes: its device and dtype, read the way diffusers reads them, but cheaply.

diffusers' ``ModelMixin.device`` and ``.dtype`` first walk every submodule looking for its own
hooks (group offloading, layerwise casting) before reading the first parameter; on the CPU that
walk cost about 3.5 ms per property on the demo U-Net, i.e. several percent of a 4-step picture
when Denoise asked for them once per run. nodeflow never installs those diffusers hooks (fp8
weights are parametrizations, ``nodes.fp8``; offloading is the model manager's whole-module
moves), so the answer is diffusers' second rule alone, which stops at the first parameter:

* device: the first parameter's or buffer's;
* dtype: the first floating-point parameter's, skipping the ``_keep_in_fp32_modules`` ones,
  else the first floating buffer's, else the last dtype seen.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

__all__ = ["model_device", "model_dtype"]


def model_device(model: Any) -> Any:
    """The device of the model's first parameter or buffer."""
    first = next(chain(model.parameters(), model.buffers()), None)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no parameters or buffers to place it by")
    return first.device


def model_dtype(model: Any) -> Any:
    """The dtype the model computes in, as diffusers' ``get_parameter_dtype`` answers it for a
    model without diffusers hooks."""
    kept = getattr(model, "_keep_in_fp32_modules", None) or ()
    last = None
    for name, param in model.named_parameters():
        last = param.dtype
        if kept and any(part in name for part in kept):
            continue
        if param.is_floating_point():
            return param.dtype
    for buffer in model.buffers():
        last = buffer.dtype
        if buffer.is_floating_point():
            return buffer.dtype
    if last is None:
        raise ValueError(f"{type(model).__name__} has no parameters or buffers to read a dtype")
    return last
