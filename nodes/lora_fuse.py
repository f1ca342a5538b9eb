"""LoRAs fused into a per-run copy of the layer's weight instead of run as forward hooks.

A hook (``nodes.lora._hook``) costs every call of its layer two extra matmuls, a multiply, an
add, a cast and ``nn.Module.__call__``'s slow path. With few steps on small latents that
overhead is most of what a LoRA costs: with the 70-layer ``demo-lcm`` LoRA a hooked demo U-Net
pass took 18% longer than a plain one, and a whole 4-step picture 10% longer than fused (CPU, one
thread; BENCHMARKS.md, "Few-step sampling"). Fused, a pass costs what a plain one costs.

Fusing computes ``W + scaling * up @ down`` (every LoRA on the layer, in patch order) once per
patched block into a new tensor and points that one layer instance's ``forward`` at it. The
layer's parameters are never written, copied over or reassigned, and leaving the block deletes
the instance's ``forward``: a run without the LoRA afterwards is bit-identical to one before,
the promise hooks keep. ``(W + s U D) x`` differs from PEFT's ``W x + s U (D x)`` by rounding
only, well inside the 1e-4 image parity with diffusers.

A 2D convolution's LoRA in kohya's layout (``down`` with the layer's kernel, stride and padding,
``up`` 1x1: what LoCon and ``train_lcm --targets all`` write) fuses the same way: ``up`` mixes
channels only, so ``conv(conv(x, D), U) = conv(x, U @ D)`` with ``U @ D`` taken over the flattened
kernels. Grouped or dilated convolutions and other kernel shapes keep their hooks.

The copies cost memory while the block runs (the size of the fused layers' weights), so a block
fuses layers only up to ``FUSE_BYTES``; the rest, and layers whose ``forward`` someone else
already replaced keep their hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["FUSE_BYTES", "fuse", "fuse_cost", "unfuse"]

FUSE_BYTES = 512 * 2**20
"""The most bytes of fused weight copies one patched block holds (512 MiB: the attention and
feed-forward layers of an SD 1.5 U-Net in fp16; SDXL's larger LoRAs fuse in part)."""


def fuse_cost(module: Any, pairs: Sequence[tuple[Any, Any, float]] = ()) -> int | None:
    """Bytes a fused copy of ``module``'s weight takes, or None when it cannot be fused (not a
    plain ``nn.Linear`` or ungrouped, undilated ``nn.Conv2d`` whose ``pairs`` are a kernel-shaped
    ``down`` and a 1x1 ``up``, or its ``forward`` already replaced on the instance)."""
    from torch import nn

    if "forward" in vars(module):
        return None
    if type(module) is nn.Conv2d:
        if module.groups != 1 or module.dilation != (1, 1):
            return None
        kernel = tuple(module.weight.shape[2:])
        if any(tuple(d.shape[2:]) != kernel or tuple(u.shape[2:]) != (1, 1) for d, u, _ in pairs):
            return None
    elif type(module) is not nn.Linear:
        return None
    weight = module.weight
    return weight.nelement() * weight.element_size()


def fuse(module: Any, pairs: list[tuple[Any, Any, float]]) -> None:
    """Make ``module`` compute with its weight plus each ``(down, up, scaling)`` LoRA delta.

    The pairs are on the weight's device and dtype already (``LoraWeights.on``)."""
    import torch
    import torch.nn.functional as F

    weight = module.weight
    if weight.ndim == 4:  # a convolution (fuse_cost checked the pairs' kernels)
        flat = weight.flatten(1)
        for down, up, scaling in pairs:
            flat = torch.addmm(flat, up.flatten(1), down.flatten(1), alpha=scaling)
        fused = flat.view_as(weight)

        def forward(x: Any) -> Any:
            return module._conv_forward(x, fused, module.bias)

        vars(module)["forward"] = forward
        return
    for down, up, scaling in pairs:
        weight = torch.addmm(weight, up, down, alpha=scaling)  # weight + scaling * up @ down

    def forward(x: Any) -> Any:
        return F.linear(x, weight, module.bias)

    vars(module)["forward"] = forward  # the instance's own: nn.Module.__setattr__'s checks skipped


def unfuse(module: Any) -> None:
    """Give ``module`` back its class's ``forward`` (and drop the fused copy with it)."""
    vars(module).pop("forward", None)
