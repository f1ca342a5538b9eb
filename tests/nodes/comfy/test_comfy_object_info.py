"""``/object_info`` describes every ComfyUI class the importer maps, in ComfyUI's own format, so
a ComfyUI client can build any graph the importer takes from that description alone.

The oracle is ComfyUI's node definitions (``nodes.py``, ``comfy_extras/nodes_sd3.py``,
``nodes_flux.py``, ``nodes_model_advanced.py``, ``nodes_mask.py``): the facts below are copied
from them, not from our description. And an SD3 and a Flux workflow written only from what the
served ``/object_info`` says (its input names, its defaults, its file choices, its output types
for the links) import and validate against real tiny files.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
from test_comfy_server import Background, free_port

from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodeflow.imports import load_document
from nodeflow.server.app import Server, ServerConfig
from nodeflow.server.store import RunStore
from nodeflow.validate import bind
from nodes.comfy.mapping import SEED_CONTROL, TRANSLATORS, WIDGETS

NOT_INPUTS = {SEED_CONTROL, "upload"}
"""Widgets of the UI format that are the editor's, not node inputs (LoadImage's upload button)."""

COMFYUI = {
    # class: (required inputs in order with type (a list: a combo) and default, optional, outputs)
    "TripleCLIPLoader": (
        [("clip_name1", list, None), ("clip_name2", list, None), ("clip_name3", list, None)],
        [],
        ["CLIP"],
    ),
    "DualCLIPLoader": (
        [("clip_name1", list, None), ("clip_name2", list, None), ("type", list, None)],
        [("device", list, None)],
        ["CLIP"],
    ),
    "UNETLoader": ([("unet_name", list, None), ("weight_dtype", list, None)], [], ["MODEL"]),
    "CLIPTextEncodeSD3": (
        [
            ("clip", "CLIP", None),
            ("clip_l", "STRING", None),
            ("clip_g", "STRING", None),
            ("t5xxl", "STRING", None),
            ("empty_padding", list, None),
        ],
        [],
        ["CONDITIONING"],
    ),
    "CLIPTextEncodeFlux": (
        [
            ("clip", "CLIP", None),
            ("clip_l", "STRING", None),
            ("t5xxl", "STRING", None),
            ("guidance", "FLOAT", 3.5),
        ],
        [],
        ["CONDITIONING"],
    ),
    "FluxGuidance": (
        [("conditioning", "CONDITIONING", None), ("guidance", "FLOAT", 3.5)],
        [],
        ["CONDITIONING"],
    ),
    "ModelSamplingSD3": ([("model", "MODEL", None), ("shift", "FLOAT", 3.0)], [], ["MODEL"]),
    "ModelSamplingFlux": (
        [
            ("model", "MODEL", None),
            ("max_shift", "FLOAT", 1.15),
            ("base_shift", "FLOAT", 0.5),
            ("width", "INT", 1024),
            ("height", "INT", 1024),
        ],
        [],
        ["MODEL"],
    ),
    "ModelSamplingDiscrete": (
        [("model", "MODEL", None), ("sampling", list, None), ("zsnr", "BOOLEAN", False)],
        [],
        ["MODEL"],
    ),
    "EmptySD3LatentImage": (
        [("width", "INT", 1024), ("height", "INT", 1024), ("batch_size", "INT", 1)],
        [],
        ["LATENT"],
    ),
    "ControlNetApplyAdvanced": (
        [
            ("positive", "CONDITIONING", None),
            ("negative", "CONDITIONING", None),
            ("control_net", "CONTROL_NET", None),
            ("image", "IMAGE", None),
            ("strength", "FLOAT", 1.0),
            ("start_percent", "FLOAT", 0.0),
            ("end_percent", "FLOAT", 1.0),
        ],
        [("vae", "VAE", None)],
        ["CONDITIONING", "CONDITIONING"],
    ),
    "InpaintModelConditioning": (
        [
            ("positive", "CONDITIONING", None),
            ("negative", "CONDITIONING", None),
            ("vae", "VAE", None),
            ("pixels", "IMAGE", None),
            ("mask", "MASK", None),
            ("noise_mask", "BOOLEAN", True),
        ],
        [],
        ["CONDITIONING", "CONDITIONING", "LATENT"],
    ),
    "ImageCompositeMasked": (
        [
            ("destination", "IMAGE", None),
            ("source", "IMAGE", None),
            ("x", "INT", 0),
            ("y", "INT", 0),
            ("resize_source", "BOOLEAN", False),
        ],
        [("mask", "MASK", None)],
        ["IMAGE"],
    ),
    "GrowMask": (
        [("mask", "MASK", None), ("expand", "INT", 0), ("tapered_corners", "BOOLEAN", True)],
        [],
        ["MASK"],
    ),
    "SolidMask": (
        [("value", "FLOAT", 1.0), ("width", "INT", 512), ("height", "INT", 512)],
        [],
        ["MASK"],
    ),
}
TEXT = ("clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ComfyUI models folder with tiny SD3 and Flux files under ComfyUI's folder names."""
    from nodes.tiny_flow import make_tiny_flux, make_tiny_sd3
    from nodes.tiny_flow_single import (
        write_flux_ae_file,
        write_flux_text_encoder_files,
        write_flux_transformer_file,
        write_sd3_single_file,
        write_sd3_text_encoder_files,
    )

    work = tmp_path_factory.mktemp("tiny-families")
    root = tmp_path_factory.mktemp("comfy-models")
    sd3, flux = make_tiny_sd3(work / "sd3", seed=0), make_tiny_flux(work / "flux", seed=0)
    text = root / "text_encoders"
    write_sd3_single_file(sd3, root / "checkpoints" / "sd3_medium.safetensors", text_encoders=False)
    write_sd3_text_encoder_files(sd3, *(text / name for name in TEXT))
    write_flux_transformer_file(flux, root / "diffusion_models" / "flux1-dev.safetensors")
    write_flux_ae_file(flux, root / "vae" / "ae.safetensors")
    write_flux_text_encoder_files(
        flux, text / "flux_clip_l.safetensors", text / "t5xxl.safetensors"
    )
    return root


