"""Stable Diffusion 3 / 3.5: the MM-DiT (``SD3Transformer2DModel``) behind the ``UNet`` socket.

The transformer patches the 16-channel latents itself, attends jointly over the prompt's tokens
(CLIP-L||CLIP-G padded to T5's width, then T5) and the image's, takes the pooled CLIP-L+G vector
as ``pooled_projections``, and predicts the rectified-flow velocity; its scheduler
(``FlowMatchEulerDiscreteScheduler``, shift 3.0) reads that as a flow prediction. The timestep is
passed as the scheduler gives it (sigma x 1000), one per row, as ``StableDiffusion3Pipeline`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodes.families.base import Family
from nodes.families.batching import cat

if TYPE_CHECKING:
    from nodes.types import Conditioning, Guider, UNet


def per_row(timestep: Any, rows: int) -> Any:
    """The step's timestep as one value per batch row, as the flow pipelines pass it."""
    import torch

    t = torch.as_tensor(timestep)
    return t.reshape(-1).expand(rows) if t.numel() == 1 else t


def check_joint_conditioning(unet: UNet, conditioning: Conditioning, name: str, model: str) -> None:
    """Refuse a conditioning a joint-attention transformer (SD3, Flux) cannot take: it needs the
    per-token sequence and the pooled vector, each as wide as the model's config says."""
    config = unet.model.config
    if conditioning.embeds is None or conditioning.pooled is None:
        raise ValueError(
            f"{name}: {model} needs prompt embeddings and a pooled vector; encode the prompt "
            "with the model's own text encoders"
        )
    width, pooled = int(conditioning.embeds.shape[-1]), int(conditioning.pooled.shape[-1])
    if width != config.joint_attention_dim or pooled != config.pooled_projection_dim:
        raise ValueError(
            f"{name}: the conditioning is {width} wide with a {pooled}-wide pooled vector, but "
            f"{model} takes {config.joint_attention_dim} and {config.pooled_projection_dim}; "
            "encode the prompt with the same model's encoders"
        )


def check_token_grid(latents: Any, size: int, what: str) -> None:
    """Refuse latents that do not split into ``size`` x ``size`` tokens, naming the picture size
    that would."""
    height, width = int(latents.shape[-2]), int(latents.shape[-1])
    if height % size or width % size:
        raise ValueError(
            f"{what} turns latents into {size}x{size} tokens, but these latents are "
            f"{width}x{height}: choose a picture size whose latents are a multiple of {size}"
        )


def same_tokens(embeds: list[Any]) -> list[Any]:
    """Prompt sequences of equal length, or an error: joint attention mixes prompt and image
    tokens, so repeating a prompt (as U-Net cross-attention allows) would change the picture."""
    lengths = {int(e.shape[1]) for e in embeds}
    if len(lengths) > 1:
        raise ValueError(
            f"the prompts are {sorted(lengths)} tokens long; this model attends jointly over "
            "prompt and image tokens, so encode both with the same max_sequence_length"
        )
    return embeds


class SD3Transformer(Family):
    """``SD3Transformer2DModel`` (SD3 Medium, SD3.5 Large/Medium with qk-norm and MMDiT-X)."""

    name = "sd3"

    def token_size(self, unet: UNet) -> int:
        return int(unet.model.config.patch_size)

    def check_conditioning(self, unet: UNet, conditioning: Conditioning, name: str) -> None:
        check_joint_conditioning(unet, conditioning, name, "this SD3 transformer")

    def model_inputs(
        self, guider: Guider, conditionings: list[Conditioning], latents: Any
    ) -> dict[str, Any]:
        check_token_grid(latents, self.token_size(guider.unet), "this SD3 transformer")
        batch = latents.shape[0]
        return {
            "encoder_hidden_states": cat(same_tokens([c.embeds for c in conditionings]), batch),
            "pooled_projections": cat([c.pooled for c in conditionings], batch),
        }

    def comfy_flow_sampling(self, unet: UNet) -> tuple[str, float] | None:
        return "snr", float(unet.scheduler_config.get("shift", 3.0))  # ComfyUI's SD3: 3.0

    def predict(self, unet: UNet, model_input: Any, timestep: Any, inputs: dict[str, Any]) -> Any:
        rows = per_row(timestep, model_input.shape[0])
        return unet.model(hidden_states=model_input, timestep=rows, **inputs, return_dict=False)[0]
