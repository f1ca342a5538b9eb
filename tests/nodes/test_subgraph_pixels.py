"""A subgraph changes how a workflow is written, not what it computes: the standard txt2img with
its prompts and guidance inside a (nested) subgraph gives the diffusers pipeline's pixels, like
the flat graph, to the parity tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler
from sdgraphs import sd_graph

from nodeflow.workflow import Workflow

TOLERANCE = 1e-4
SETTINGS = {"prompt": "a red circle on a blue background", "negative": "blurry", "seed": 3}


def with_guidance_subgraph(flat: Workflow) -> Workflow:
    """``pos``, ``neg`` and ``cfg`` moved into ``Guidance`` (its scale a declared FLOAT input),
    itself used through ``Outer``, a subgraph holding one instance of it."""
    data = flat.to_json()
    inner = {name: data["nodes"].pop(name) for name in ("pos", "neg", "cfg")}
    for name in ("pos", "neg"):
        inner[name]["inputs"]["text_encoder"] = {"from": "inputs.text_encoder"}
    inner["cfg"]["inputs"]["unet"] = {"from": "inputs.unet"}
    inner["cfg"]["inputs"]["scale"] = {"from": "inputs.scale"}
    ports = {"unet": {"type": "UNet"}, "text_encoder": {"type": "TextEncoder"}}
    guider = {"guider": {"from": "cfg.guider", "type": "Guider"}}
    data["subgraphs"] = {
        "Guidance": {
            "inputs": {**ports, "scale": {"type": "FLOAT", "default": 1.0}},
            "outputs": guider,
            "nodes": inner,
        },
        "Outer": {
            "inputs": ports,
            "outputs": {"guider": {"from": "g.guider", "type": "Guider"}},
            "nodes": {
                "g": {
                    "type": "Guidance",
                    "inputs": {
                        "unet": {"from": "inputs.unet"},
                        "text_encoder": {"from": "inputs.text_encoder"},
                        "scale": 7.5,
                    },
                }
            },
        },
    }
    data["nodes"]["guide"] = {
        "type": "Outer",
        "inputs": {"unet": {"from": "model.unet"}, "text_encoder": {"from": "model.text_encoder"}},
    }
    data["nodes"]["denoise"]["inputs"]["guider"] = {"from": "guide.guider"}
    return Workflow.from_json(data)


def image(make_executor, workflow: Workflow) -> np.ndarray:
    result = make_executor().run(workflow, targets=["decode"])  # a fresh executor: no cache
    assert result.ok, result.error and result.error.traceback
    return result.values["decode"]["image"].pixels.numpy()


def test_a_subgraph_gives_the_pixels_of_its_flat_form_and_of_diffusers(pipe, make_executor):
    flat = sd_graph(save=False, **SETTINGS)
    nested = with_guidance_subgraph(flat)
    assert {"pos", "neg", "cfg"}.isdisjoint(nested.nodes)
    result = make_executor().run(nested, targets=["decode"])
    inner = ["guide/g/pos", "guide/g/neg", "guide/g/cfg"]
    assert sorted(result.executed) == sorted(
        ["model", *inner, "sched", "empty", "denoise", "decode"]
    )
    from_subgraph = result.values["decode"]["image"].pixels.numpy()

    # the reference: "euler" as diffusers means it, from the model's own scheduler config
    config = json.loads(
        (Path(pipe.name_or_path) / "scheduler" / "scheduler_config.json").read_text()
    )
    kept, pipe.scheduler = pipe.scheduler, EulerDiscreteScheduler.from_config(config)
    try:
        expected = diffusers_image(pipe)
    finally:
        pipe.scheduler = kept
    assert np.abs(from_subgraph - expected).max() <= TOLERANCE
    assert np.abs(from_subgraph - image(make_executor, flat)).max() <= TOLERANCE


def diffusers_image(pipe) -> np.ndarray:
    return pipe(
        prompt=SETTINGS["prompt"],
        negative_prompt=SETTINGS["negative"],
        generator=torch.Generator("cpu").manual_seed(SETTINGS["seed"]),
        num_inference_steps=4,
        guidance_scale=7.5,
        width=64,
        height=64,
        output_type="np",
    ).images
