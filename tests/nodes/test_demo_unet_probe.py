"""``nodes.demo.unet_probe``: captions the encoder cannot tell apart give the same first guess,
and a U-Net's response to an attribute is measured on the x0 guesses of every pair."""

from __future__ import annotations

import math

import torch

from nodes.demo.train_demo import ModelSizes, build_models, noise_scheduler
from nodes.demo.unet_probe import layout_response


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
