"""The ceiling a demo VAE sets on prompt adherence: how the rule-based evaluator reads the VAE's
own reconstructions of rendered scenes.

Whatever the U-Net draws reaches the picture through the decoder, so a shape the decoder cannot
draw sharply enough to be read (a small triangle rounded into a blob reads as a circle) caps the
adherence figures however well the U-Net learns. TRAINING.md found this cap twice (the v1
decoder before its fine-tune, the demo-sd3 VAE); measuring it before a long U-Net run says
whether the autoencoder, not the U-Net, needs the time.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from nodes.demo.dataset import Scene, render
from nodes.demo.evaluate import score

__all__ = ["CHECKS", "reconstruction_cap", "vae_reconstructor"]

CHECKS = ("background_ok", "color_ok", "shape_ok", "count_ok", "size_ok", "position_ok",
          "caption_ok")  # fmt: skip
Reconstructor = Callable[[torch.Tensor], torch.Tensor]
"""Pixels in -1..1 ``[B, 3, 64, 64]`` to their reconstructions, same layout and range."""


def vae_reconstructor(vae: Any, *, sample: bool = False, seed: int = 0) -> Reconstructor:
    """Encode and decode with ``vae`` (an ``AutoencoderKL``): the posterior's mode, or a sample
    as the U-Net's training latents are drawn (``sample``)."""
    generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def reconstruct(pixels: torch.Tensor) -> torch.Tensor:
        posterior = vae.encode(pixels).latent_dist
        latents = posterior.sample(generator) if sample else posterior.mode()
        return vae.decode(latents).sample

    return reconstruct


def reconstruction_cap(
    reconstruct: Reconstructor, scenes: Sequence[Scene], batch: int = 50
) -> dict[str, Any]:
    """Per-check accuracy on the reconstructions (``position_ok`` over scenes that name one),
    shape accuracy per (shape, size), the misread shapes as ``"drawn->read"`` counts, and the
    style as the style LoRA is scored: the mean ``outline_score`` and the share of pictures read
    as outlined (for outlined scenes, the most a LoRA drawing through this decoder can reach)."""
    results = []
    for start in range(0, len(scenes), batch):
        chunk = scenes[start : start + batch]
        pictures = np.stack([np.asarray(render(scene), dtype=np.float32) for scene in chunk])
        pixels = torch.from_numpy(pictures).permute(0, 3, 1, 2) / 127.5 - 1
        images = ((reconstruct(pixels).clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
        results += [score(image, scene) for image, scene in zip(images, chunk, strict=True)]
    accuracy: dict[str, float | None] = {}
    for check in CHECKS:
        values = [r[check] for r in results if r[check] is not None]
        accuracy[check] = sum(map(bool, values)) / len(values) if values else None
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    misread: Counter[str] = Counter()
    for result, scene in zip(results, scenes, strict=True):
        kind = by_kind[f"{scene.size} {scene.shape}"]
        kind[0] += bool(result["shape_ok"])
        kind[1] += 1
        if not result["shape_ok"]:
            misread[f"{scene.shape}->{result['found_shape']}"] += 1
    return {
        "count": len(scenes),
        "accuracy": accuracy,
        "shape_by_kind": {k: v[0] / v[1] for k, v in sorted(by_kind.items())},
        "kind_counts": {k: v[1] for k, v in sorted(by_kind.items())},
        "misread": dict(misread.most_common()),
        "outline_score": float(np.mean([r["outline_score"] for r in results])),
        "outlined": sum(r["style"] == "outlined" for r in results) / len(results),
    }
