"""``nodes.demo.unet_probe``: captions the encoder cannot tell apart give the same first guess,
and a U-Net's response to an attribute is measured on the x0 guesses of every pair."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from nodes.demo.train_demo import ModelSizes, build_models, noise_scheduler
from nodes.demo.unet_probe import layout_response, leak_and_caption


def _response(models, timesteps):
    alphas = noise_scheduler().alphas_cumprod
    unet, encoder = models.unet.eval(), models.text_encoder.eval()
    return layout_response(unet, encoder, alphas, timesteps=timesteps, noises=2)


def test_an_encoder_that_ignores_the_words_gives_no_response():
    models = build_models(ModelSizes.micro(), seed=5)
    with torch.no_grad():
        models.text_encoder.get_input_embeddings().weight.zero_()
    result = _response(models, (999,))
    assert result["999"]["position"] == 0.0 and result["999"]["color"] == 0.0
    assert math.isnan(result["999"]["ratio"])


def test_a_random_model_responds_to_both_attributes():
    models = build_models(ModelSizes.micro(), seed=5)
    result = _response(models, (999, 500))
    assert set(result) == {"999", "500"}
    for figures in result.values():
        assert figures["position"] > 0 and figures["color"] > 0
        assert math.isclose(figures["ratio"], figures["position"] / figures["color"])
    again = _response(models, (999, 500))
    assert again == result  # seeded noise: the probe repeats


class _NoiseFree(torch.nn.Module):
    """A "U-Net" that predicts no noise: its guess of the picture is x_t / sqrt(alpha)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, sample, timestep, encoder_hidden_states):
        return SimpleNamespace(sample=torch.zeros_like(sample))


def test_a_guess_that_only_reads_x_t_follows_the_leak_fully_and_the_caption_not_at_all():
    models = build_models(ModelSizes.micro(), seed=5)
    alphas = noise_scheduler().alphas_cumprod
    encoder, vae = models.text_encoder.eval(), models.vae.eval()
    result = leak_and_caption(_NoiseFree(), encoder, vae, alphas, timesteps=(999,), noises=2)
    # the same noises under both sides cancel: x_t / sqrt(a) differs by exactly z_left - z_right
    assert math.isclose(result["999"]["leak"], 1.0, rel_tol=1e-4)
    assert result["999"]["caption"] == 0.0
    assert result["999"]["noise_spread"] > 0  # pure noise scaled by 1 / sqrt(a) lands anywhere


def test_a_real_model_gets_both_figures_at_each_timestep():
    models = build_models(ModelSizes.micro(), seed=5)
    alphas = noise_scheduler().alphas_cumprod
    unet, encoder, vae = models.unet.eval(), models.text_encoder.eval(), models.vae.eval()
    result = leak_and_caption(unet, encoder, vae, alphas, timesteps=(999, 900), noises=1)
    assert set(result) == {"999", "900"}
    assert all(math.isfinite(v) for row in result.values() for v in row.values())
