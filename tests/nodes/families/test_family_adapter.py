"""The family adapter is the only way the sampling code reaches the model."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusers import DDIMScheduler

from nodes.families import StableDiffusionUNet
from nodes.guidance import predict_noise, unet_inputs
from nodes.text import encode_text
from nodes.types import Guider, TextEncoder, UNet


@pytest.fixture(scope="module")
def sd(pipe: Any) -> TextEncoder:
    return TextEncoder(tokenizer=pipe.tokenizer, model=pipe.text_encoder)


class CountingFamily(StableDiffusionUNet):
    """The SD adapter, counting its model calls and the batch each one saw."""

    def __init__(self, guidance_embedded: bool) -> None:
        self.guidance_embedded = guidance_embedded
        self.batches: list[int] = []

    def predict(self, unet: UNet, model_input: Any, timestep: Any, inputs: dict[str, Any]) -> Any:
        self.batches.append(int(model_input.shape[0]))
        return super().predict(unet, model_input, timestep, inputs)


def _guider(pipe: Any, sd: Any, family: CountingFamily, scale: float) -> Guider:
    unet = UNet(model=pipe.unet, scheduler_config=dict(pipe.scheduler.config), family=family)
    positive = encode_text(sd, "a red circle", "cpu")
    negative = encode_text(sd, "", "cpu")
    return Guider(unet=unet, positive=positive, negative=negative, scale=scale)


def _step(guider: Guider, pipe: Any) -> tuple[torch.Tensor, Any, torch.Tensor]:
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(4)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = scheduler.timesteps[1]
    with torch.no_grad():
        return predict_noise(guider, latents, t, scheduler), t, latents


def test_cfg_calls_the_family_once_with_both_prompts(pipe, sd) -> None:
    family = CountingFamily(guidance_embedded=False)
    _step(_guider(pipe, sd, family, 7.5), pipe)
    assert family.batches == [2]


def test_a_guidance_embedding_family_gets_one_positive_pass(pipe, sd) -> None:
    family = CountingFamily(guidance_embedded=True)
    guider = _guider(pipe, sd, family, 7.5)
    guided, t, latents = _step(guider, pipe)
    assert family.batches == [1]
    inputs = unet_inputs(guider, latents)
    torch.testing.assert_close(inputs["encoder_hidden_states"], guider.positive.embeds)
    with torch.no_grad():
        positive = pipe.unet(latents, t, encoder_hidden_states=guider.positive.embeds).sample
    torch.testing.assert_close(guided, positive, rtol=0, atol=1e-6)


def test_the_default_family_reads_channels_from_the_model(pipe) -> None:
    unet = UNet(model=pipe.unet, scheduler_config={})
    assert isinstance(unet.family, StableDiffusionUNet)
    assert unet.latent_channels == pipe.unet.config.in_channels == 4
