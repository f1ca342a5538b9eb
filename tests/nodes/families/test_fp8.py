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
    from nodes.tiny_flow_single import write_sd3_single_file

    folder = models_dir / "checkpoints" / "tiny-sd3"
    if not (folder / "model_index.json").exists():
        make_tiny_sd3(folder, seed=0)
    write_sd3_single_file(folder, models_dir / "checkpoints" / "tiny-sd3.safetensors")
    return folder


def _round_linear_weights_to_fp8(model: torch.nn.Module) -> None:
    """The reference: each linear weight rounded to float8_e4m3fn and back, in place."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(module.weight.to(torch.float8_e4m3fn).to(module.weight.dtype))


def _run(make_executor, dtype: str, checkpoint: str) -> tuple[np.ndarray, object]:
    workflow = flow_graph(checkpoint, prompt="a red circle", negative="blue", seed=2, dtype=dtype)
    result = make_executor().run(workflow, targets=["decode", "model"])
    assert result.ok, result.error and result.error.traceback
    return result.values["decode"]["image"].pixels.numpy(), result.values["model"]["unet"]


@pytest.mark.parametrize("checkpoint", ["tiny-sd3", "tiny-sd3.safetensors"])
def test_fp8_storage_equals_diffusers_with_fp8_rounded_weights(
    sd3_folder, make_executor, checkpoint
):
    """A folder is converted after loading; a single file's transformer is read straight into
    fp8. Either way: the pictures of the fp8-rounded model."""
    from diffusers import StableDiffusion3Pipeline

    from nodes.fp8 import stored_fp8_bytes

    actual, unet = _run(make_executor, "fp8_e4m3fn", checkpoint)
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
    full, _ = _run(make_executor, "auto", checkpoint)
    assert np.abs(full - actual).max() > 1e-3, "fp8 rounding must show (else nothing was stored)"


def test_a_file_reads_linear_weights_straight_into_fp8(sd3_folder):
    from nodes.fp8 import fp8_linear_weights
    from nodes.single_file import UNET_PREFIX, CheckpointFile

    file = CheckpointFile(sd3_folder.parent / "tiny-sd3.safetensors")
    state = file.read(UNET_PREFIX, fp8_linear_weights(torch.float32))
    fp8 = {k for k, v in state.items() if v.dtype == torch.float8_e4m3fn}
    assert fp8 == {k for k, v in state.items() if k.endswith(".weight") and v.ndim == 2}
    assert "joint_blocks.0.x_block.attn.qkv.weight" in fp8
    assert state["pos_embed"].dtype == state["joint_blocks.0.x_block.attn.qkv.bias"].dtype
    assert state["pos_embed"].dtype == torch.float32
