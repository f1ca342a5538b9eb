"""``nodes.demo.text_probe``: identical captions are 0 apart, different ones are not, and the
windows start at the word that differs."""

from __future__ import annotations

import torch

from nodes.clip_vocab import clip_tokenizer
from nodes.demo.text_probe import TEMPLATE, attribute_separation, phrase_separation
from nodes.demo.train_demo import ModelSizes, build_models


def test_identical_captions_are_zero_apart_and_different_ones_are_not():
    encoder = build_models(ModelSizes.micro(), seed=1).text_encoder.eval()
    same = phrase_separation(encoder, ["a red circle on a blue background"] * 2, start=2)
    assert same == 0.0
    figures = attribute_separation(encoder)
    assert figures["position"] > 0 and figures["color"] > 0


def test_the_windows_start_at_the_word_that_differs():
    ids = clip_tokenizer()(TEMPLATE.format(" on the left")).input_ids
    assert clip_tokenizer().decode(ids[7:8]).strip() == "left"
    assert clip_tokenizer().decode(ids[3:4]).strip() == "red"


def test_a_causal_encoder_gives_zero_before_the_differing_word():
    encoder = build_models(ModelSizes.micro(), seed=2).text_encoder.eval()
    captions = [TEMPLATE.format(" on the left"), TEMPLATE.format(" on the right")]
    assert phrase_separation(encoder, captions, start=1) > 0
    tokenizer = clip_tokenizer()
    ids = torch.tensor([tokenizer(t, padding="max_length", max_length=77).input_ids
                        for t in captions])  # fmt: skip
    with torch.no_grad():
        states = encoder(ids)[0]
    assert torch.equal(states[0, :7], states[1, :7])  # CLIP's causal mask: no look-ahead
