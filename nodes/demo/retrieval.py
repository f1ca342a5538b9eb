"""How well a CLIP reads demo captions: image -> caption retrieval among one-word variants.

For each held-out scene and each attribute it can change (colour, shape, size, background,
position), the candidates are the scene's own caption and every valid variant that differs in
that attribute alone (``nodes.demo.variants``); the picture retrieves the candidate with the
highest cosine similarity. Accuracy per attribute against its chance level (one over the number
of candidates) says which words the model has learned to see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodes.clip_model import CLIP, cosine, image_features, load_clip_folder, text_features
from nodes.demo.dataset import Scene, caption, dataset
from nodes.demo.variants import ATTRIBUTES, variants

RETRIEVAL_SEED = 12345
"""The held-out scenes measured (``dataset(RETRIEVAL_SEED, n, split="held_out")``)."""


def load_demo_clip(folder: str | Path) -> CLIP:
    import torch

    return load_clip_folder(folder, torch.float32)


def held_out_scenes(n: int, seed: int = RETRIEVAL_SEED) -> list[tuple[Any, Scene]]:
    """``n`` held-out ``(picture, scene)`` pairs, the same for a seed on every machine."""
    return [(picture, scene) for picture, _, scene in dataset(seed, n, split="held_out")]


def picture_features(clip: CLIP, pictures: list[Any]) -> Any:
    """Projected image embeddings of PIL pictures (8-bit, at the model's size or not)."""
    import numpy as np
    import torch

    array = np.stack([np.asarray(p.convert("RGB"), dtype=np.float32) for p in pictures]) / 255
    with torch.no_grad():
        return image_features(clip, torch.from_numpy(array).permute(0, 3, 1, 2))


class CaptionTable:
    """Text features per caption, computed once each."""

    def __init__(self, clip: CLIP) -> None:
        self.clip = clip
        self._features: dict[str, Any] = {}

    def __call__(self, captions: list[str]) -> Any:
        import torch

        missing = [c for c in dict.fromkeys(captions) if c not in self._features]
        if missing:
            for text, row in zip(missing, text_features(self.clip, missing), strict=True):
                self._features[text] = row
        return torch.stack([self._features[c] for c in captions])


def retrieval(
    clip: CLIP, scenes: int = 200, seed: int = RETRIEVAL_SEED
) -> dict[str, dict[str, float]]:
    """Per attribute: ``accuracy`` (the true caption ranked first), ``chance`` and ``n``."""
    pairs = held_out_scenes(scenes, seed)
    images = picture_features(clip, [picture for picture, _ in pairs])
    table = CaptionTable(clip)
    result: dict[str, dict[str, float]] = {}
    for attribute in ATTRIBUTES:
        hits, chance, count = 0, 0.0, 0
        for row, (_, scene) in enumerate(pairs):
            others = variants(scene, attribute)
            if not others:
                continue
            candidates = [caption(scene)] + [caption(v) for v in others]
            scores = cosine(images[row : row + 1], table(candidates))[0]
            hits += int(scores.argmax()) == 0
            chance += 1 / len(candidates)
            count += 1
        if count:
            result[attribute] = {
                "accuracy": round(hits / count, 4),
                "chance": round(chance / count, 4),
                "n": count,
            }
    return result