@pytest.fixture(scope="module")
def served(sd_catalog, runtime, models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("comfy-object-info")
    port = free_port()
    env = Environment.from_dirs(models, tmp / "out", tmp / "in")
    store = RunStore(tmp / "runs.sqlite3")
    executor = Executor(sd_catalog, env=env, runtime=runtime)
    background = Background(Server(sd_catalog, executor, store, ServerConfig(port=port)), port)
    yield f"127.0.0.1:{port}", env
    background.stop()
    store.close()


def get(address: str, path: str) -> Any:
    import json

    with urllib.request.urlopen(f"http://{address}{path}", timeout=60) as response:
        return json.loads(response.read())


def test_every_class_the_importer_maps_is_described_with_its_widgets(served):
    address, _ = served
    info = get(address, "/object_info")
    assert sorted(set(TRANSLATORS) - set(info)) == []
    for class_type in TRANSLATORS:
        entry = info[class_type]
        inputs = entry["input"]["required"] | entry["input"]["optional"]
        assert set(WIDGETS[class_type]) - NOT_INPUTS <= set(inputs), class_type
        assert entry["input_order"]["required"] == list(entry["input"]["required"])
        assert len(entry["output"]) == len(entry["output_name"]) == len(entry["output_is_list"])
        for name, spec in inputs.items():  # ComfyUI's shape: [type] or [type, options]
            assert isinstance(spec, list) and 1 <= len(spec) <= 2, (class_type, name)
            assert isinstance(spec[0], str | list), (class_type, name)
    for class_type in ("TripleCLIPLoader", "CLIPTextEncodeSD3", "DualCLIPLoader", "FluxGuidance"):
        assert get(address, f"/object_info/{class_type}") == {class_type: info[class_type]}


@pytest.mark.parametrize("class_type", sorted(COMFYUI))
def test_descriptions_match_comfyuis_node_definitions(served, class_type):
    address, _ = served
    entry = get(address, f"/object_info/{class_type}")[class_type]
    required, optional, outputs = COMFYUI[class_type]
    for section, expected in (("required", required), ("optional", optional)):
        described = entry["input"][section]
        assert list(described) == [name for name, _, _ in expected], section
        for name, kind, default in expected:
            spec = described[name]
            assert isinstance(spec[0], list) if kind is list else spec[0] == kind, name
            options = spec[1] if len(spec) > 1 else {}
            assert options.get("default") == default, name
    assert entry["output"] == outputs


def test_the_file_choices_are_this_servers_files(served):
    address, _ = served
    info = get(address, "/object_info")
    for i in (1, 2, 3):
        assert set(TEXT) <= set(info["TripleCLIPLoader"]["input"]["required"][f"clip_name{i}"][0])
    assert "flux1-dev.safetensors" in info["UNETLoader"]["input"]["required"]["unet_name"][0]
    assert "ae.safetensors" in info["VAELoader"]["input"]["required"]["vae_name"][0]


class Builder:
    """Writes an API-format prompt from ``/object_info`` alone, as a ComfyUI client does: every
    required input gets the value given, else its default, else a combo's first choice; a link
    is accepted only when the source's described output type is the input's type."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.prompt: dict[str, Any] = {}

    def add(self, node_id: str, class_type: str, **given: Any) -> str:
        entry = self.info[class_type]
        described = entry["input"]["required"] | entry["input"]["optional"]
        assert set(given) <= set(described), (class_type, set(given) - set(described))
        inputs: dict[str, Any] = {}
        for name, spec in described.items():
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
            if name in given:
                value = given[name]
                if isinstance(value, tuple):  # a link: (node id, output index)
                    source = self.info[self.prompt[value[0]]["class_type"]]
                    assert source["output"][value[1]] == kind, (class_type, name)
                    value = list(value)
                elif isinstance(kind, list):
                    assert value in kind, (class_type, name, value, kind)
                inputs[name] = value
            elif name in entry["input"]["required"]:
                if "default" in options:
                    inputs[name] = options["default"]
                elif isinstance(kind, list) and kind:
                    inputs[name] = kind[0]
                elif kind == "STRING":
                    inputs[name] = ""
                else:
                    raise AssertionError(f"{class_type}.{name} ({kind}) needs a link")
        self.prompt[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id


def _sampler_and_output(b: Builder, model: str, positive: str, negative: str, vae: tuple) -> None:
    b.add("5", "EmptySD3LatentImage", width=64, height=64)
    b.add(
        "3",
        "KSampler",
        model=(model, 0),
        positive=(positive, 0),
        negative=(negative, 0),
        latent_image=("5", 0),
        steps=2,
        cfg=1.0,
        sampler_name="euler",
        scheduler="simple",
    )
    b.add("8", "VAEDecode", samples=("3", 0), vae=vae)
    b.add("9", "SaveImage", images=("8", 0))


def _imports_and_validates(prompt: dict[str, Any], env: Environment, sd_catalog) -> dict:
    imported = load_document(prompt, sd_catalog.loaders)
    bind(imported.workflow, sd_catalog, env=env)  # files checked against the models folder
    return imported.workflow.to_json()["nodes"]


def test_an_sd3_workflow_built_from_object_info_imports_and_validates(served, sd_catalog):
    address, env = served
    b = Builder(get(address, "/object_info"))
    b.add("4", "CheckpointLoaderSimple", ckpt_name="sd3_medium.safetensors")
    b.add("11", "TripleCLIPLoader", clip_name1=TEXT[0], clip_name2=TEXT[1], clip_name3=TEXT[2])
    b.add("13", "ModelSamplingSD3", model=("4", 0))
    for key, text in (("6", "a blue square"), ("7", "red")):
        b.add(key, "CLIPTextEncodeSD3", clip=("11", 0), clip_l=text, clip_g=text, t5xxl=text)
    _sampler_and_output(b, "13", "6", "7", ("4", 2))
    nodes = _imports_and_validates(b.prompt, env, sd_catalog)
    assert nodes["11"]["type"] == "LoadTextEncoder"
    assert nodes["11"]["inputs"] == {"path": TEXT[0], "path_2": TEXT[1], "path_3": TEXT[2]}
    assert nodes["13"]["inputs"]["shift"] == 3.0  # ModelSamplingSD3's default, as described


def test_a_flux_workflow_built_from_object_info_imports_and_validates(served, sd_catalog):
    address, env = served
    b = Builder(get(address, "/object_info"))
    b.add("12", "UNETLoader", unet_name="flux1-dev.safetensors")
    b.add(
        "10",
        "DualCLIPLoader",
        clip_name1="t5xxl.safetensors",
        clip_name2="flux_clip_l.safetensors",
        type="flux",
    )
    b.add("11", "VAELoader", vae_name="ae.safetensors")
    b.add("13", "ModelSamplingFlux", model=("12", 0), width=64, height=64)
    b.add("6", "CLIPTextEncodeFlux", clip=("10", 0), clip_l="a red circle", t5xxl="a red circle")
    b.add("7", "CLIPTextEncode", clip=("10", 0), text="")
    b.add("14", "FluxGuidance", conditioning=("7", 0), guidance=1.0)
    _sampler_and_output(b, "13", "6", "14", ("11", 0))
    nodes = _imports_and_validates(b.prompt, env, sd_catalog)
    assert nodes["12"] == {
        "type": "LoadUNet",
        "inputs": {"path": "flux1-dev.safetensors", "dtype": "auto"},
    }
    assert nodes["13"]["type"] == "FlowShift"
