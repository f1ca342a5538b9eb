"""``nodes.placement`` answers what diffusers' ``ModelMixin.device`` / ``.dtype`` answer, for
the kinds of model nodeflow samples with (fp32, fp16, fp8-stored linears, fp32-kept modules)."""

from __future__ import annotations

import pytest
import torch

from nodes.fp8 import store_fp8
from nodes.placement import model_device, model_dtype


def _unet() -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
        out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
        norm_num_groups=4, attention_head_dim=2,
    )  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_device_and_dtype_are_diffusers(dtype):
    unet = _unet().to(dtype)
    assert model_device(unet) == unet.device
    assert model_dtype(unet) == unet.dtype == dtype


def test_fp8_stored_linears_answer_as_diffusers_does():
    unet = _unet()
    assert store_fp8(unet, torch.float32) > 0
    assert model_dtype(unet) == unet.dtype


def test_modules_kept_in_fp32_are_skipped_as_diffusers_skips_them():
    unet = _unet().half()
    unet.conv_in.float()  # the first parameter, now fp32 but "kept": not the compute dtype
    unet._keep_in_fp32_modules = ["conv_in"]
    assert unet.dtype == torch.float16
    assert model_dtype(unet) == torch.float16
    unet._keep_in_fp32_modules = []
    assert model_dtype(unet) == unet.dtype == torch.float32


def test_a_model_without_tensors_is_refused_by_name():
    with pytest.raises(ValueError, match="Identity"):
        model_device(torch.nn.Identity())
    with pytest.raises(ValueError, match="Identity"):
        model_dtype(torch.nn.Identity())
