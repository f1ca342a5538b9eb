"""Flux.1 (dev, schnell): ``FluxTransformer2DModel`` behind the ``UNet`` socket.

The sampling loop keeps latents as pictures ([batch, 16, h, w]) like every other family; this
adapter packs them into 2x2 patches ([batch, h/2 * w/2, 64]) for the model and unpacks its
velocity, exactly as ``FluxPipeline`` packs its latents (the flow schedulers step element-wise, so
where the packing happens changes no value). Image tokens carry their (0, row, column) position
ids and prompt tokens zeros; the timestep is sigma (the scheduler's timestep / 1000); Flux dev is
guidance-distilled: the guidance value goes into the model (``guidance_embeds``) and no CFG pair
is run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodes.families.base import Family
from nodes.families.batching import cat
from nodes.families.sd3 import check_joint_conditioning, check_token_grid, per_row, same_tokens

if TYPE_CHECKING:
    from nodes.types import Conditioning, Guider, UNet

DEFAULT_GUIDANCE = 3.5
"""The distilled guidance without a FluxGuidance node: ``FluxPipeline``'s and ComfyUI's default."""
PATCH = 2


def pack(latents: Any) -> Any:
    """[b, c, h, w] -> [b, h/2 * w/2, 4c]: each 2x2 patch a token, channels then rows then
    columns inside it (FluxPipeline's ``_pack_latents``)."""
    b, c, h, w = latents.shape
    patches = latents.view(b, c, h // PATCH, PATCH, w // PATCH, PATCH)
    return patches.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // PATCH) * (w // PATCH), c * 4)


def unpack(tokens: Any, height: int, width: int) -> Any:
    """The inverse of ``pack`` for latents of ``height`` x ``width``."""
    b, _, packed = tokens.shape
    c = packed // 4
    patches = tokens.view(b, height // PATCH, width // PATCH, c, PATCH, PATCH)
    return patches.permute(0, 3, 1, 4, 2, 5).reshape(b, c, height, width)


def image_ids(height: int, width: int, device: Any, dtype: Any) -> Any:
    """(0, row, column) of each packed image token, row-major: what Flux's RoPE rotates by."""
    import torch

    rows, cols = height // PATCH, width // PATCH
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(rows)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3).to(device=device, dtype=dtype)


class FluxTransformer(Family):
    """``FluxTransformer2DModel``; ``guidance_embedded`` follows the model's ``guidance_embeds``
    (dev: True; schnell: False, so CFG would run a pair as for any model)."""

    name = "flux"

    def __init__(self, guidance_embedded: bool = True) -> None:
        self.guidance_embedded = guidance_embedded

    def latent_channels(self, unet: UNet) -> int:
        return int(unet.model.config.in_channels) // (PATCH * PATCH)

    def token_size(self, unet: UNet) -> int:
        return PATCH

    def sigmas(self, unet: UNet, steps: int) -> tuple[float, ...] | None:
        import numpy as np

        return tuple(float(s) for s in np.linspace(1.0, 1 / steps, steps))

    def comfy_flow_sampling(self, unet: UNet) -> tuple[str, float] | None:
        """ComfyUI's ModelSamplingFlux: mu 1.15 for a model with resolution-dependent shifting
        (dev), else the config's fixed shift (schnell: 1.0)."""
        from nodes.ksampling.flow_sigmas import FLUX_DEFAULT_SHIFT

        config = unet.scheduler_config
        if config.get("use_dynamic_shifting"):
            return "exponential", FLUX_DEFAULT_SHIFT
        return "exponential", float(config.get("shift", 1.0))

    def check_conditioning(self, unet: UNet, conditioning: Conditioning, name: str) -> None:
        check_joint_conditioning(unet, conditioning, name, "this Flux transformer")

    def model_inputs(
        self, guider: Guider, conditionings: list[Conditioning], latents: Any
    ) -> dict[str, Any]:
        import torch

        check_token_grid(latents, PATCH, "Flux")
        batch = latents.shape[0]
        embeds = cat(same_tokens([c.embeds for c in conditionings]), batch)
        device, dtype = embeds.device, embeds.dtype
        inputs: dict[str, Any] = {
            "encoder_hidden_states": embeds,
            "pooled_projections": cat([c.pooled for c in conditionings], batch),
            "txt_ids": torch.zeros(embeds.shape[1], 3, device=device, dtype=dtype),
            "img_ids": image_ids(latents.shape[-2], latents.shape[-1], device, dtype),
            "guidance": None,
        }
        if guider.unet.model.config.guidance_embeds:
            value = conditionings[-1].guidance  # the positive prompt's, last in the batch
            value = DEFAULT_GUIDANCE if value is None else value
            rows = embeds.shape[0]
            inputs["guidance"] = torch.full([1], value, device=latents.device).expand(rows)
        return inputs

    def predict(self, unet: UNet, model_input: Any, timestep: Any, inputs: dict[str, Any]) -> Any:
        height, width = int(model_input.shape[-2]), int(model_input.shape[-1])
        rows = per_row(timestep, model_input.shape[0]).to(model_input.dtype)
        output = unet.model(
            hidden_states=pack(model_input),
            timestep=rows / 1000,
            **inputs,
            return_dict=False,
        )[0]
        return unpack(output, height, width)
