"""Linear LoRAs fused into a per-run copy of the layer's weight instead of run as forward hooks.

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

The copies cost memory while the block runs (the size of the fused layers' weights), so a block
fuses layers only up to ``FUSE_BYTES``; the rest, convolutions, and layers whose ``forward``
someone else already replaced keep their hooks.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FUSE_BYTES", "fuse", "fuse_cost", "unfuse"]

FUSE_BYTES = 512 * 2**20
"""The most bytes of fused weight copies one patched block holds (512 MiB: the attention and
feed-forward layers of an SD 1.5 U-Net in fp16; SDXL's larger LoRAs fuse in part)."""


def fuse_cost(module: Any) -> int | None:
    """Bytes a fused copy of ``module``'s weight takes, or None when it cannot be fused (not a
    plain ``nn.Linear``, or its ``forward`` already replaced on the instance)."""
    from torch import nn

    if type(module) is not nn.Linear or "forward" in vars(module):
        return None
    weight = module.weight
    return weight.nelement() * weight.element_size()


def fuse(module: Any, pairs: list[tuple[Any, Any, float]]) -> None:
    """Make ``module`` compute with its weight plus each ``(down, up, scaling)`` LoRA delta.

    The pairs are on the weight's device and dtype already (``LoraWeights.on``)."""
    import torch
    import torch.nn.functional as F

    weight = module.weight
    for down, up, scaling in pairs:
        weight = torch.addmm(weight, up, down, alpha=scaling)  # weight + scaling * up @ down

    def forward(x: Any) -> Any:
        return F.linear(x, weight, module.bias)

    vars(module)["forward"] = forward  # the instance's own: nn.Module.__setattr__'s checks skipped


def unfuse(module: Any) -> None:
    """Give ``module`` back its class's ``forward`` (and drop the fused copy with it)."""
    vars(module).pop("forward", None)
