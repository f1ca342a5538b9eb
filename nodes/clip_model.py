"""A whole CLIP (image tower and text tower, both projected into one space) as a socket value,
with the two calls everything else needs: ``image_features`` and ``text_features``.

CLIP guidance differentiates an image-text similarity through the image tower; text diffs and
caption ranking compare projected text and image embeddings; the image-variation path needs the
image tower alone (``LoadCLIPVision`` loads that from the same folder). One loaded ``CLIP``
serves all of them, so every consumer sees the same weights and the same preprocessing.

The API, for Python callers (guiders, benchmarks)::

    clip = load_clip_folder(path)                       # or the LoadCLIP node's output
    image = image_features(clip, pixels)                # pixels [B,3,H,W] in 0..1, differentiable
    text = text_features(clip, ["a red circle on a blue background"])
    similarity = cosine(image, text)                    # [B_image, B_text]

``image_features`` does the model's own preprocessing in torch (resize the short side to the
model's size, bicubic with antialiasing, centre crop, CLIP's mean/std), so it accepts gradients
and, on a picture already at the model's size with 8-bit values, equals what the model's
``CLIPImageProcessor`` and ``CLIPModel.get_image_features`` give (tested). Features are the
projected, unnormalised embeddings, as ``get_image_features``/``get_text_features`` return them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeflow import socket_type
from nodes import hf
from nodes.clip_vocab import MODEL_MAX_LENGTH, clip_tokenizer
from nodes.types import _ModelHandle

__all__ = ["CLIP", "cosine", "image_features", "load_clip_folder", "text_features"]


@socket_type(color="#26a69a")
@dataclass(frozen=True, eq=False)
class CLIP(_ModelHandle):
    """A contrastive CLIP model (transformers ``CLIPModel``): image and text towers projected
    into one embedding space, with its tokenizer and image preprocessing."""

    model: Any
    tokenizer: Any
    processor: Any
    source: str = ""

    @property
    def noise_aware(self) -> bool:
        """Whether its image tower reads a denoiser's noisy latents and timestep (GLIDE's noised
        CLIP, ``nodes.noised_clip``) rather than pictures: the model says so itself."""
        return bool(getattr(self.model, "noise_aware", False))

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @property
    def width(self) -> int:
        """The width of the shared embedding space."""
        return int(self.model.config.projection_dim)


def load_clip_folder(location: str | Path, dtype: Any = None) -> CLIP:
    """A transformers ``CLIPModel`` folder (``config.json`` of ``model_type: clip``, weights,
    ``preprocessor_config.json``; tokenizer files optional, the shipped CLIP tokenizer otherwise),
    loaded offline, in eval mode, with gradients off for its weights. A noised-CLIP folder (a
    text tower beside ``image_tower.safetensors``, ``nodes.noised_clip``) loads too, as a CLIP
    whose ``noise_aware`` is true and which has no picture preprocessing."""
    from nodes.noised_clip import is_noised_clip_folder, load_noised_clip

    transformers = hf.transformers()
    location = Path(location)
    if is_noised_clip_folder(location):  # a text tower beside a noisy-latent image tower
        model = load_noised_clip(location, dtype)
        return CLIP(model, _tokenizer(location), None, source=str(location))
    config_file = location / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{location} holds no CLIP model (no config.json)")
    if not (location / "preprocessor_config.json").is_file():
        raise FileNotFoundError(f"{location}: no preprocessor_config.json for the image tower")
    config = transformers.AutoConfig.from_pretrained(location, local_files_only=True)
    if config.model_type != "clip":
        raise ValueError(
            f"{location} is a {config.model_type!r} model, not a whole CLIP (model_type 'clip');"
            " an image encoder alone loads with LoadCLIPVision"
        )
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = transformers.CLIPModel.from_pretrained(location, **kwargs)
    processor = transformers.CLIPImageProcessor.from_pretrained(location, local_files_only=True)
    model = model.eval().requires_grad_(False)
    return CLIP(model, _tokenizer(location), processor, source=str(location))


def _tokenizer(location: Path) -> Any:
    """The folder's own CLIP tokenizer files, or the shipped CLIP tokenizer."""
    if (location / "vocab.json").is_file() and (location / "merges.txt").is_file():
        return hf.transformers().CLIPTokenizer.from_pretrained(location, local_files_only=True)
    return clip_tokenizer()


def preprocess(clip: CLIP, pixels: Any) -> Any:
    """Pictures [B,3,H,W] in 0..1 -> the model's normalised input, differentiably: the
    processor's steps (resize the short side, centre crop, normalise) done in torch."""
    import torch

    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"pixels must be [batch, 3, height, width], got {tuple(pixels.shape)}")
    model, processor = clip.model, clip.processor
    work = torch.promote_types(pixels.dtype, torch.float32)  # fp32 at least; fp64 stays fp64
    x = pixels.to(device=model.device, dtype=work)
    size = clip.image_size
    height, width = x.shape[-2:]
    if min(height, width) != size:
        scale = size / min(height, width)
        target = (max(size, round(height * scale)), max(size, round(width * scale)))
        x = torch.nn.functional.interpolate(
            x, size=target, mode="bicubic", align_corners=False, antialias=True
        )
    height, width = x.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    x = x[..., top : top + size, left : left + size]
    mean = torch.tensor(processor.image_mean, device=x.device, dtype=work).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std, device=x.device, dtype=work).view(1, 3, 1, 1)
    return ((x - mean) / std).to(model.dtype)


def image_features(clip: CLIP, pixels: Any, *, normalize: bool = False) -> Any:
    """Projected image embeddings [B, width] of pictures [B,3,H,W] in 0..1; gradients flow to
    ``pixels`` (call inside ``torch.no_grad()`` when none are wanted)."""
    import torch

    if clip.noise_aware:
        raise ValueError(
            f"{Path(clip.source).name or 'this CLIP'} is noise-aware: its image tower reads a "
            "denoiser's noisy latents (for CLIPGuidance), not pictures"
        )
    features = clip.model.get_image_features(pixel_values=preprocess(clip, pixels)).pooler_output
    return torch.nn.functional.normalize(features, dim=-1) if normalize else features


def tokens(clip: CLIP, prompts: Sequence[str]) -> Any:
    """Token ids [B, 77], padded and truncated as CLIP's text tower was trained."""
    if isinstance(prompts, str):
        prompts = [prompts]
    return clip.tokenizer(
        list(prompts),
        padding="max_length",
        max_length=MODEL_MAX_LENGTH,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(clip.model.device)


def text_features(clip: CLIP, prompts: str | Sequence[str], *, normalize: bool = False) -> Any:
    """Projected text embeddings [B, width] of prompts (no gradients: prompts are not tensors)."""
    import torch

    with torch.no_grad():
        features = clip.model.get_text_features(input_ids=tokens(clip, prompts)).pooler_output
    return torch.nn.functional.normalize(features, dim=-1) if normalize else features


def cosine(a: Any, b: Any) -> Any:
    """Cosine similarity of every row of ``a`` with every row of ``b``: [len(a), len(b)]."""
    import torch

    a = torch.nn.functional.normalize(a.float(), dim=-1)
    b = torch.nn.functional.normalize(b.float().to(a.device), dim=-1)
    return a @ b.T
