"""A text per text encoder: ComfyUI's CLIPTextEncodeSD3 with different clip_l, clip_g and t5xxl
texts becomes TextEncodeEach, whose conditioning is diffusers' ``encode_prompt`` with
``prompt`` (CLIP-L), ``prompt_2`` (CLIP-G) and ``prompt_3`` (T5), the oracle (ComfyUI tokenizes
the three texts separately for the same three encoders, ``comfy_extras/nodes_sd3.py``). Flux's
format takes its two texts the same way (diffusers' ``prompt`` for CLIP-L, ``prompt_2`` for T5).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nodeflow.errors import WorkflowInvalid
from nodeflow.imports import load_document
from nodeflow.plugins import load_catalog
from nodeflow.validate import bind
from nodes.flow_loaders import load_transformer_folder
from nodes.text import text_encode, text_encode_each
from nodes.types import TextEncoder

TEXTS = {"clip_l": "a red circle", "clip_g": "a blue square", "t5xxl": "a green triangle"}
CTX = SimpleNamespace(models=SimpleNamespace(use=lambda *models: None))
"""The only part of a Context the text nodes touch (keeping the models in memory)."""
T5_NOISE = 1e-4
"""The tiny T5's float noise against the pipeline's (~1.2e-5 on values up to ~3), the same
for one text as for three; a wrong text moves it by far more (checked below)."""


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from nodes.tiny_flow import make_tiny_flux, make_tiny_sd3

    root = tmp_path_factory.mktemp("each-text")
    return {"sd3": make_tiny_sd3(root / "sd3", seed=0), "flux": make_tiny_flux(root / "flux")}


def test_sd3_texts_per_encoder_are_diffusers_prompt_prompt_2_prompt_3(folders):
    from diffusers import StableDiffusion3Pipeline

    _, text_encoder, _ = load_transformer_folder(folders["sd3"], torch.float32)
    ours = text_encode_each(CTX, text_encoder, TEXTS)
    pipe = StableDiffusion3Pipeline.from_pretrained(folders["sd3"], local_files_only=True)
    embeds, _, pooled, _ = pipe.encode_prompt(
        prompt=TEXTS["clip_l"], prompt_2=TEXTS["clip_g"], prompt_3=TEXTS["t5xxl"],
        do_classifier_free_guidance=False, max_sequence_length=256, device="cpu",
    )  # fmt: skip
    clip = 77  # CLIP-L and CLIP-G's tokens side by side, then T5's
    assert torch.equal(ours.embeds[:, :clip], embeds[:, :clip])
    assert torch.equal(ours.pooled, pooled)
    torch.testing.assert_close(ours.embeds[:, clip:], embeds[:, clip:], rtol=0, atol=T5_NOISE)
    # each text matters: one text for all three is another conditioning
    one = text_encode(CTX, text_encoder, TEXTS["clip_l"])
    assert (one.embeds - ours.embeds).abs().max() > 1e-3
    assert (one.pooled - ours.pooled).abs().max() > 1e-3
    same = text_encode_each(CTX, text_encoder, dict.fromkeys(TEXTS, TEXTS["clip_l"]))
    torch.testing.assert_close(same.embeds, one.embeds, rtol=0, atol=0)


def test_flux_texts_per_encoder_are_diffusers_prompt_and_prompt_2(folders):
    from diffusers import FluxPipeline

    _, text_encoder, _ = load_transformer_folder(folders["flux"], torch.float32)
    texts = {"clip_l": TEXTS["clip_l"], "t5xxl": TEXTS["t5xxl"]}
    ours = text_encode_each(CTX, text_encoder, texts, max_sequence_length=64)
    pipe = FluxPipeline.from_pretrained(folders["flux"], local_files_only=True)
    embeds, pooled, _ = pipe.encode_prompt(
        prompt=texts["clip_l"], prompt_2=texts["t5xxl"], max_sequence_length=64, device="cpu"
    )
    assert torch.equal(ours.pooled, pooled)
    torch.testing.assert_close(ours.embeds, embeds, rtol=0, atol=T5_NOISE)


def test_texts_must_name_exactly_the_models_encoders(folders):
    _, text_encoder, _ = load_transformer_folder(folders["flux"], torch.float32)
    with pytest.raises(ValueError, match=r"\['clip_l', 't5xxl'\], got \['clip_g', 'clip_l'"):
        text_encode_each(CTX, text_encoder, TEXTS)
    one_encoder = TextEncoder(None, None, source="tiny-sd")
    with pytest.raises(ValueError, match=r"texts: tiny-sd reads one text .* use TextEncode"):
        text_encode_each(CTX, one_encoder, {"clip_l": "x"})


def sd3_encode(texts: dict[str, str], padding: str = "empty_prompt") -> dict:
    return {
        "1": {"class_type": "TripleCLIPLoader", "inputs": {
            "clip_name1": "l.safetensors", "clip_name2": "g.safetensors",
            "clip_name3": "t5.safetensors"}},
        "2": {"class_type": "CLIPTextEncodeSD3",
              "inputs": {"clip": ["1", 0], **texts, "empty_padding": padding}},
    }  # fmt: skip


def test_comfyuis_differing_sd3_texts_import_as_text_encode_each():
    catalog = load_catalog()
    workflow = load_document(sd3_encode(TEXTS), catalog.loaders).workflow
    bind(workflow, catalog, targets=["2"])  # the encoder with its inputs validated
    assert workflow.to_json()["nodes"]["2"] == {
        "type": "TextEncodeEach",
        "inputs": {"text_encoder": {"from": "1.text_encoder"}, "texts": TEXTS},
    }
    same = load_document(sd3_encode(dict.fromkeys(TEXTS, "x")), catalog.loaders).workflow
    assert same.to_json()["nodes"]["2"]["type"] == "TextEncode"
    # an empty clip_l with empty_padding "none" would be zeros in ComfyUI: still refused
    with pytest.raises(WorkflowInvalid) as raised:
        load_document(sd3_encode(TEXTS | {"clip_l": ""}, "none"), catalog.loaders)
    assert {(i.node, i.input) for i in raised.value.issues} == {("2", "empty_padding")}
    empty = load_document(sd3_encode(TEXTS | {"clip_l": ""}), catalog.loaders).workflow
    assert empty.to_json()["nodes"]["2"]["inputs"]["texts"]["clip_l"] == ""
