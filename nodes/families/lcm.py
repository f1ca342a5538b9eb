"""Latent consistency models: SD U-Nets distilled to take the guidance scale as an input.

An LCM-distilled ``UNet2DConditionModel`` has a ``time_cond_proj_dim``: the guidance scale ``w``
reaches it as a sinusoidal embedding added to the timestep embedding (``timestep_cond``), so one
pass gives the guided prediction and there is no CFG pair (``guidance_embedded``). diffusers'
``LatentConsistencyModelPipeline`` and ``StableDiffusionPipeline`` both embed ``w - 1``, so a
guidance scale of 1 means "no extra guidance", as it does for CFG.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodes.families.unet import StableDiffusionUNet

if TYPE_CHECKING:
    from nodes.types import Conditioning, Guider


def guidance_embedding(scale: float, width: int, rows: int, dtype: Any, device: Any) -> Any:
    """``rows`` copies of the embedding of guidance ``scale`` as LCM U-Nets were trained with it.

    The embedding of ``w = scale - 1`` (times 1000, as a timestep) is sines then cosines over
    ``width // 2`` geometric frequencies from 1 down to 1/10000 (Kingma et al.'s VDM embedding),
    zero-padded to an odd ``width``. Computed in float32 and cast to ``dtype`` after, as the
    pipelines do, so the floats are the ones they feed the model.
    """
    import torch

    half = width // 2
    w = torch.full((rows,), scale - 1.0) * 1000.0
    step = torch.log(torch.tensor(10000.0)) / (half - 1)
    frequencies = torch.exp(torch.arange(half, dtype=torch.float32) * -step)
    angles = w[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if width % 2:
        embedding = torch.nn.functional.pad(embedding, (0, 1))
    return embedding.to(device=device, dtype=dtype)


class LatentConsistencyUNet(StableDiffusionUNet):
    """An SD U-Net with a guidance embedding (``time_cond_proj_dim``): LCM-distilled models."""

    name = "lcm-unet"
    guidance_embedded = True

    def model_inputs(
        self, guider: Guider, conditionings: list[Conditioning], latents: Any
    ) -> dict[str, Any]:
        inputs = super().model_inputs(guider, conditionings, latents)
        width = int(guider.unet.model.config.time_cond_proj_dim)
        inputs["timestep_cond"] = guidance_embedding(
            guider.scale, width, int(latents.shape[0]), latents.dtype, latents.device
        )
        return inputs


def conditioned_unet_family(model: Any) -> StableDiffusionUNet:
    """The adapter for a ``UNet2DConditionModel``: LCM's when it takes a guidance embedding."""
    if getattr(model.config, "time_cond_proj_dim", None) is not None:
        return LatentConsistencyUNet()
    return StableDiffusionUNet()


__all__ = ["LatentConsistencyUNet", "conditioned_unet_family", "guidance_embedding"]
