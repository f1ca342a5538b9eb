"""ComfyUI's ControlNet, mask/inpainting and SD3/Flux loader nodes map onto nodeflow's nodes
with their inputs; a ControlNet + mask workflow imports and runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodeflow.cli import main
from nodeflow.errors import WorkflowInvalid
from nodeflow.imports import load_document
from nodeflow.plugins import load_catalog
from nodes.comfy.ui_format import _widget_values

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "comfyui"
LOADERS = load_catalog().loaders


def txt2img() -> dict:
    return json.loads((FIXTURES / "txt2img_api.json").read_text())


def nodes_of(prompt: dict) -> dict:
    return load_document(prompt, LOADERS).workflow.to_json()["nodes"]


def issues_of(prompt: dict) -> set[tuple]:
    with pytest.raises(WorkflowInvalid) as raised:
        load_document(prompt, LOADERS)
    return {(i.node, i.input, i.code) for i in raised.value.issues}


def with_controlnet(prompt: dict, advanced: bool) -> dict:
    prompt["20"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "cn.pth"}}
    prompt["21"] = {"class_type": "LoadImage", "inputs": {"image": "example.png"}}
    if advanced:
        prompt["22"] = {
            "class_type": "ControlNetApplyAdvanced",
            "inputs": {"positive": ["6", 0], "negative": ["7", 0], "control_net": ["20", 0],
                       "image": ["21", 0], "strength": 0.8, "start_percent": 0.1,
                       "end_percent": 0.9},
        }  # fmt: skip
        prompt["3"]["inputs"].update(positive=["22", 0], negative=["22", 1])
    else:
        prompt["22"] = {
            "class_type": "ControlNetApply",
            "inputs": {"conditioning": ["6", 0], "control_net": ["20", 0], "image": ["21", 0],
                       "strength": 0.7},
        }  # fmt: skip
        prompt["3"]["inputs"].update(positive=["22", 0])
    return prompt


def test_controlnet_apply_advanced_steers_both_prompts_over_its_window():
    nodes = nodes_of(with_controlnet(txt2img(), advanced=True))
    assert nodes["20"] == {"type": "LoadControlNet", "inputs": {"path": "cn.pth"}}
    assert nodes["22"] == {
        "type": "ApplyControlNet",
        "inputs": {"positive": {"from": "6.conditioning"}, "negative": {"from": "7.conditioning"},
                   "control_net": {"from": "20.control_net"}, "image": {"from": "21.image"},
                   "strength": 0.8, "start": 0.1, "end": 0.9},
    }  # fmt: skip
    assert nodes["3-cfg"]["inputs"]["positive"] == {"from": "22.positive"}
    assert nodes["3-cfg"]["inputs"]["negative"] == {"from": "22.negative"}


def test_controlnet_apply_steers_only_the_conditioning_it_is_given():
    nodes = nodes_of(with_controlnet(txt2img(), advanced=False))
    inputs = nodes["22"]["inputs"]
    assert nodes["22"]["type"] == "ApplyControlNet"
    assert inputs["positive"] == inputs["negative"] == {"from": "6.conditioning"}
    assert inputs["strength"] == 0.7 and "start" not in inputs and "end" not in inputs
    assert nodes["3-cfg"]["inputs"]["positive"] == {"from": "22.positive"}
    assert nodes["3-cfg"]["inputs"]["negative"] == {"from": "7.conditioning"}  # untouched


def masked_prompt() -> dict:
    """txt2img turned into a masked repaint of a loaded picture through every mask node."""
    prompt = txt2img()
    nodes = {
        "30": ("LoadImage", {"image": "example.png"}),
        "31": ("ImageToMask", {"image": ["30", 0], "channel": "green"}),
        "32": ("GrowMask", {"mask": ["31", 0], "expand": 2, "tapered_corners": False}),
        "33": ("InvertMask", {"mask": ["32", 0]}),
        "34": ("ThresholdMask", {"mask": ["33", 0], "value": 0.3}),
        "35": ("FeatherMask", {"mask": ["34", 0], "left": 4, "top": 0, "right": 2, "bottom": 1}),
        "36": ("SolidMask", {"value": 0.5, "width": 64, "height": 64}),
        "37": ("MaskComposite", {"destination": ["35", 0], "source": ["36", 0], "x": 0, "y": 0,
                                 "operation": "max"}),
        "38": ("VAEEncode", {"pixels": ["30", 0], "vae": ["4", 2]}),
        "39": ("SetLatentNoiseMask", {"samples": ["38", 0], "mask": ["37", 0]}),
        "40": ("ImageCompositeMasked", {"destination": ["30", 0], "source": ["8", 0], "x": 0,
                                        "y": 0, "resize_source": False, "mask": ["37", 0]}),
        "41": ("MaskToImage", {"mask": ["30", 1]}),
        "42": ("SaveImage", {"images": ["41", 0], "filename_prefix": "mask"}),
    }  # fmt: skip
    for key, (kind, inputs) in nodes.items():
        prompt[key] = {"class_type": kind, "inputs": inputs}
    prompt["3"]["inputs"]["latent_image"] = ["39", 0]
    prompt["9"]["inputs"]["images"] = ["40", 0]
    return prompt


def test_mask_nodes_keep_their_inputs_and_loadimage_gives_its_mask():
    nodes = nodes_of(masked_prompt())
    assert nodes["31"] == {
        "type": "ImageToMask", "inputs": {"image": {"from": "30.image"}, "channel": "green"}
    }  # fmt: skip
    assert nodes["32"]["inputs"] == {"mask": {"from": "31.mask"}, "expand": 2,
                                     "tapered_corners": False}  # fmt: skip
    assert nodes["33"] == {"type": "InvertMask", "inputs": {"mask": {"from": "32.mask"}}}
    assert nodes["34"]["inputs"]["value"] == 0.3
    assert nodes["35"]["inputs"] == {"mask": {"from": "34.mask"}, "left": 4, "top": 0,
                                     "right": 2, "bottom": 1}  # fmt: skip
    assert nodes["36"] == {"type": "SolidMask", "inputs": {"value": 0.5, "width": 64,
                                                           "height": 64}}  # fmt: skip
    assert nodes["37"]["inputs"] == {"destination": {"from": "35.mask"},
                                     "source": {"from": "36.mask"}, "x": 0, "y": 0,
                                     "operation": "max"}  # fmt: skip
    assert nodes["39"] == {"type": "SetLatentNoiseMask",
                           "inputs": {"latent": {"from": "38.latent"},
                                      "mask": {"from": "37.mask"}}}  # fmt: skip
    assert nodes["40"]["type"] == "ImageCompositeMasked"
    assert nodes["40"]["inputs"] == {"destination": {"from": "30.image"},
                                     "source": {"from": "8.image"}, "x": 0, "y": 0,
                                     "mask": {"from": "37.mask"}}  # fmt: skip
    assert nodes["41"] == {"type": "MaskToImage", "inputs": {"mask": {"from": "30.mask"}}}
    assert nodes["3"]["inputs"]["latent"] == {"from": "39.latent"}


def test_mask_values_nodeflow_lacks_are_reported():
    prompt = masked_prompt()
    prompt["31"]["inputs"]["channel"] = "alpha"
    prompt["40"]["inputs"]["resize_source"] = True
    found = issues_of(prompt)
    assert ("31", "channel", "unsupported_value") in found
    assert ("40", "resize_source", "unsupported_value") in found


def test_inpaint_model_conditioning_gives_both_prompts_and_the_latent():
    prompt = txt2img()
    prompt["30"] = {"class_type": "LoadImage", "inputs": {"image": "example.png"}}
    prompt["31"] = {
        "class_type": "InpaintModelConditioning",
        "inputs": {"positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2],
                   "pixels": ["30", 0], "mask": ["30", 1]},
    }  # fmt: skip
    prompt["3"]["inputs"].update(positive=["31", 0], negative=["31", 1], latent_image=["31", 2])
    nodes = nodes_of(prompt)
    assert nodes["31"] == {
        "type": "InpaintModelConditioning",
        "inputs": {"positive": {"from": "6.conditioning"}, "negative": {"from": "7.conditioning"},
                   "vae": {"from": "4.vae"}, "image": {"from": "30.image"},
                   "mask": {"from": "30.mask"}, "noise_mask": True},
    }  # fmt: skip
    assert nodes["3"]["inputs"]["latent"] == {"from": "31.latent"}
    assert nodes["3-cfg"]["inputs"]["negative"] == {"from": "31.negative"}
    prompt["31"]["inputs"]["noise_mask"] = False
    assert nodes_of(prompt)["31"]["inputs"]["noise_mask"] is False


def flux_prompt(weight_dtype: str = "fp8_e4m3fn", kind: str = "flux") -> dict:
    prompt = txt2img()
    prompt["4"] = {
        "class_type": "UNETLoader",
        "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": weight_dtype},
    }
    prompt["10"] = {
        "class_type": "DualCLIPLoader",
        "inputs": {
            "clip_name1": "t5xxl_fp16.safetensors",
            "clip_name2": "clip_l.safetensors",
            "type": kind,
        },
    }
    prompt["11"] = {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}}
    prompt["12"] = {
        "class_type": "FluxGuidance",
        "inputs": {"conditioning": ["6", 0], "guidance": 2.5},
    }
    prompt["5"] = {
        "class_type": "EmptySD3LatentImage",
        "inputs": {"width": 64, "height": 48, "batch_size": 2},
    }
    prompt["6"]["inputs"]["clip"] = prompt["7"]["inputs"]["clip"] = ["10", 0]
    prompt["3"]["inputs"]["positive"] = ["12", 0]
    prompt["8"]["inputs"]["vae"] = ["11", 0]
    return prompt  # fmt: skip


def test_flux_files_load_through_unet_and_text_encoder_loaders():
    nodes = nodes_of(flux_prompt())
    assert nodes["4"] == {
        "type": "LoadUNet", "inputs": {"path": "flux1-dev.safetensors", "dtype": "fp8_e4m3fn"}
    }  # fmt: skip
    assert nodes["10"] == {
        "type": "LoadTextEncoder",
        "inputs": {"path": "t5xxl_fp16.safetensors", "path_2": "clip_l.safetensors"},
    }
    assert nodes["12"] == {
        "type": "FluxGuidance",
        "inputs": {"conditioning": {"from": "6.conditioning"}, "guidance": 2.5},
    }
    assert nodes["5"] == {"type": "EmptyLatent",
                          "inputs": {"width": 64, "height": 48, "batch_size": 2}}  # fmt: skip
    assert nodes["3-cfg"]["inputs"]["unet"] == {"from": "4.unet"}
    assert nodes["6"]["inputs"]["text_encoder"] == {"from": "10.text_encoder"}
    assert nodes_of(flux_prompt("default"))["4"]["inputs"]["dtype"] == "auto"


def test_flux_loader_values_nodeflow_lacks_are_reported():
    found = issues_of(flux_prompt("fp8_e5m2", kind="sd3"))
    assert ("4", "weight_dtype", "unsupported_value") in found
    assert ("10", "type", "unsupported_value") in found


def test_clip_text_encode_flux_is_one_prompt_and_flux_guidance():
    prompt = txt2img()
    prompt["6"] = {"class_type": "CLIPTextEncodeFlux", "inputs": {
        "clip": ["4", 1], "clip_l": "a cat", "t5xxl": "a cat", "guidance": 2.5}}  # fmt: skip
    nodes = nodes_of(prompt)
    assert nodes["6-text"]["type"] == "TextEncode"
    assert nodes["6-text"]["inputs"]["text"] == "a cat"
    assert nodes["6"]["type"] == "FluxGuidance"
    assert nodes["6"]["inputs"] == {"conditioning": {"from": "6-text.conditioning"},
                                    "guidance": 2.5}  # fmt: skip
    prompt["6"]["inputs"]["t5xxl"] = "a dog"
    assert ("6", "clip_l", "unsupported_value") in issues_of(prompt)


@pytest.mark.parametrize("kind", ["ConditioningZeroOut"])
def test_sd3_and_flux_nodes_without_an_equivalent_stay_unmapped(kind):
    prompt = txt2img()
    prompt["20"] = {"class_type": kind, "inputs": {}}
    assert ("20", None, "unmapped_node") in issues_of(prompt)


@pytest.mark.parametrize(
    ("kind", "inputs", "shift"),
    [
        ("ModelSamplingSD3", {"shift": 2.5}, 2.5),
        # ModelSamplingFlux: mu = base + (max - base) (patches - 256) / 3840, patches = w h / 256
        ("ModelSamplingFlux", {"max_shift": 1.15, "base_shift": 0.5, "width": 1024,
                               "height": 1024}, 1.15),
        ("ModelSamplingFlux", {"max_shift": 1.15, "base_shift": 0.5, "width": 512,
                               "height": 512}, 0.5 + 0.65 * 768 / 3840),
    ],
)  # fmt: skip
def test_model_sampling_nodes_become_a_flow_shift_on_the_model(kind, inputs, shift):
    prompt = txt2img()
    prompt["20"] = {"class_type": kind, "inputs": {"model": ["4", 0], **inputs}}
    prompt["3"]["inputs"]["model"] = ["20", 0]
    nodes = nodes_of(prompt)
    assert nodes["20"]["type"] == "FlowShift"
    assert nodes["20"]["inputs"]["unet"] == {"from": "4.unet"}
    assert nodes["20"]["inputs"]["shift"] == pytest.approx(shift)
    assert nodes["3-sched"]["inputs"]["unet"] == {"from": "20.unet"}


@pytest.mark.parametrize(("sampling", "zsnr"), [("v_prediction", True), ("eps", False)])
def test_model_sampling_discrete_sets_the_prediction_and_zero_snr_on_the_model(sampling, zsnr):
    """ComfyUI's ModelSamplingDiscrete patches the MODEL: here the same-named node rides on the
    UNet, and the KSampler's scheduler and CFG take its output."""
    prompt = txt2img()
    prompt["20"] = {
        "class_type": "ModelSamplingDiscrete",
        "inputs": {"model": ["4", 0], "sampling": sampling, "zsnr": zsnr},
    }
    prompt["3"]["inputs"]["model"] = ["20", 0]
    nodes = nodes_of(prompt)
    assert nodes["20"] == {
        "type": "ModelSamplingDiscrete",
        "inputs": {"unet": {"from": "4.unet"}, "sampling": sampling, "zsnr": zsnr},
    }
    assert nodes["3-sched"]["inputs"]["unet"] == {"from": "20.unet"}
    assert nodes["3-cfg"]["inputs"]["unet"] == {"from": "20.unet"}


