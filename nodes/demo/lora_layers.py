"""The LoRA pairs the demo trainers attach, and which U-Net layers take them.

Shared by ``train_lora`` (the style LoRA) and ``train_lcm`` (the LCM-LoRA), so both trainers
select layers by the same names and write the same kohya layout that ``nodes.lora`` reads: a
linear pair is ``down``/``up`` linears, a convolution pair a ``down`` convolution with the
target's kernel and an ``up`` 1x1 convolution, each scaled by ``alpha / rank`` as PEFT computes
it, ``up`` starting at zero so training starts from the base model.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "PROJECTIONS",
    "RESNET_TARGETS",
    "TARGETS",
    "ConvLoraPair",
    "LoraPair",
    "lora_pair",
    "target_names",
]

PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
"""The attention projections alone: the first style LoRA's 56 modules."""
TARGETS = (*PROJECTIONS, "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
"""The attention and feed-forward layers and the transformers' ``proj_in``/``proj_out`` (1x1
convolutions in this U-Net): the LCM-LoRA scripts' attention set."""
RESNET_TARGETS = (
    "time_emb_proj", "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv"
)  # fmt: skip
"""What ``all`` adds: the ResNet blocks' convolutions and time projections and the resampling
convolutions, the rest of diffusers' ``train_lcm_distill_lora_sd_wds.py`` set."""
TARGET_SETS = {"projections": PROJECTIONS, "attention": TARGETS, "all": TARGETS + RESNET_TARGETS}


class LoraPair(nn.Module):
    """``down`` then ``up``, scaled by ``alpha / rank`` and added to the target's output by a
    forward hook, as PEFT and ``nodes.lora`` compute it (so training and inference agree)."""

    def __init__(self, target: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.down = nn.Linear(target.in_features, rank, bias=False)
        self.up = nn.Linear(rank, target.out_features, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)  # PEFT's init for lora_A
        nn.init.zeros_(self.up.weight)
        self.alpha = alpha
        self.rank = rank

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x)) * (self.alpha / self.rank)


class ConvLoraPair(nn.Module):
    """A LoRA pair on a 2D convolution in kohya's layout: ``down`` a convolution with the
    target's kernel, stride and padding into ``rank`` channels, ``up`` a 1x1 convolution out,
    scaled by ``alpha / rank``, the branch ``nodes.lora`` computes for such a file."""

    def __init__(self, target: nn.Conv2d, rank: int, alpha: float) -> None:
        super().__init__()
        if target.groups != 1 or target.dilation != (1, 1):
            raise ValueError(f"a {target} cannot take a LoRA pair (groups or dilation)")
        self.down = nn.Conv2d(
            target.in_channels, rank, target.kernel_size, target.stride, target.padding, bias=False
        )  # fmt: skip
        self.up = nn.Conv2d(rank, target.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)
        nn.init.zeros_(self.up.weight)
        self.alpha = alpha
        self.rank = rank

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x)) * (self.alpha / self.rank)


def lora_pair(module: nn.Module, rank: int, alpha: float) -> LoraPair | ConvLoraPair | None:
    """A fresh pair for ``module`` on its device, or None for a layer kind that takes none."""
    if isinstance(module, nn.Linear):
        return LoraPair(module, rank, alpha).to(module.weight.device)
    if isinstance(module, nn.Conv2d):
        return ConvLoraPair(module, rank, alpha).to(module.weight.device)
    return None


def target_names(which: str) -> tuple[str, ...]:
    """The module-name endings a trainer's ``--targets`` selects: ``projections`` (attention
    q/k/v/out only), ``attention`` (those plus feed-forward and ``proj_in``/``proj_out``) or
    ``all`` (also ``RESNET_TARGETS``)."""
    if which not in TARGET_SETS:
        raise ValueError(f"--targets must be one of {', '.join(TARGET_SETS)}, not {which!r}")
    return TARGET_SETS[which]
