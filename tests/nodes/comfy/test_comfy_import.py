"""What the importer makes of ComfyUI's nodes and editor features, and how it reports what it
cannot translate (fast: nothing here runs a model)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from nodeflow.errors import WorkflowInvalid
from nodeflow.imports import load_document
from nodeflow.plugins import load_catalog
from nodes.comfy.samplers import map_sampler

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "comfyui"
LOADERS = load_catalog().loaders


def template(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def imported(document: dict):
    return load_document(document, LOADERS)


def issues_of(document: dict) -> set[tuple]:
    with pytest.raises(WorkflowInvalid) as raised:
        imported(document)
    return {(i.node, i.input, i.code) for i in raised.value.issues}


def test_ksampler_becomes_comfyuis_scheduler_cfg_and_denoise_with_comfyuis_step_count():
    prompt = template("img2img_api")  # steps 4, dpmpp_2m / normal
    prompt["3"]["inputs"].update(denoise=0.5, steps=10)
    nodes = imported(prompt).workflow.to_json()["nodes"]
    assert nodes["3-sched"]["type"] == "ComfyScheduler"
    assert nodes["3-sched"]["inputs"] == {
        "unet": {"from": "14.unet"},
        "sampler_name": "dpmpp_2m",
        "scheduler": "normal",
        "steps": 20,  # ComfyUI runs the last 10 steps of a 20-step schedule
    }
    assert nodes["3-cfg"]["inputs"]["scale"] == 8
    assert nodes["3"]["type"] == "Denoise" and nodes["3"]["inputs"]["seed"] == 280823642470253
    strength = nodes["3"]["inputs"]["strength"]
    assert int(20 * strength) == 10  # Denoise runs int(steps * strength) steps
    prompt["3"]["inputs"].update(denoise=0.7, steps=20)  # int(20 / 0.7) = 28: run 20 of 28
    nodes = imported(prompt).workflow.to_json()["nodes"]
    assert nodes["3-sched"]["inputs"]["steps"] == 28
    assert int(28 * nodes["3"]["inputs"]["strength"]) == 20


def test_a_denoise_too_close_to_one_for_its_steps_runs_from_noise_with_a_warning():
    prompt = template("img2img_api")  # steps 4, denoise 0.87: int(4 / 0.87) is 4
    result = imported(prompt)
    nodes = result.workflow.to_json()["nodes"]
    assert nodes["3"]["inputs"]["strength"] == 1.0 and nodes["3-sched"]["inputs"]["steps"] == 4
    assert any(w.input == "denoise" for w in result.warnings)


def test_ksampler_advanced_maps_its_steps_window_and_noise_switches():
    prompt = template("sdxl_api")
    prompt["10"]["inputs"].update(start_at_step=3, steps=12)
    nodes = imported(prompt).workflow.to_json()["nodes"]
    assert int(12 * nodes["10"]["inputs"]["strength"]) == 9  # steps 3..12 run
    assert nodes["10-sched"]["inputs"]["steps"] == 12
    prompt["10"]["inputs"].update(
        end_at_step=6, return_with_leftover_noise="enable", add_noise="disable"
    )
    sched = imported(prompt).workflow.to_json()["nodes"]["10-sched"]["inputs"]
    assert sched["end_at_step"] == 6 and sched["return_with_leftover_noise"] is True
    assert sched["add_noise"] is False
    prompt["10"]["inputs"].update(start_at_step=0)
    assert ("10", "add_noise", "unsupported_value") in issues_of(prompt)


def test_ksampler_advanced_limits_with_a_diffusers_fallback_sampler():
    prompt = template("sdxl_api")
    prompt["10"]["inputs"].update(
        sampler_name="ddpm", end_at_step=2, return_with_leftover_noise="enable"
    )
    assert ("10", "end_at_step", "unsupported_value") in issues_of(prompt)


COMFY = "ComfyScheduler"


@pytest.mark.parametrize(
    ("sampler", "scheduler", "node", "inputs", "warned", "error"),
    [
        ("euler", "normal", COMFY, {"sampler_name": "euler", "scheduler": "normal"}, False, None),
        ("dpmpp_2m", "karras", COMFY, {"sampler_name": "dpmpp_2m", "scheduler": "karras"},
         False, None),
        ("euler", "beta", COMFY, {"sampler_name": "euler", "scheduler": "beta"}, False, None),
        ("dpmpp_2m_sde_gpu", "karras", COMFY,
         {"sampler_name": "dpmpp_2m_sde", "scheduler": "karras"}, True, None),
        ("uni_pc", "simple", COMFY, {"sampler_name": "uni_pc", "scheduler": "simple"}, False, None),
        ("uni_pc_bh2", "karras", COMFY, {"sampler_name": "uni_pc_bh2", "scheduler": "karras"},
         False, None),
        ("ddpm", "normal", "Scheduler", {"name": "ddpm"}, True, None),
        ("ddpm", "karras", "Scheduler", {"name": "ddpm"}, False, "scheduler"),
        ("dpm_fast", "normal", "Scheduler", {}, False, "sampler_name"),
        ("euler", "kl_optimal", "Scheduler", {"name": "euler"}, False, "scheduler"),
    ],
)  # fmt: skip
def test_sampler_and_scheduler_names(sampler, scheduler, node, inputs, warned, error):
    choice = map_sampler(sampler, scheduler)
    assert choice.node == node
    assert choice.inputs == inputs
    assert bool(choice.warnings) == warned
    assert (choice.error[0] if choice.error else None) == error


def test_every_unmapped_node_is_reported_at_once_never_dropped():
    prompt = template("txt2img_api")
    prompt["20"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "a"}}
    prompt["21"] = {"class_type": "MyCustomNode", "inputs": {"x": ["20", 0]}}
    found = issues_of(prompt)
    assert ("20", None, "unmapped_node") in found and ("21", None, "unmapped_node") in found
    assert not any(node == "21" and code == "missing_link" for node, _, code in found)


def test_model_only_loras_take_the_text_encoder_from_their_model_and_leave_it_alone():
    prompt = template("lora_api")
    prompt["11"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["10", 0], "lora_name": "x.safetensors", "strength_model": 0.5},
    }
    prompt["3"]["inputs"]["model"] = ["11", 0]
    nodes = imported(prompt).workflow.to_json()["nodes"]
    assert nodes["11"]["inputs"]["text_encoder"] == {"from": "10.text_encoder"}
    assert nodes["11"]["inputs"]["strength_text_encoder"] == 0.0
    assert nodes["3-cfg"]["inputs"]["unet"] == {"from": "11.unet"}


def test_clip_set_last_layer_minus_one_passes_through_and_others_become_set_last_layer():
    prompt = template("txt2img_api")
    prompt["12"] = {
        "class_type": "CLIPSetLastLayer",
        "inputs": {"clip": ["4", 1], "stop_at_clip_layer": -1},
    }
    prompt["6"]["inputs"]["clip"] = ["12", 0]
    nodes = imported(prompt).workflow.to_json()["nodes"]
    assert "12" not in nodes and nodes["6"]["inputs"]["text_encoder"] == {"from": "4.text_encoder"}
    prompt["12"]["inputs"]["stop_at_clip_layer"] = -2
    nodes = imported(prompt).workflow.to_json()["nodes"]
    assert nodes["12"] == {
        "type": "SetLastLayer",
        "inputs": {"text_encoder": {"from": "4.text_encoder"}, "stop_at_clip_layer": -2},
    }
    assert nodes["6"]["inputs"]["text_encoder"] == {"from": "12.text_encoder"}


def _ui_node(document: dict, node_id: int) -> dict:
    return next(n for n in document["nodes"] if n["id"] == node_id)


def test_ui_format_muted_bypassed_and_primitive_nodes_are_resolved_as_the_editor_queues():
    graph = template("hires_fix_ui")
    # a primitive node feeding the second sampler's seed
    link_id = graph["last_link_id"] + 1
    graph["nodes"].append(
        {"id": 50, "type": "PrimitiveNode", "outputs": [{"type": "INT", "links": [link_id]}],
         "widgets_values": [1234, "fixed"], "mode": 0}
    )  # fmt: skip
    graph["links"].append([link_id, 50, 0, 11, 9, "INT"])
    _ui_node(graph, 11)["inputs"].append(
        {"name": "seed", "type": "INT", "link": link_id, "widget": {"name": "seed"}}
    )
    # bypass the latent upscale: the second sampler takes the first sampler's latent directly
    _ui_node(graph, 10)["mode"] = 4
    # mute the first save: it is left out
    _ui_node(graph, 9)["mode"] = 2
    result = imported(graph)
    nodes = result.workflow.to_json()["nodes"]
    assert nodes["11"]["inputs"]["seed"] == 1234
    assert nodes["11"]["inputs"]["latent"] == {"from": "3.latent"}
    assert "10" not in nodes and "9" not in nodes
    ui = result.workflow.to_json()["ui"]
    assert ui["nodes"]["11"]["pos"] == _ui_node(graph, 11)["pos"]
    assert ui["groups"][0]["title"] == "Second pass" and ui["notes"][0]["text"].startswith("Hires")
    assert ui["comfyui"]["node_ids"]["11-sched"] == "11"


def test_the_newer_ui_schema_with_link_objects_reads_the_same():
    graph = template("txt2img_ui")
    newer = copy.deepcopy(graph)
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    newer["links"] = [dict(zip(keys, entry, strict=True)) for entry in graph["links"]]
    assert imported(newer).workflow == imported(graph).workflow


def test_ids_nodeflow_cannot_use_are_made_safe_and_mapped_back():
    prompt = {("5:" + k if k != "9" else "9"): v for k, v in template("txt2img_api").items()}
    text = json.dumps(prompt)
    for old in ("3", "4", "5", "6", "7", "8"):
        text = text.replace(f'["{old}", ', f'["5:{old}", ')
    result = imported(json.loads(text))
    assert "5_3" in result.workflow.nodes and result.origin["5_3-sched"] == "5:3"
    assert result.workflow.to_json()["ui"]["comfyui"]["node_ids"]["5_4"] == "5:4"