@pytest.mark.parametrize("sampling", ["lcm", "x0", "img_to_img"])
def test_model_sampling_discretes_other_samplings_are_refused_by_name(sampling):
    prompt = txt2img()
    prompt["20"] = {
        "class_type": "ModelSamplingDiscrete",
        "inputs": {"model": ["4", 0], "sampling": sampling, "zsnr": False},
    }
    prompt["3"]["inputs"]["model"] = ["20", 0]
    with pytest.raises(WorkflowInvalid) as raised:
        load_document(prompt, LOADERS)
    [issue] = raised.value.issues
    assert (issue.node, issue.input, issue.code) == ("20", "sampling", "unsupported_value")
    assert repr(sampling) in issue.message and "eps and v_prediction" in issue.message


@pytest.mark.parametrize(
    ("kind", "values", "expected"),
    [
        ("ModelSamplingDiscrete", ["v_prediction", True], {"sampling": "v_prediction",
                                                           "zsnr": True}),
        ("ControlNetApplyAdvanced", [0.5, 0.1, 0.8],
         {"strength": 0.5, "start_percent": 0.1, "end_percent": 0.8}),
        ("ControlNetApply", [0.6], {"strength": 0.6}),
        ("ControlNetLoader", ["cn.pth"], {"control_net_name": "cn.pth"}),
        ("GrowMask", [3, False], {"expand": 3, "tapered_corners": False}),
        ("FeatherMask", [1, 2, 3, 4], {"left": 1, "top": 2, "right": 3, "bottom": 4}),
        ("SolidMask", [0.5, 64, 32], {"value": 0.5, "width": 64, "height": 32}),
        ("MaskComposite", [1, 2, "add"], {"x": 1, "y": 2, "operation": "add"}),
        ("ImageCompositeMasked", [5, 6, False], {"x": 5, "y": 6, "resize_source": False}),
        ("InpaintModelConditioning", [False], {"noise_mask": False}),
        ("UNETLoader", ["f.safetensors", "default"],
         {"unet_name": "f.safetensors", "weight_dtype": "default"}),
        ("DualCLIPLoader", ["a", "b", "flux"], {"clip_name1": "a", "clip_name2": "b",
                                                "type": "flux"}),
        ("FluxGuidance", [3.5], {"guidance": 3.5}),
        ("EmptySD3LatentImage", [64, 32, 1], {"width": 64, "height": 32, "batch_size": 1}),
    ],
)  # fmt: skip
def test_ui_format_widget_values_read_in_comfyuis_order(kind, values, expected):
    assert _widget_values(kind, values) == expected


