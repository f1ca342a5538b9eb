"""What makes an imported workflow's files ComfyUI's, byte for byte where the floats agree:
SaveImage's 8-bit conversion (ComfyUI truncates ``255 * x``; nodeflow rounds by default)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from nodeflow.imports import load_document
from nodeflow.plugins import load_catalog
from nodes.image import to_pil
from nodes.types import Image

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "comfyui"


def comfyui_save_bytes(pixels: np.ndarray) -> np.ndarray:
    """ComfyUI's SaveImage (nodes.py): ``np.clip(255. * i, 0, 255).astype(np.uint8)``."""
    return np.clip(255.0 * pixels, 0, 255).astype(np.uint8)


def test_truncating_conversion_is_comfyuis_and_nearest_stays_the_default():
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 8, 8, 3, generator=generator) * 1.2 - 0.1  # some out of [0, 1]
    pixels[0, 0, 0] = torch.tensor([0.999, 0.6 / 255, 1.0])  # truncation and rounding differ
    image = Image(pixels)
    truncated = np.stack([np.asarray(p) for p in to_pil(image, "truncate")])
    np.testing.assert_array_equal(truncated, comfyui_save_bytes(pixels.numpy()))
    nearest = np.stack([np.asarray(p) for p in to_pil(image)])
    assert nearest[0, 0, 0].tolist() == [255, 1, 255]
    assert truncated[0, 0, 0].tolist() == [254, 0, 255]


def test_an_imported_save_image_truncates_like_comfyui():
    prompt = json.loads((FIXTURES / "txt2img_api.json").read_text())
    workflow = load_document(prompt, load_catalog().loaders).workflow.to_json()
    saves = [n for n in workflow["nodes"].values() if n["type"] == "SaveImage"]
    assert [n["inputs"]["rounding"] for n in saves] == ["truncate"]
