"""fp8-stored weights: one byte per linear weight, the pictures of the same model with its linear
weights rounded to fp8, computed in the run's dtype."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flowgraphs import diffusers_image, flow_graph, reference_scheduler
from pixels import assert_same_pixels


@pytest.fixture(scope="module")
def sd3_folder(models_dir: Path) -> Path:
    from nodes.tiny_flow import make_tiny_sd3

    folder = models_dir / "checkpoints" / "tiny-sd3"
    if not (folder / "model_index.json").exists():
        make_tiny_sd3(folder, seed=0)
    return folder


def _round_linear_weights_to_fp8(model: torch.nn.Module) -> None:
    """The reference: each linear weight rounded to float8_e4m3fn and back, in place."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(module.weight.to(torch.float8_e4m3fn).to(module.weight.dtype))


def _run(make_executor, dtype: str) -> tuple[np.ndarray, object]:
    workflow = flow_graph("tiny-sd3", prompt="a red circle", negative="blue", seed=2, dtype=dtype)
    result = make_executor().run(workflow, targets=["decode", "model"])
    assert result.ok, result.error and result.error.traceback
    return result.values["decode"]["image"].pixels.numpy(), result.values["model"]["unet"]


def test_fp8_storage_equals_diffusers_with_fp8_rounded_weights(sd3_folder, make_executor):
    from diffusers import StableDiffusion3Pipeline

    from nodes.fp8 import stored_fp8_bytes

    actual, unet = _run(make_executor, "fp8_e4m3fn")
    linear = sum(
        m.weight.numel() for m in unet.model.modules() if isinstance(m, torch.nn.Linear)
    )
    assert stored_fp8_bytes(unet.model) == linear > 0  # every linear weight: one byte each
    assert unet.model.dtype == torch.float32  # computed in the run's dtype (CPU: fp32)

    pipe = StableDiffusion3Pipeline.from_pretrained(sd3_folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = reference_scheduler(sd3_folder, "euler")
    for part in (pipe.transformer, pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3):
        _round_linear_weights_to_fp8(part)
    expected = diffusers_image(
        pipe, seed=2, prompt="a red circle", negative_prompt="blue", num_inference_steps=4,
        guidance_scale=5.0, width=64, height=64,
    )  # fmt: skip
    assert_same_pixels(actual, expected)
    full, _ = _run(make_executor, "auto")
    assert np.abs(full - actual).max() > 1e-3, "fp8 rounding must show (else nothing was stored)"
