"""Clip skip equals diffusers' ``clip_skip`` (ComfyUI's layer -2 is diffusers' clip_skip 1).

The reference is diffusers' ``encode_prompt`` formula written out (hidden state
``-(clip_skip + 1)`` through the final layer norm): its own code reaches the norm through
``text_model``, which transformers 5's ``CLIPTextModel`` no longer has."""

from __future__ import annotations

import pytest
import torch

from nodeflow.builder import WorkflowBuilder

PROMPT = "a red circle on a blue background"


def encoded(make_executor, checkpoint: str, layer: int | None, text: str = PROMPT):
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path=checkpoint)
    encoder = model.text_encoder
    if layer is not None:
        encoder = b.add("SetLastLayer", id="skip", text_encoder=encoder,
                        stop_at_clip_layer=layer).text_encoder  # fmt: skip
    b.add("TextEncode", id="text", text_encoder=encoder, text=text)
    return make_executor().run(b.build(), targets=["text"])


@pytest.mark.parametrize("layer, clip_skip", [(-1, None), (-2, 1), (-3, 2)])
def test_a_layer_from_the_end_is_diffusers_clip_skip(pipe, make_executor, layer, clip_skip):
    result = encoded(make_executor, "tiny", layer)
    assert result.ok, result.error and result.error.traceback
    actual = result.values["text"]["conditioning"].embeds
    ids = pipe.tokenizer(
        PROMPT, padding="max_length", max_length=pipe.tokenizer.model_max_length,
        truncation=True, return_tensors="pt",
    ).input_ids  # fmt: skip
    with torch.no_grad():
        if clip_skip is None:
            expected = pipe.text_encoder(ids)[0]
        else:
            hidden = pipe.text_encoder(ids, output_hidden_states=True).hidden_states
            expected = pipe.text_encoder.final_layer_norm(hidden[-(clip_skip + 1)])
    assert torch.equal(actual, expected)
    if layer != -1:  # the layer really changed something
        with torch.no_grad():
            assert not torch.allclose(actual, pipe.text_encoder(ids)[0])


def test_weighted_prompts_read_the_same_layer(pipe, make_executor):
    """The chunked path (prompts with weights) takes the layer as the plain one does: CLIP's
    attention is causal, so the tokens before an added weighted word are unchanged."""
    plain = encoded(make_executor, "tiny", -2).values["text"]["conditioning"].embeds
    weighted = encoded(make_executor, "tiny", -2, text=f"{PROMPT} (green:1.2)")
    assert weighted.ok, weighted.error and weighted.error.traceback
    before = 1 + len(pipe.tokenizer(PROMPT, add_special_tokens=False).input_ids)
    embeds = weighted.values["text"]["conditioning"].embeds
    assert torch.equal(embeds[:, :before], plain[:, :before])
    assert not torch.equal(embeds, plain)


def test_two_encoder_models_and_layers_beyond_the_encoder_are_refused(make_executor):
    sdxl = encoded(make_executor, "tiny-sdxl", -2)
    assert not sdxl.ok and "SDXL" in sdxl.error.message
    deep = encoded(make_executor, "tiny", -40)
    assert not deep.ok and "beyond" in deep.error.message
