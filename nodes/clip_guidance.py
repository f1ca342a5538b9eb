"""CLIP guidance (GLIDE, Nichol et al. 2021): steer sampling with the gradient of the CLIP
similarity between the picture being made and a prompt.

At each step the guider's noise prediction gives the predicted clean latents
``x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar)``; the VAE decodes them, CLIP embeds the
picture, and the term is the cosine similarity of that embedding with the prompt's. GLIDE used a
CLIP trained on noised pictures to read ``x_t`` itself; decoding the predicted clean picture lets
an ordinary CLIP (one trained on clean pictures, such as ``demo-clip``) judge it instead. The
noise prediction is held fixed in ``x0_hat`` (``GuidancePoint.denoised``), so a step costs one
VAE decode and one CLIP image pass with their backward passes, never a backward through the
denoiser. How the gradient enters the prediction is ``nodes.gradient_guidance``'s business.

``LoadCLIP`` reads a whole CLIP (both towers) from a transformers folder: ``config.json`` and
weights of a ``CLIPModel``, its tokenizer files and ``preprocessor_config.json``, which is what
``save_pretrained`` writes for each (OpenAI's ``clip-vit-*`` folders are laid out so).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from pydantic import Field

from nodeflow import Context, Environment, Widget, node, socket_type
from nodeflow.runtime.models import file_identity
from nodes import hf
from nodes.gradient_guidance import GuidancePoint
from nodes.loaders import TEXT_DIRS, quiet_hub_libraries, resolve_model
from nodes.types import VAE, Guider

__all__ = ["CLIPTerm", "ContrastiveCLIP", "clip_guidance", "image_features", "load_clip"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI CLIP's normalisation, used when a folder's preprocessor config names none."""


@socket_type(color="#90a4ae")
@dataclass(frozen=True, eq=False)
class ContrastiveCLIP:
    """A whole CLIP: image and text towers with their projections into one embedding space, the
    tokenizer, and the picture size and normalisation it was trained with."""

    model: Any
    tokenizer: Any
    image_size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    source: str = ""

    def __nodeflow_nbytes__(self) -> int:
        return 0  # the weights belong to the model manager


