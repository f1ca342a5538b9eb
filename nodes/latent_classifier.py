"""A noise-aware classifier over diffusion latents: p(y | x_t, t) for classifier guidance.

Classifier guidance (Dhariwal & Nichol 2021) needs a classifier that reads the *noisy* latents a
sampler holds at every step, so it is trained on latents noised by the denoiser's own schedule
and told the timestep, as the U-Net is. The architecture is a small ResNet with the timestep
added to every block (the U-Net's recipe, without attention): smooth activations (SiLU) keep its
input gradient, which is what guidance uses, free of the kinks a ReLU network has.

A classifier file is one safetensors file; what the weights cannot tell (channels, width, the
class names, the attribute they name, the schedule it was trained on) rides in its
``nodeflow.classifier`` metadata as JSON, so loading needs no pickle and no code from the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["ClassifierConfig", "LatentClassifier", "load_classifier", "save_classifier"]

METADATA_KEY = "nodeflow.classifier"


@dataclass(frozen=True)
class ClassifierConfig:
    """What a classifier file must say about itself besides its weights."""

    labels: tuple[str, ...]
    """The class names, in output order (``label`` widgets are indices into this)."""
    attribute: str = "class"
    """What the classes name (the demo's: ``color``, the largest shape's color)."""
    in_channels: int = 4
    width: int = 32
    groups: int = 8
    num_train_timesteps: int = 1000
    trained_for: str = ""
    """The denoiser whose latents (VAE and scaling) and noise schedule it was trained on."""

    @classmethod
    def from_json(cls, text: str) -> ClassifierConfig:
        raw = json.loads(text)
        raw["labels"] = tuple(raw["labels"])
        return cls(**raw)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) timesteps, as the U-Net embeds them, so a
    sigma-spaced sampler's in-between timesteps read smoothly."""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half
    frequencies = torch.exp(exponent).to(timesteps.device)
    angles = timesteps.float()[:, None] * frequencies[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class _Block(nn.Module):
    """GroupNorm-SiLU-conv twice with the timestep added between, plus a skip connection."""

    def __init__(self, channels_in: int, channels_out: int, time_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.time = nn.Linear(time_dim, channels_out)
        self.norm2 = nn.GroupNorm(groups, channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.skip = (
            nn.Identity()
            if channels_in == channels_out
            else nn.Conv2d(channels_in, channels_out, 1)
        )

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.time(time)[:, :, None, None]
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return self.skip(x) + h


class NoisyLatentTrunk(nn.Module):
    """The timestep-conditioned convolutional trunk that reads noisy latents, shared by the latent
    classifier and the noised CLIP's image tower (each adds its own pooling and head).

    Its layers are attributes of the subclass itself (``time``, ``stem``, ``block1`` ...), not a
    submodule, so the shipped files' tensor names stay as they were written."""

    def __init__(self, in_channels: int, width: int, groups: int) -> None:
        super().__init__()
        self.time_dim = width * 4
        self.time = nn.Sequential(
            nn.Linear(width, self.time_dim), nn.SiLU(), nn.Linear(self.time_dim, self.time_dim)
        )
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.block1 = _Block(width, width, self.time_dim, groups)
        self.down1 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.block2 = _Block(2 * width, 2 * width, self.time_dim, groups)
        self.down2 = nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1)
        self.block3 = _Block(2 * width, 2 * width, self.time_dim, groups)
        self.norm = nn.GroupNorm(groups, 2 * width)
        self._width = width

    def features(self, latents: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Feature maps ``[batch, 2 * width, h / 4, w / 4]``; a 0-d ``timesteps`` is broadcast."""
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(latents.shape[0])
        time = self.time(timestep_embedding(timesteps, self._width).to(latents.dtype))
        h = self.block1(self.stem(latents), time)
        h = self.block2(self.down1(h), time)
        h = self.block3(self.down2(h), time)
        return nn.functional.silu(self.norm(h))


class LatentClassifier(NoisyLatentTrunk):
    """Logits over ``config.labels`` for noisy latents ``[batch, channels, h, w]`` at timesteps
    ``[batch]`` (any latent size: the features are averaged over space at the end)."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__(config.in_channels, config.width, config.groups)
        self.config = config
        self.head = nn.Linear(2 * config.width, len(config.labels))

    @property
    def num_classes(self) -> int:
        return len(self.config.labels)

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(latents, timesteps).mean(dim=(2, 3)))


def save_classifier(
    model: LatentClassifier, path: Path, extra: dict[str, str] | None = None
) -> None:
    """Write ``model`` as one safetensors file with its config in the metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {METADATA_KEY: model.config.to_json(), **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)


def load_classifier(path: Path) -> LatentClassifier:
    """A classifier from a file ``save_classifier`` wrote, in eval mode with frozen weights;
    a file without the config metadata or with other tensors is refused, naming the file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path}: not a classifier file (no {METADATA_KEY!r} metadata)")
    model = LatentClassifier(ClassifierConfig.from_json(metadata[METADATA_KEY]))
    state: dict[str, Any] = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: classifier weights do not match its config "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    return model.eval().requires_grad_(False)
