"""A noise-aware CLIP (GLIDE's "noised CLIP"): an image tower that reads a denoiser's *noisy
latents* ``x_t`` and the timestep, contrastive against an ordinary CLIP text tower.

CLIP guidance through an ordinary CLIP has to decode the predicted clean picture first, and a
small clean-picture CLIP's gradient through that decode finds pictures the CLIP likes rather than
the prompt's content (``BENCHMARKS.md``). GLIDE (Nichol et al. 2021, section 3.2) trains the
image encoder on noised images instead, so the guidance is ``grad_{x_t} f(x_t, t) . g(c)``: no
decode, no stop-gradient approximation, and a reader that knows what each noise level can show.

The image tower is the latent classifier's residual trunk (``nodes.latent_classifier``: SiLU
blocks with the sinusoidal timestep added in each, smooth in its input, which is what guidance
differentiates), pooled to a 4x4 grid rather than a mean so where the shapes are survives, then
projected into the text tower's embedding space. The text tower is a transformers
``CLIPTextModelWithProjection`` with the real CLIP tokenizer.

A folder holds both: the text tower as a transformers folder (``config.json``,
``model.safetensors``, tokenizer files) and ``image_tower.safetensors`` whose
``nodeflow.noised_clip`` metadata (JSON) says what the weights cannot: channels, widths, the
noise schedule length and the denoiser it was trained for. ``nodes.clip_model.load_clip_folder``
loads such a folder as a ``CLIP`` whose model says ``noise_aware``; ``CLIPGuidance`` then reads
the latents, not a decoded picture. No pickle anywhere.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from nodes.latent_classifier import NoisyLatentTrunk

__all__ = [
    "IMAGE_TOWER",
    "NoisedCLIPModel",
    "NoisedImageTower",
    "TowerConfig",
    "is_noised_clip_folder",
    "load_noised_clip",
    "save_image_tower",
]

IMAGE_TOWER = "image_tower.safetensors"
METADATA_KEY = "nodeflow.noised_clip"


@dataclass(frozen=True)
class TowerConfig:
    """What the image tower's file must say about itself besides its weights."""

    projection: int
    """The shared embedding width (the text tower's ``projection_dim``)."""
    in_channels: int = 4
    width: int = 32
    groups: int = 8
    grid: int = 4
    """Features are pooled to ``grid x grid`` cells (any latent size) and flattened."""
    num_train_timesteps: int = 1000
    trained_for: str = ""
    """The denoiser whose latents (VAE, scaling) and noise schedule it was trained on."""

    @classmethod
    def from_json(cls, text: str) -> TowerConfig:
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class NoisedImageTower(NoisyLatentTrunk):
    """Projected embeddings ``[batch, projection]`` of noisy latents ``[batch, c, h, w]`` at
    timesteps ``[batch]`` (fractional ones too: Euler-type samplers ask between the integers)."""

    def __init__(self, config: TowerConfig) -> None:
        super().__init__(config.in_channels, config.width, config.groups)
        self.config = config
        self.head = nn.Linear(2 * config.width * config.grid * config.grid, config.projection)

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        h = self.features(latents, timesteps)
        return self.head(nn.functional.adaptive_avg_pool2d(h, self.config.grid).flatten(1))


class NoisedCLIPModel(nn.Module):
    """A text tower and a noisy-latent image tower in one embedding space.

    It answers the text half of ``CLIPModel``'s API (``get_text_features``, ``config``,
    ``device``, ``dtype``) so prompts embed through ``nodes.clip_model.text_features`` as with
    any CLIP; pictures it refuses, naming what it reads instead."""

    noise_aware = True
    """Guidance reads ``latent_features(x_t, t)`` instead of a decoded picture."""

    def __init__(self, text_model: Any, image_tower: NoisedImageTower) -> None:
        super().__init__()
        self.text_model = text_model
        self.image_tower = image_tower
        self.logit_scale = nn.Parameter(torch.tensor(0.0))

    @property
    def config(self) -> Any:
        """The text tower's config (``projection_dim`` is the shared width)."""
        return self.text_model.config

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return self.logit_scale.dtype

    def get_text_features(self, input_ids: torch.Tensor, **_: Any) -> SimpleNamespace:
        """Projected text embeddings as ``CLIPModel.get_text_features`` returns them (on
        ``pooler_output``)."""
        return SimpleNamespace(pooler_output=self.text_model(input_ids=input_ids).text_embeds)

    def get_image_features(self, *_: Any, **__: Any) -> Any:
        raise ValueError(
            "this CLIP is noise-aware: its image tower reads a denoiser's noisy latents and "
            "timestep (CLIPGuidance), not pictures; use a whole CLIP such as demo-clip for "
            "picture embeddings"
        )

    def latent_features(self, latents: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Projected, unnormalised embeddings of noisy latents at (VP) timesteps."""
        return self.image_tower(latents, timesteps)


def save_image_tower(
    tower: NoisedImageTower,
    logit_scale: torch.Tensor,
    path: Path,
    extra: dict[str, str] | None = None,
) -> int:
    """Write the tower (fp32) and the learned temperature to one safetensors file with the
    config in its metadata; returns its size in bytes."""
    from safetensors.torch import save_file

    state = {f"tower.{k}": v.detach().cpu().contiguous() for k, v in tower.state_dict().items()}
    state["logit_scale"] = logit_scale.detach().float().cpu().reshape(())
    metadata = {METADATA_KEY: tower.config.to_json(), **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    return path.stat().st_size


def is_noised_clip_folder(location: Path) -> bool:
    return (Path(location) / IMAGE_TOWER).is_file()


def load_noised_clip(location: str | Path, dtype: Any = None) -> NoisedCLIPModel:
    """The model of a noised-CLIP folder, offline, in eval mode with frozen weights; a tower
    file without its metadata or with other tensors is refused, naming the file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from nodes import hf

    location = Path(location)
    path = location / IMAGE_TOWER
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path}: not a noised-CLIP image tower (no {METADATA_KEY!r} metadata)")
    tower = NoisedImageTower(TowerConfig.from_json(metadata[METADATA_KEY]))
    tensors = load_file(str(path))
    state = {k[len("tower.") :]: v for k, v in tensors.items() if k.startswith("tower.")}
    missing, unexpected = tower.load_state_dict(state, strict=False)
    extra = set(tensors) - {f"tower.{k}" for k in state} - {"logit_scale"}
    if missing or unexpected or extra or "logit_scale" not in tensors:
        raise ValueError(
            f"{path}: the tensors do not fit its config (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3] + sorted(extra)[:3]})"
        )
    text_model = hf.transformers().CLIPTextModelWithProjection.from_pretrained(
        location, local_files_only=True, dtype=torch.float32
    )
    if int(text_model.config.projection_dim) != tower.config.projection:
        raise ValueError(
            f"{path}: the image tower projects to {tower.config.projection}, the text tower "
            f"in {location} to {text_model.config.projection_dim}"
        )
    model = NoisedCLIPModel(text_model, tower)
    with torch.no_grad():
        model.logit_scale.copy_(tensors["logit_scale"])
    if dtype is not None:
        model = model.to(dtype)
    return model.eval().requires_grad_(False)
