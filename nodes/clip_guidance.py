"""CLIP guidance (GLIDE, Nichol et al. 2021): steer sampling with the gradient of the CLIP
similarity between the picture being made and a prompt.

At each step the guider's noise prediction gives the predicted clean latents
``x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar)``; the VAE decodes them, CLIP embeds the
picture, and the term is the cosine similarity of that embedding with the prompt's. GLIDE used a
CLIP trained on noised pictures to read ``x_t`` itself; decoding the predicted clean picture lets
an ordinary CLIP (one trained on clean pictures, such as ``demo-clip``) judge it instead. The
noise prediction is held fixed in ``x0_hat`` (``GuidancePoint.denoised``), so a step costs one
VAE decode and one CLIP image pass with their backward passes, never a backward through the
denoiser. How the gradient enters the prediction is ``nodes.gradient_guidance``'s business; the
CLIP itself (``LoadCLIP``, its differentiable preprocessing) is ``nodes.clip_model``'s.

A noise-aware CLIP (``nodes.noised_clip``, ``demo-clip-noised``) is GLIDE's own way: its image
tower reads the noisy latents and the timestep, so the term is the cosine similarity of
``f(x_t, t)`` with the prompt's embedding and its gradient is exact (no decode, nothing held
fixed), read at the same VP latents and timestep as classifier guidance's. The CLIP says which
kind it is (``CLIP.noise_aware``); such a CLIP needs no VAE.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from nodeflow import Context, Widget, node
from nodes.clip_model import CLIP, image_features, text_features
from nodes.gradient_guidance import GuidancePoint
from nodes.types import VAE, Guider

__all__ = ["CLIPTerm", "NoisedCLIPTerm", "clip_guidance"]


@dataclass(frozen=True, eq=False)
class CLIPTerm:
    """The cosine similarity between CLIP's embedding of the decoded predicted clean picture and
    a fixed text embedding: the gradient term ``CLIPGuidance`` adds."""

    clip: CLIP
    vae: Any
    text: Any
    """Text embeddings [1 or batch, dim]: one prompt for every picture, or one per picture."""
    scale: float

    @property
    def models(self) -> tuple[Any, ...]:
        return (self.clip.model, self.vae)

    def decode(self, latents: Any) -> Any:
        """Pictures [batch, 3, h, w] in 0..1 from scaled latents, with gradients (the VAE
        decode of ``nodes.vae``, written for autograd)."""
        config = self.vae.config
        latents = latents / config.scaling_factor
        shift = getattr(config, "shift_factor", None)
        if shift is not None:
            latents = latents + shift
        decoded = self.vae.decode(latents.to(self.vae.dtype), return_dict=False)[0]
        return (decoded.to(latents.dtype) / 2 + 0.5).clamp(0, 1)

    def log_prob(self, point: GuidancePoint) -> Any:
        import torch

        pixels = self.decode(point.denoised())
        image = image_features(self.clip, pixels)
        image = image.to(torch.promote_types(image.dtype, torch.float32))
        text = self.text.to(device=image.device, dtype=image.dtype)
        if text.shape[0] != image.shape[0]:
            text = text.expand_as(image)  # one prompt for every picture
        return torch.nn.functional.cosine_similarity(image, text, dim=-1)


@dataclass(frozen=True, eq=False)
class NoisedCLIPTerm:
    """The cosine similarity between a noise-aware CLIP's embedding of the noisy latents at the
    step's timestep and a fixed text embedding (GLIDE's ``f(x_t, t) . g(c)``, normalised)."""

    clip: CLIP
    text: Any
    """Text embeddings [1 or batch, dim]: one prompt for every picture, or one per picture."""
    scale: float

    @property
    def models(self) -> tuple[Any, ...]:
        return (self.clip.model,)

    def log_prob(self, point: GuidancePoint) -> Any:
        import torch

        latents = point.latents
        timesteps = torch.as_tensor(point.timestep, device=latents.device).float().reshape(-1)
        model = self.clip.model
        image = model.latent_features(latents.to(model.dtype), timesteps.expand(len(latents)))
        image = image.to(torch.promote_types(image.dtype, torch.float32))
        text = self.text.to(device=image.device, dtype=image.dtype)
        if text.shape[0] != image.shape[0]:
            text = text.expand_as(image)  # one prompt for every picture
        return torch.nn.functional.cosine_similarity(image, text, dim=-1)


def _check_latents(guider: Guider, channels: int, what: str) -> None:
    wanted = guider.unet.latent_channels
    if channels != wanted:
        raise ValueError(
            f"{what} {channels}-channel latents, but this guider's model "
            f"({guider.unet.family.name}) samples {wanted}-channel latents"
        )


@node("CLIPGuidance", category="sampling")
def clip_guidance(
    ctx: Context,
    guider: Guider,
    clip: CLIP,
    vae: VAE | None = None,
    prompt: Annotated[str, Widget(multiline=True)] = "",
    scale: Annotated[float, Field(ge=0, le=10000)] = 100.0,
) -> Guider:
    """Steer a guider toward ``prompt`` with the gradient of a CLIP similarity, times ``scale``
    (0: no change). A noise-aware CLIP (``demo-clip-noised``) reads the noisy latents itself;
    an ordinary one (``demo-clip``) judges the decoded predicted clean picture, and then
    ``vae`` must be the one the guider's model samples latents for."""
    if not prompt.strip():
        raise ValueError("input 'prompt': CLIP guidance needs a prompt to steer toward")
    term: Any
    if clip.noise_aware:
        tower = clip.model.image_tower.config
        _check_latents(guider, int(tower.in_channels), "input 'clip': its image tower reads")
        ctx.models.use(clip.model)
        term = NoisedCLIPTerm(clip, text_features(clip, [prompt]), scale)
    else:
        if vae is None:
            raise ValueError(
                "input 'vae': this CLIP reads pictures, so CLIP guidance decodes the predicted "
                "clean latents with the guider model's VAE; connect it (or use a noise-aware "
                "CLIP such as demo-clip-noised)"
            )
        if vae.is_vq:
            raise ValueError(
                "input 'vae': CLIP guidance decodes with a KL autoencoder, not a VQ one"
            )
        _check_latents(guider, int(vae.model.config.latent_channels), "input 'vae': it decodes")
        ctx.models.use(clip.model)
        term = CLIPTerm(clip, vae.model, text_features(clip, [prompt]), scale)
    return dataclasses.replace(guider, terms=(*guider.terms, term))
