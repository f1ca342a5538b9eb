"""Weights stored in fp8 (``float8_e4m3fn``), computed in the run's dtype.

Flux and T5-XXL are commonly run this way: an fp8 weight takes one byte per parameter, half of
fp16, and each linear layer casts its weight to the run's dtype (fp16/bf16 on a GPU, fp32 on the
CPU) when it runs, as ComfyUI's ``weight_dtype: fp8_e4m3fn`` does. The cast is a parametrization
(``torch.nn.utils.parametrize``): the module stores the fp8 tensor and ``module.weight`` is its
cast, so forward hooks (LoRA), device moves and the model manager see an ordinary module. Only
linear layers are stored so (they hold nearly all of a transformer's weights); biases, norms,
embeddings and convolutions keep the run's dtype.

The rounding to fp8 is what changes the pictures, not the computation: a model whose linear
weights were rounded to fp8 and back computes the same numbers.
"""

from __future__ import annotations

from typing import Any

FP8 = "fp8_e4m3fn"


def _cast_module(dtype: Any) -> Any:
    import torch

    class CastWeight(torch.nn.Module):
        """The stored (fp8) weight, cast to the dtype the layer computes in."""

        def forward(self, stored: Any) -> Any:
            return stored.to(dtype)

    return CastWeight()


def fp8_linear_weights(compute: Any) -> Any:
    """A per-tensor dtype choice for ``CheckpointFile.read``: 2-D ``.weight`` tensors (linear
    layers) read straight into fp8, everything else into ``compute``. Reading so converts each
    weight from the mapped file and releases its pages at once, so the full-precision weights
    never sit in memory next to the fp8 ones."""
    import torch

    def choose(key: str, shape: tuple[int, ...]) -> Any:
        return torch.float8_e4m3fn if key.endswith(".weight") and len(shape) == 2 else compute

    return choose


def store_fp8(model: Any, compute: Any = None) -> int:
    """Store every linear layer's weight of ``model`` as fp8, computed in ``compute`` (default:
    the weight's own dtype; give it for weights loaded as fp8 already); returns how many layers
    were converted. Idempotent: converted layers are skipped."""
    import torch
    from torch.nn.utils import parametrize

    converted = 0
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear) or parametrize.is_parametrized(module):
            continue
        weight = module.weight
        if not weight.is_floating_point():
            continue
        dtype = compute or weight.dtype
        if weight.dtype != torch.float8_e4m3fn:
            module.weight = torch.nn.Parameter(
                weight.detach().to(torch.float8_e4m3fn), requires_grad=False
            )
        parametrize.register_parametrization(module, "weight", _cast_module(dtype), unsafe=True)
        converted += 1
    return converted


def stored_fp8_bytes(model: Any) -> int:
    """Bytes of the fp8-stored weights of ``model`` (what the conversion keeps in memory)."""
    import torch

    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if name.endswith("parametrizations.weight.original") and p.dtype == torch.float8_e4m3fn
    )
