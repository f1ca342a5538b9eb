"""TrainUNet on the tiny SD model: the trained U-Net downstream, the file LoadUNet reads, the
shared base untouched, determinism, resume, interrupt, and errors that name node and input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from pixels import assert_same_pixels
from training_graphs import add_render, run_ok, saved_bytes, training_graph

from nodeflow import events as ev
from nodeflow.builder import WorkflowBuilder
from nodeflow.executor import Executor


def _loaded_render(executor: Executor, name: str) -> torch.Tensor:
    """The same render with the saved file loaded by LoadUNet (text encoder and VAE: tiny's)."""
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="tiny")
    unet = b.add("LoadUNet", id="unet", path=f"{name}.safetensors")
    add_render(b, unet.unet, model.text_encoder, model.vae, "loaded")
    return run_ok(executor, b.build(), targets=["loaded_decode"]).values["loaded_decode"]["image"]


def test_the_trained_unet_renders_downstream_as_the_saved_file_loaded_with_loadunet(
    executor_for: Callable[..., Executor], dataset_folder: str, tmp_path: Path
) -> None:
    executor = executor_for()
    graph = training_graph(dataset_folder, node="TrainUNet", render=True, preview_every=2)
    result = run_ok(executor, graph, targets=["trained_decode", "train"])
    trained = result.values["trained_decode"]["image"].pixels
    assert result.values["train"]["grid"].pixels.shape[1] == 34 + 3 * 16  # steps 0, 2, 4

    loaded = _loaded_render(executor, "t").pixels
    assert_same_pixels(loaded.numpy(), trained.numpy())  # two loads of the same weights

    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="tiny")
    add_render(b, model.unet, model.text_encoder, model.vae, "base")
    base = run_ok(executor, b.build(), targets=["base_decode"]).values["base_decode"]["image"]
    assert (trained - base.pixels).abs().max() > 1e-3  # training did change the picture
    assert (tmp_path / "models/unet/t.state/state.json").is_file()


def test_the_text_encoder_trained_too_is_saved_where_loadtextencoder_reads_it(
    executor_for: Callable[..., Executor], dataset_folder: str, tmp_path: Path
) -> None:
    executor = executor_for()
    graph = training_graph(dataset_folder, node="TrainUNet", render=True,
                           train_text_encoder=True)  # fmt: skip
    result = run_ok(executor, graph, targets=["trained_decode", "train", "model"])
    trained = result.values["trained_decode"]["image"].pixels
    base_encoder = result.values["model"]["text_encoder"].model
    assert result.values["train"]["text_encoder"].model is not base_encoder
    assert (tmp_path / "models/text_encoders/t.safetensors").is_file()

    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="tiny")
    unet = b.add("LoadUNet", id="unet", path="t.safetensors")
    encoder = b.add("LoadTextEncoder", id="encoder", path="t.safetensors")
    add_render(b, unet.unet, encoder.text_encoder, model.vae, "loaded")
    add_render(b, unet.unet, model.text_encoder, model.vae, "base_text")
    values = run_ok(executor, b.build(), targets=["loaded_decode", "base_text_decode"]).values
    loaded = values["loaded_decode"]["image"].pixels
    assert_same_pixels(loaded.numpy(), trained.numpy())  # two loads of the same weights
    # the trained encoder matters: the trained U-Net with the base encoder draws otherwise
    assert (values["base_text_decode"]["image"].pixels - trained).abs().max() > 1e-3


def test_full_fine_tuning_leaves_the_shared_base_model_untouched(
    executor_for: Callable[..., Executor], dataset_folder: str
) -> None:
    executor = executor_for()
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="tiny")
    add_render(b, model.unet, model.text_encoder, model.vae, "base")
    before = run_ok(executor, b.build(), targets=["base_decode"]).values["base_decode"]
    unet = run_ok(executor, b.build(), targets=["model"]).values["model"]["unet"].model
    weights = {k: v.clone() for k, v in unet.state_dict().items()}
    flags = [p.requires_grad for p in unet.parameters()]
    encoder = run_ok(executor, b.build(), targets=["model"]).values["model"]["text_encoder"]
    text_weights = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    graph = training_graph(dataset_folder, node="TrainUNet", render=True, train_text_encoder=True)
    trained = run_ok(executor, graph, targets=["train", "trained_decode"]).values["train"]["unet"]
    assert all(torch.equal(v, encoder.model.state_dict()[k]) for k, v in text_weights.items())
    assert trained.model is not unet
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in weights.items())
    assert [p.requires_grad for p in unet.parameters()] == flags
    assert all(p.grad is None for p in unet.parameters())
    assert not any(p.requires_grad for p in trained.model.parameters())
    # the cached base, in the same executor after training, renders as before
    after = run_ok(executor, b.build(), targets=["base_decode"]).values["base_decode"]
    assert torch.equal(before["image"].pixels, after["image"].pixels)


def test_full_fine_tuning_is_deterministic_and_resumes_to_the_straight_runs_bytes(
    executor_for: Callable[..., Executor], dataset_folder: str, tmp_path: Path
) -> None:
    def train(name: str, steps: int, seed: int = 0, resume: bool = True) -> None:
        graph = training_graph(dataset_folder, node="TrainUNet", name=name, steps=steps,
                               seed=seed, resume=resume)  # fmt: skip
        run_ok(executor_for(), graph, targets=["train"])

    train("straight", 4)
    train("again", 4, resume=False)
    train("resumed", 2)
    train("resumed", 4)  # a fresh executor: the state read from disk
    train("other", 4, seed=1)
    straight = saved_bytes(tmp_path, "straight", "unet")
    assert saved_bytes(tmp_path, "again", "unet") == straight
    assert saved_bytes(tmp_path, "resumed", "unet") == straight
    assert saved_bytes(tmp_path, "other", "unet") != straight


def test_an_interrupted_full_fine_tune_leaves_a_loadable_unet_file(
    executor_for: Callable[..., Executor], dataset_folder: str, tmp_path: Path
) -> None:
    executor = executor_for()

    def stop_at_two(event: ev.Event) -> None:
        if isinstance(event, ev.NodeProgress) and event.node == "train" and event.value == 2:
            executor.interrupt()

    executor.subscribe(stop_at_two)
    graph = training_graph(dataset_folder, node="TrainUNet", steps=50, save_every=100)
    assert executor.run(graph, targets=["train"]).status == "cancelled"
    state = json.loads((tmp_path / "models/unet/t.state/state.json").read_text())
    assert 2 <= state["step"] < 50
    picture = _loaded_render(executor_for(), "t").pixels
    assert torch.isfinite(picture).all()


def test_a_name_leaving_the_unet_folder_is_refused_naming_node_and_input(
    executor_for: Callable[..., Executor], dataset_folder: str
) -> None:
    graph = training_graph(dataset_folder, node="TrainUNet", name="../escape")
    result = executor_for().run(graph, targets=["train"])
    assert result.status == "failed" and result.error.node == "train"
    assert "name" in result.error.message and "escape" in result.error.message