def image_features(clip: ContrastiveCLIP, pixels: Any) -> Any:
    """CLIP image embeddings [batch, dim] of pictures [batch, 3, h, w] in 0..1, differentiably:
    resized to the model's input size (bilinear; for square pictures this equals the processor's
    short-side resize and centre crop) and normalised as the processor would."""
    import torch

    model = clip.model
    size = clip.image_size
    if pixels.shape[-2:] != (size, size):
        pixels = torch.nn.functional.interpolate(
            pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    mean = torch.tensor(clip.mean, device=pixels.device, dtype=pixels.dtype)[None, :, None, None]
    std = torch.tensor(clip.std, device=pixels.device, dtype=pixels.dtype)[None, :, None, None]
    normalised = ((pixels - mean) / std).to(model.dtype)
    pooled = model.vision_model(pixel_values=normalised).pooler_output
    features = model.visual_projection(pooled)
    return features.to(torch.promote_types(features.dtype, torch.float32))


def text_features(clip: ContrastiveCLIP, prompt: str) -> Any:
    """The prompt's CLIP text embedding [1, dim] (no gradient: it is fixed while sampling)."""
    import torch

    model = clip.model
    tokens = clip.tokenizer(
        [prompt],
        padding="max_length",
        truncation=True,
        max_length=clip.tokenizer.model_max_length,
        return_tensors="pt",
    )
    with torch.no_grad():
        pooled = model.text_model(
            input_ids=tokens.input_ids.to(model.device),
            attention_mask=tokens.attention_mask.to(model.device),
        ).pooler_output
        return model.text_projection(pooled).float()


@dataclass(frozen=True, eq=False)
class CLIPTerm:
    """The cosine similarity between CLIP's embedding of the decoded predicted clean picture and
    a fixed text embedding: the gradient term ``CLIPGuidance`` adds."""

    clip: ContrastiveCLIP
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
        text = self.text.to(device=image.device, dtype=image.dtype)
        if text.shape[0] != image.shape[0]:
            text = text.expand_as(image)  # one prompt for every picture
        return torch.nn.functional.cosine_similarity(image, text, dim=-1)


def _fingerprint(values: Mapping[str, Any], env: Environment) -> Any:
    name = values.get("path") or ""
    return file_identity(resolve_model(name, env, *TEXT_DIRS, what="CLIP")) if name else None


class LoadedCLIP(NamedTuple):
    clip: ContrastiveCLIP


@node("LoadCLIP", category="loaders", fingerprint=_fingerprint)
def load_clip(
    ctx: Context,
    path: Annotated[str, Widget(files="text_encoders")] = "",
) -> LoadedCLIP:
    """Load a whole CLIP (image and text towers) from a transformers folder, for CLIPGuidance."""
    location = resolve_model(path, ctx.env, *TEXT_DIRS, what="CLIP")
    key = ("contrastive_clip", file_identity(location))

    def load() -> ContrastiveCLIP:
        loaded = read_clip(location)
        ctx.models.register(loaded.model, label=f"CLIP {location.name}")
        return loaded

    return LoadedCLIP(ctx.models.get(key, load))


def read_clip(location: Path) -> ContrastiveCLIP:
    """A ``ContrastiveCLIP`` from a folder, fp32 and frozen; a folder that is not a whole CLIP
    (a text encoder alone, an image encoder alone) is refused, naming the folder."""
    import json

    transformers = hf.transformers()
    config_file = location / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{location}: no config.json of a CLIP model")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type != "clip":
        raise ValueError(
            f"{location}: a {model_type!r} model, not a whole CLIP (model_type 'clip' with text "
            "and vision towers) as CLIPGuidance needs"
        )
    quiet_hub_libraries()
    model = transformers.CLIPModel.from_pretrained(location, local_files_only=True)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(location, local_files_only=True)
    mean, std = CLIP_MEAN, CLIP_STD
    processor_file = location / "preprocessor_config.json"
    if processor_file.is_file():
        processor = json.loads(processor_file.read_text())
        mean = tuple(processor.get("image_mean", mean))
        std = tuple(processor.get("image_std", std))
    return ContrastiveCLIP(
        model.eval().requires_grad_(False),
        tokenizer,
        image_size=int(model.config.vision_config.image_size),
        mean=mean,
        std=std,
        source=str(location),
    )


@node("CLIPGuidance", category="sampling")
def clip_guidance(
    ctx: Context,
    guider: Guider,
    clip: ContrastiveCLIP,
    vae: VAE,
    prompt: Annotated[str, Widget(multiline=True)] = "",
    scale: Annotated[float, Field(ge=0, le=10000)] = 100.0,
) -> Guider:
    """Steer a guider toward ``prompt`` with the gradient of the CLIP similarity between the
    decoded predicted clean picture and the prompt, times ``scale`` (0: no change); ``vae``
    must be the one the guider's model samples latents for."""
    if vae.is_vq:
        raise ValueError("input 'vae': CLIP guidance decodes with a KL autoencoder, not a VQ one")
    wanted = int(vae.model.config.latent_channels)
    channels = guider.unet.latent_channels
    if wanted != channels:
        raise ValueError(
            f"input 'vae': it decodes {wanted}-channel latents, but this guider's model "
            f"({guider.unet.family.name}) samples {channels}-channel latents"
        )
    if not prompt.strip():
        raise ValueError("input 'prompt': CLIP guidance needs a prompt to steer toward")
    ctx.models.use(clip.model)
    term = CLIPTerm(clip, vae.model, text_features(clip, prompt), scale)
    return dataclasses.replace(guider, terms=(*guider.terms, term))
