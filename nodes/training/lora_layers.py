"""Trainable LoRA pairs on a frozen model, and their kohya-layout file.

Training computes the delta as ``nodes.lora`` applies a loaded one (PEFT's formula:
``up(down(x)) * alpha / rank`` added to the module's output), so what was trained is what a
workflow gets back from the saved file. The pairs are attached by forward hooks for the duration
of a block and the model's own parameters are never changed, like every patch in the pack.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""The attention projections, as the shipped style LoRA and most SD LoRAs target."""


class LoraPair(nn.Module):
    """``down`` [rank, in] then ``up`` [out, rank], in float32 whatever the model's dtype.

    ``down`` starts as PEFT's ``lora_A`` (Kaiming uniform, a = sqrt 5) drawn from the run's
    generator and ``up`` at zero, so step 0 is exactly the base model.
    """

    def __init__(self, target: nn.Linear, rank: int, alpha: float, generator: Any) -> None:
        super().__init__()
        # drawn on the CPU (the generator's device), then moved: the same values on any device
        down = torch.empty(rank, target.in_features)
        nn.init.kaiming_uniform_(down, a=math.sqrt(5), generator=generator)
        device = target.weight.device
        self.down = nn.Parameter(down.to(device))
        self.up = nn.Parameter(torch.zeros(target.out_features, rank, device=device))
        self.scaling = alpha / rank
        self.alpha = alpha

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        hidden = nn.functional.linear(x.to(self.down.dtype), self.down)
        return nn.functional.linear(hidden, self.up) * self.scaling


def parse_targets(text: str, widget: str = "target_modules") -> tuple[str, ...]:
    """``"to_q, to_k"`` -> ``("to_q", "to_k")``: module name endings, comma-separated."""
    targets = tuple(part.strip() for part in text.split(",") if part.strip())
    if not targets:
        raise ValueError(f"{widget}: name at least one module (e.g. to_q, to_k, to_v)")
    return targets


def make_pairs(
    model: nn.Module, targets: Sequence[str], rank: int, alpha: float, seed: int,
    what: str = "U-Net", widget: str = "target_modules",
) -> dict[str, LoraPair]:  # fmt: skip
    """A pair for every linear layer of ``model`` whose name ends with one of ``targets``, in
    the model's module order (so the same seed gives the same initial weights)."""
    generator = torch.Generator("cpu").manual_seed(seed)
    ends = tuple("." + t for t in targets)
    pairs: dict[str, LoraPair] = {}
    for name, module in model.named_modules():
        if name.endswith(ends) and isinstance(module, nn.Linear):
            pairs[name] = LoraPair(module, rank, alpha, generator)
    if not pairs:
        raise ValueError(f"{widget}: no linear layer of the {what} ends with {targets}")
    return pairs


@contextmanager
def attached(model: nn.Module, pairs: dict[str, LoraPair]) -> Iterator[None]:
    """Add every pair's delta to its module's output for the block; hooks removed after."""
    handles = []

    def hook_for(pair: LoraPair) -> Any:
        def hook(_module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            return output + pair.delta(args[0]).to(output.dtype)

        return hook

    try:
        for name, pair in pairs.items():
            handles.append(model.get_submodule(name).register_forward_hook(hook_for(pair)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def frozen(*models: Any) -> Iterator[None]:
    """No gradients for the models' own parameters during the block (so backward never fills
    ``.grad`` on weights the model manager shares); their flags are restored after."""
    flags = [(p, p.requires_grad) for m in models if m is not None for p in m.parameters()]
    try:
        for param, _ in flags:
            param.requires_grad_(False)
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def unet_key(name: str) -> str:
    """kohya's name for a U-Net module: ``lora_unet_<module with dots as _>``."""
    return "lora_unet_" + name.replace(".", "_")


def kohya_state(
    pairs: dict[str, LoraPair], key: Callable[[str], str] = unet_key
) -> dict[str, torch.Tensor]:
    """The pairs in kohya layout (``key`` names each module), float32: the file ``LoadLoRA``
    reads, holding exactly the trained values."""
    state: dict[str, torch.Tensor] = {}
    for name, pair in sorted(pairs.items()):
        key_name = key(name)
        state[f"{key_name}.lora_down.weight"] = pair.down.detach().to("cpu", torch.float32)
        state[f"{key_name}.lora_up.weight"] = pair.up.detach().to("cpu", torch.float32)
        state[f"{key_name}.alpha"] = torch.tensor(float(pair.alpha))
    return {k: v.contiguous() for k, v in state.items()}
