"""A ComfyUI-style models folder: tiny single files under the names ComfyUI's templates use."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "comfyui"


@pytest.fixture(scope="session")
def comfy_dirs(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from nodes.tiny_lora import write_tiny_loras

    root = tmp_path_factory.mktemp("comfy")
    checkpoints, loras, inputs = root / "checkpoints", root / "loras", root / "input"
    for folder in (checkpoints, loras, inputs):
        folder.mkdir()
    tiny = models_dir / "checkpoints"
    shutil.copy(tiny / "tiny.safetensors", checkpoints / "v1-5-pruned-emaonly.safetensors")
    shutil.copy(tiny / "tiny-sdxl.safetensors", checkpoints / "sd_xl_base_1.0.safetensors")
    made = write_tiny_loras(tiny / "tiny", root / "made-loras")
    shutil.copy(made["kohya"], loras / "epiNoiseoffset_v2.safetensors")
    Image.new("RGB", (64, 64), (200, 30, 30)).save(inputs / "example.png")
    return {"models": root, "input": inputs}