def test_a_controlnet_and_masked_repaint_workflow_imports_and_runs(comfy_dirs, tmp_path, capsys):
    prompt = with_controlnet(masked_prompt(), advanced=True)
    prompt["4"]["inputs"]["ckpt_name"] = "demo"  # the built-in model the demo ControlNet fits
    prompt["20"]["inputs"]["control_net_name"] = "demo-controlnet"
    path = tmp_path / "controlnet_mask.json"
    path.write_text(json.dumps(prompt))
    out = tmp_path / "out"
    argv = ["run", str(path), "--device", "cpu", "--quiet", "--output-dir", str(out)]
    argv += ["--models-dir", str(comfy_dirs["models"]), "--input-dir", str(comfy_dirs["input"])]
    code = main(argv)
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 2, printed
    from PIL import Image

    for line in printed:
        with Image.open(line.split(": ", 1)[1]) as png:
            assert png.size == (64, 64)


def test_a_flux_workflow_of_separate_files_imports_and_runs(models_dir, tmp_path, capsys):
    """ComfyUI's Flux dev layout (UNETLoader in fp8, DualCLIPLoader, VAELoader, FluxGuidance,
    EmptySD3LatentImage, KSampler at cfg 1) on a tiny Flux written out as its four files.

    KSampler's ComfyScheduler samples the flow model as ComfyUI does (its flow sigmas, Flux's
    default shift), so the imported file runs as it is."""
    from nodes.tiny_flow import make_tiny_flux
    from nodes.tiny_flow_single import (
        write_flux_ae_file,
        write_flux_text_encoder_files,
        write_flux_transformer_file,
    )

    folder = models_dir / "checkpoints" / "tiny-flux"
    if not (folder / "model_index.json").exists():
        make_tiny_flux(folder, seed=0)
    root = tmp_path / "models"
    write_flux_transformer_file(folder, root / "unet" / "flux1-dev.safetensors")
    write_flux_ae_file(folder, root / "vae" / "ae.safetensors")
    text = root / "text_encoders"
    write_flux_text_encoder_files(
        folder, text / "clip_l.safetensors", text / "t5xxl_fp16.safetensors"
    )
    prompt = flux_prompt()
    prompt["3"]["inputs"].update(cfg=1.0, scheduler="simple", steps=3)
    prompt["5"]["inputs"].update(height=64, batch_size=1)
    path = tmp_path / "flux_api.json"
    path.write_text(json.dumps(prompt))
    argv = ["--device", "cpu", "--quiet", "--output-dir", str(tmp_path / "o")]
    argv += ["--models-dir", str(root)]
    native = tmp_path / "flux.json"
    assert main(["import-comfy", str(path), "-o", str(native)]) == 0
    workflow = json.loads(native.read_text())
    assert workflow["nodes"]["4"]["inputs"]["dtype"] == "fp8_e4m3fn"
    assert workflow["nodes"]["3-sched"]["type"] == "ComfyScheduler"
    capsys.readouterr()
    code = main(["run", str(path), *argv])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1, printed
    from PIL import Image

    with Image.open(printed[0].split(": ", 1)[1]) as png:
        assert png.size == (64, 64)
