"""ComfyUI's ImageScale lanczos (PIL, 8-bit) is ScaleImage's lanczos, kept without a warning;
LatentUpscale has no lanczos of its own and bislerp still runs as bilinear, with a warning."""

from __future__ import annotations

import json
from pathlib import Path

from nodeflow.imports import load_document
from nodeflow.plugins import load_catalog

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "comfyui"


def imported(method: str, kind: str = "ImageScale") -> tuple[dict, list]:
    prompt = json.loads((FIXTURES / "txt2img_api.json").read_text())
    source = ("image", ["8", 0]) if kind == "ImageScale" else ("samples", ["3", 0])
    prompt["20"] = {
        "class_type": kind,
        "inputs": {source[0]: source[1], "upscale_method": method, "width": 32, "height": 32,
                   "crop": "disabled"},
    }  # fmt: skip
    result = load_document(prompt, load_catalog().loaders)
    return result.workflow.to_json()["nodes"]["20"], result.warnings


def test_image_scale_lanczos_is_scale_image_lanczos_without_a_warning():
    node, warnings = imported("lanczos")
    assert node["type"] == "ScaleImage" and node["inputs"]["method"] == "lanczos"
    assert not [w for w in warnings if w.node == "20"]


def test_latent_bislerp_still_runs_as_bilinear_and_says_so():
    node, warnings = imported("bislerp", kind="LatentUpscale")
    assert node["type"] == "ScaleLatent" and node["inputs"]["method"] == "bilinear"
    assert [w.input for w in warnings if w.node == "20"] == ["upscale_method"]
