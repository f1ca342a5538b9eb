"""TrainLoRA's text-encoder LoRA: kohya ``lora_te_`` keys, read alike by LoadLoRA and by
diffusers' ``load_lora_weights`` (the oracle: same pixels within 1e-4)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pixels import assert_same_pixels
from safetensors.torch import load_file
from training_graphs import SIZE, add_render, run_ok, training_graph

from nodeflow.builder import WorkflowBuilder
from nodeflow.executor import Executor

TE_MODULES = "q_proj, k_proj, v_proj, out_proj"


def _train(executor: Executor, folder: str, **settings: object) -> dict:
    graph = training_graph(folder, render=True, text_encoder_modules=TE_MODULES, **settings)
    return run_ok(executor, graph, targets=["train", "trained_decode"]).values


def test_text_encoder_pairs_are_trained_and_saved_in_the_kohya_layout(
    executor_for: Callable[..., Executor], dataset_folder: str, tmp_path: Path
) -> None:
    values = _train(executor_for(), dataset_folder)
    state = load_file(tmp_path / "models/loras/t.safetensors")
    te_ups = [k for k in state if k.startswith("lora_te_") and k.endswith(".lora_up.weight")]
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight" in te_ups
    assert {k.split("_self_attn_")[1].split(".")[0] for k in te_ups} == {
        "q_proj", "k_proj", "v_proj", "out_proj"
    }  # fmt: skip
    assert all(state[k].abs().max() > 0 for k in te_ups)  # up starts at 0: they did train
    assert any(k.startswith("lora_unet_") for k in state)
    assert values["train"]["text_encoder"].patches  # the trained pairs ride on the output


def test_diffusers_load_lora_weights_renders_the_trained_file_as_loadlora_does(
    executor_for: Callable[..., Executor], dataset_folder: str, tmp_path: Path, tiny_path: Path
) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    executor = executor_for()
    trained = _train(executor, dataset_folder)["trained_decode"]["image"].pixels
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="tiny")
    lora = b.add("LoadLoRA", id="lora", unet=model.unet, text_encoder=model.text_encoder,
                 path="t.safetensors")  # fmt: skip
    add_render(b, lora.unet, lora.text_encoder, model.vae, "loaded")
    loaded = run_ok(executor, b.build(), targets=["loaded_decode"]).values["loaded_decode"]
    assert torch.equal(loaded["image"].pixels, trained)  # one computation, twice

    pipe = StableDiffusionPipeline.from_pretrained(tiny_path, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    before, _ = pipe.encode_prompt("a red circle", "cpu", 1, False)
    pipe.load_lora_weights(str(tmp_path / "models/loras/t.safetensors"))
    after, _ = pipe.encode_prompt("a red circle", "cpu", 1, False)
    assert (after - before).abs().max() > 1e-4  # diffusers did read the lora_te_ keys
    expected = pipe(
        prompt="a red circle", negative_prompt="", num_inference_steps=3, guidance_scale=7.5,
        width=SIZE, height=SIZE, generator=torch.Generator("cpu").manual_seed(3),
        output_type="np",
    ).images  # fmt: skip
    assert_same_pixels(np.asarray(loaded["image"].pixels), expected)


def test_text_encoder_modules_that_match_nothing_are_refused_naming_the_input(
    executor_for: Callable[..., Executor], dataset_folder: str
) -> None:
    graph = training_graph(dataset_folder, text_encoder_modules="to_q")
    result = executor_for().run(graph, targets=["train"])
    assert result.status == "failed" and result.error.node == "train"
    assert "text_encoder_modules" in result.error.message
    assert "text encoder" in result.error.message


def test_text_encoder_lora_training_leaves_the_shared_encoder_untouched(
    executor_for: Callable[..., Executor], dataset_folder: str
) -> None:
    executor = executor_for()
    b = WorkflowBuilder()
    b.add("LoadCheckpoint", id="model", path="tiny")
    encoder = run_ok(executor, b.build(), targets=["model"]).values["model"]["text_encoder"]
    weights = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    flags = [p.requires_grad for p in encoder.model.parameters()]
    before = encoder.model(torch.tensor([[49406, 320, 49407]])).last_hidden_state
    _train(executor, dataset_folder, steps=2)
    assert all(torch.equal(v, encoder.model.state_dict()[k]) for k, v in weights.items())
    assert [p.requires_grad for p in encoder.model.parameters()] == flags
    assert all(p.grad is None for p in encoder.model.parameters())
    after = encoder.model(torch.tensor([[49406, 320, 49407]])).last_hidden_state
    assert torch.equal(before, after)  # no hook left behind
