"""Growing the demo U-Net (``nodes.demo.grow``): attention added at a level that had none keeps
every v1 weight under its own name, starts as the identity (a pipeline draws the same pixels
grown as not), and is refused where it makes no sense. The shipped demo is itself the grown
U-Net since demo v2b, so the pipeline check runs on a tiny SD 1.x folder with a plain level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from pixels import SAME_MODEL_TOLERANCE, assert_same_pixels

from nodes.demo.grow import attention_levels, grow_unet, grown_config
from nodes.demo.train_demo import ModelSizes, build_models
from nodes.tiny import make_tiny_sd

DEMO = Path(__file__).resolve().parents[2] / "nodes" / "demo" / "model" / "demo-sd"


@pytest.fixture(scope="module")
def micro_unet():
    return build_models(ModelSizes.micro(), seed=5).unet.eval()


def test_the_grown_unet_keeps_every_weight_and_adds_only_attention_at_the_level(micro_unet):
    assert attention_levels(micro_unet.config) == [1]
    grown = grow_unet(micro_unet, [0])
    assert attention_levels(grown.config) == [0, 1]
    assert grown.config.up_block_types == ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    old, new = micro_unet.state_dict(), grown.state_dict()
    for key, value in old.items():
        assert torch.equal(new[key], value), key
    added = sorted(set(new) - set(old))
    assert added and all(k.startswith(("down_blocks.0.attentions.", "up_blocks.1.attentions."))
                         for k in added)  # fmt: skip
    # one transformer block in the down block, two in the up block (layers_per_block + 1)
    outs = [k for k in added if k.endswith("proj_out.weight")]
    assert len(outs) == 3
    assert all(new[k].abs().max().item() == 0 for k in outs)
    # the rest of the new blocks is initialised, not zero: gradients reach it once proj_out moves
    assert new["down_blocks.0.attentions.0.proj_in.weight"].abs().max().item() > 0


def test_the_micro_grown_unet_predicts_exactly_what_it_grew_from(micro_unet):
    grown = grow_unet(micro_unet, [0]).eval()
    torch.manual_seed(0)
    latents, context = torch.randn(2, 4, 32, 32), torch.randn(2, 77, 8)
    timesteps = torch.tensor([5, 900])
    with torch.no_grad():
        before = micro_unet(latents, timesteps, context).sample
        after = grown(latents, timesteps, context).sample
        assert torch.equal(before, after)
        # the new attention is in the path: once proj_out is not zero, the output moves
        grown.down_blocks[0].attentions[0].proj_out.weight.normal_(0, 0.1)
        moved = grown(latents, timesteps, context).sample
    assert (moved - before).abs().max().item() > 1e-3


def _pixels(pipe: StableDiffusionPipeline) -> np.ndarray:
    return pipe(
        "a large red circle on the left on a blue background",
        height=64, width=64, num_inference_steps=4, guidance_scale=7.5, output_type="np",
        generator=torch.Generator().manual_seed(3),
    ).images  # fmt: skip


def test_the_shipped_demo_is_the_grown_unet():
    pipe = StableDiffusionPipeline.from_pretrained(
        DEMO, torch_dtype=torch.float32, local_files_only=True, safety_checker=None,
        requires_safety_checker=False,
    )  # fmt: skip
    assert attention_levels(pipe.unet.config) == [0, 1, 2]
    with pytest.raises(ValueError, match="level 0 is CrossAttnDownBlock2D"):
        grow_unet(pipe.unet, [0])


def test_a_grown_pipeline_draws_the_pixels_it_drew_before(tmp_path):
    folder = make_tiny_sd(tmp_path / "tiny-sd", seed=3)
    pipe = StableDiffusionPipeline.from_pretrained(
        folder, torch_dtype=torch.float32, local_files_only=True, safety_checker=None,
        requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    plain = attention_levels(pipe.unet.config)
    before = _pixels(pipe)
    assert before.std() > 0.01  # a varied picture, not a flat field
    pipe.unet = grow_unet(pipe.unet, [0]).eval()
    assert attention_levels(pipe.unet.config) == sorted({0, *plain})
    assert_same_pixels(_pixels(pipe), before)
    with torch.no_grad():  # and the comparison can fail: a non-identity block changes them
        torch.manual_seed(0)
        last_up = pipe.unet.up_blocks[len(pipe.unet.up_blocks) - 1]
        last_up.attentions[0].proj_out.weight.normal_(0, 0.1)
    assert float(np.abs(_pixels(pipe) - before).max()) > 100 * SAME_MODEL_TOLERANCE


def test_a_level_with_attention_or_out_of_range_is_refused(micro_unet):
    with pytest.raises(ValueError, match="level 1 is CrossAttnDownBlock2D"):
        grown_config(micro_unet.config, [1])
    with pytest.raises(ValueError, match=r"not one of the U-Net's 0\.\.1"):
        grow_unet(micro_unet, [2])
    with pytest.raises(ValueError, match="at least one level"):
        grow_unet(micro_unet, [])
