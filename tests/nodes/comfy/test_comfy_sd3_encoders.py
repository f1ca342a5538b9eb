"""ComfyUI's SD3 text encoder nodes: TripleCLIPLoader (clip_l, clip_g, t5xxl files) becomes
LoadTextEncoder with three paths; CLIPTextEncodeSD3 becomes TextEncode when its three texts agree,
TextEncodeEach when they differ, and is refused, naming the input, when ``empty_padding`` "none"
would zero an encoder's part (ComfyUI's ``comfy_extras/nodes_sd3.py`` gives an empty text no
tokens then)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from nodeflow.cli import main
from nodeflow.errors import WorkflowInvalid
from nodeflow.imports import load_document
from nodeflow.plugins import load_catalog

LOADERS = load_catalog().loaders
TEXT = ("clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors")


def sd3_prompt(positive: str = "a blue square", negative: str = "red") -> dict:
    """ComfyUI's SD3 Medium API workflow: the checkpoint without text encoders for MODEL and
    VAE, TripleCLIPLoader for CLIP, CLIPTextEncodeSD3 for both prompts, ModelSamplingSD3."""

    def encode(text: str) -> dict:
        return {"class_type": "CLIPTextEncodeSD3", "inputs": {
            "clip": ["11", 0], "clip_l": text, "clip_g": text, "t5xxl": text,
            "empty_padding": "none"}}  # fmt: skip

    return {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 7, "steps": 3, "cfg": 4.5, "sampler_name": "euler", "scheduler": "sgm_uniform",
            "denoise": 1.0, "model": ["13", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple",
              "inputs": {"ckpt_name": "sd3_medium.safetensors"}},
        "5": {"class_type": "EmptySD3LatentImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": encode(positive),
        "7": encode(negative),
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "sd3"}},
        "11": {"class_type": "TripleCLIPLoader", "inputs": {
            "clip_name1": TEXT[0], "clip_name2": TEXT[1], "clip_name3": TEXT[2]}},
        "13": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["4", 0], "shift": 3.0}},
    }  # fmt: skip


def nodes_of(prompt: dict) -> dict:
    return load_document(prompt, LOADERS).workflow.to_json()["nodes"]


def issues_of(prompt: dict) -> set[tuple]:
    with pytest.raises(WorkflowInvalid) as raised:
        load_document(prompt, LOADERS)
    return {(i.node, i.input, i.code) for i in raised.value.issues}


def test_triple_clip_loader_is_load_text_encoder_with_three_paths():
    nodes = nodes_of(sd3_prompt())
    assert nodes["11"] == {
        "type": "LoadTextEncoder",
        "inputs": {"path": TEXT[0], "path_2": TEXT[1], "path_3": TEXT[2]},
    }
    assert nodes["6"] == {
        "type": "TextEncode",
        "inputs": {"text_encoder": {"from": "11.text_encoder"}, "text": "a blue square"},
    }


@pytest.mark.parametrize("differing", ["clip_l", "clip_g", "t5xxl"])
def test_clip_text_encode_sd3_with_differing_texts_is_text_encode_each(differing):
    """Each encoder its own text (the numbers: test_comfy_each_text)."""
    prompt = sd3_prompt()
    prompt["6"]["inputs"][differing] = "a red circle"
    texts = dict.fromkeys(("clip_l", "clip_g", "t5xxl"), "a blue square") | {
        differing: "a red circle"
    }
    assert nodes_of(prompt)["6"] == {
        "type": "TextEncodeEach",
        "inputs": {"text_encoder": {"from": "11.text_encoder"}, "texts": texts},
    }


def test_empty_padding_none_with_an_empty_text_is_refused_and_empty_prompt_encodes_it():
    prompt = sd3_prompt(negative="")
    assert ("7", "empty_padding", "unsupported_value") in issues_of(prompt)
    prompt["7"]["inputs"]["empty_padding"] = "empty_prompt"
    assert nodes_of(prompt)["7"]["inputs"]["text"] == ""
    prompt["7"]["inputs"]["empty_padding"] = "zeros"
    assert ("7", "empty_padding", "unsupported_value") in issues_of(prompt)


def test_ui_format_widget_order_of_the_sd3_nodes():
    from nodes.comfy.ui_format import _widget_values

    assert _widget_values("TripleCLIPLoader", ["a", "b", "c"]) == {
        "clip_name1": "a", "clip_name2": "b", "clip_name3": "c"}  # fmt: skip
    assert _widget_values("CLIPTextEncodeSD3", ["l", "g", "t", "none"]) == {
        "clip_l": "l", "clip_g": "g", "t5xxl": "t", "empty_padding": "none"}  # fmt: skip


def _run(prompt: dict, root: Path, tmp_path: Path, name: str, capsys) -> Image.Image:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(prompt))
    argv = ["run", str(path), "--device", "cpu", "--quiet", "--models-dir", str(root)]
    capsys.readouterr()
    code = main([*argv, "--output-dir", str(tmp_path / name)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1, printed
    with Image.open(printed[0].split(": ", 1)[1]) as png:
        return png.copy()


def test_an_sd3_workflow_of_separate_text_encoders_runs_as_the_all_in_one_file(
    models_dir, tmp_path, capsys
):
    """The imported TripleCLIPLoader workflow runs end to end, and its picture is the one the
    same workflow gives with the text encoders read from the all-in-one file instead
    (CheckpointLoaderSimple's CLIP, CLIPTextEncode): same components, same pixels up to one
    8-bit level (the two loads' conditionings agree to float noise, ~1e-7, which SaveImage's
    truncation can tip at a level's edge; the float parity is test_sd3_text_encoder_files')."""
    import numpy as np

    from nodes.tiny_flow import make_tiny_sd3
    from nodes.tiny_flow_single import write_sd3_single_file, write_sd3_text_encoder_files

    folder = models_dir / "checkpoints" / "tiny-sd3"
    if not (folder / "model_index.json").exists():
        make_tiny_sd3(folder, seed=0)
    root = tmp_path / "models"
    checkpoints = root / "checkpoints"
    write_sd3_single_file(folder, checkpoints / "sd3_medium.safetensors", text_encoders=False)
    write_sd3_single_file(folder, checkpoints / "sd3_medium_incl_clips.safetensors")
    write_sd3_text_encoder_files(folder, *(root / "text_encoders" / name for name in TEXT))
    triple = _run(sd3_prompt(), root, tmp_path, "triple", capsys)
    assert triple.size == (64, 64)

    whole = sd3_prompt()
    whole["4"]["inputs"]["ckpt_name"] = "sd3_medium_incl_clips.safetensors"
    del whole["11"]
    for key, text in (("6", "a blue square"), ("7", "red")):
        whole[key] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": text}}
    reference = _run(whole, root, tmp_path, "whole", capsys)
    pixels = np.asarray(triple).astype(int)
    assert np.abs(pixels - np.asarray(reference).astype(int)).max() <= 1
    other = _run(sd3_prompt(positive="a green triangle"), root, tmp_path, "other", capsys)
    assert np.abs(pixels - np.asarray(other).astype(int)).max() > 8
