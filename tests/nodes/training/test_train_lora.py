"""TrainLoRA through the executor, on the tiny SD model: events, saving, interrupt, cache,
resume, determinism, and its LoRA applied downstream exactly as LoadLoRA applies the file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from training_graphs import SIZE, add_render, lora_bytes, run_ok, training_graph

from nodeflow import events as ev
from nodeflow.builder import WorkflowBuilder
from nodeflow.executor import Executor
from nodes.lora import read_lora_file


def test_training_streams_progress_loss_and_previews_in_order_and_outputs_a_labelled_grid(
    executor_for: Callable[..., Executor], dataset_folder: str, tmp_path: Path
) -> None:
    executor = executor_for()
    seen: list[ev.Event] = []
    executor.subscribe(seen.append)
    graph = training_graph(dataset_folder, preview_every=2)
    result = run_ok(executor, graph, targets=["train"])

    mine = [e for e in seen if getattr(e, "node", None) == "train"]
    kinds = [e.type for e in mine]
    assert kinds[0] == "node.started" and kinds[-1] == "node.finished"
    progress = [e for e in mine if isinstance(e, ev.NodeProgress)]
    assert [e.value for e in progress] == [1, 2, 3, 4]
    assert all(e.max == 4 for e in progress)
    assert all(e.metrics and e.metrics["loss"] > 0 and e.metrics["lr"] == 1e-2 for e in progress)
    previews = [e for e in mine if isinstance(e, ev.NodePreview)]
    assert [e.step for e in previews] == [0, 2, 4]
    assert previews[0].image.size == (2 * SIZE, SIZE)  # one row: the two prompts side by side
    # the preview of step 2 comes after step 2's progress and before step 3's
    order = [(e.type, e.value if isinstance(e, ev.NodeProgress) else getattr(e, "step", None))
             for e in mine]  # fmt: skip
    assert order.index(("node.preview", 0)) < order.index(("node.progress", 1))
    assert order.index(("node.preview", 2)) < order.index(("node.progress", 3))
    assert seen[-1].type == "run.finished"

    grid = result.values["train"]["grid"].pixels
    # a header row of labels, then 3 rows (steps 0, 2, 4); label column, then 2 prompts
    assert grid.shape[0] == 1 and grid.shape[1] == 34 + 3 * SIZE and grid.shape[2] == 72 + 2 * SIZE
    state = json.loads((tmp_path / "models/loras/t.state/state.json").read_text())
    assert state["step"] == 4 and state["preview_steps"] == [0, 2, 4]
    assert len(state["losses"]) == 4


def test_a_lora_from_trainlora_renders_exactly_as_the_same_file_loaded_with_loadlora(
    executor_for: Callable[..., Executor], dataset_folder: str
) -> None:
    executor = executor_for()
    first = run_ok(executor, training_graph(dataset_folder, render=True),
                   targets=["trained_decode"])  # fmt: skip
    trained = first.values["trained_decode"]["image"].pixels

    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="tiny")
    loaded = b.add("LoadLoRA", id="lora", unet=model.unet, text_encoder=model.text_encoder,
                   path="t.safetensors")  # fmt: skip
    add_render(b, loaded.unet, loaded.text_encoder, model.vae, "loaded")
    add_render(b, model.unet, model.text_encoder, model.vae, "base")
    result = run_ok(executor, b.build(), targets=["loaded_decode", "base_decode"])
    loaded_pixels = result.values["loaded_decode"]["image"].pixels
    base = result.values["base_decode"]["image"].pixels
    assert torch.equal(trained, loaded_pixels)  # one computation on the same tensors, twice
    assert (trained - base).abs().max() > 1e-3  # and the LoRA did change the picture


def test_an_interrupt_leaves_the_last_steps_lora_saved_and_loadable(
    executor_for: Callable[..., Executor], dataset_folder: str, tmp_path: Path
) -> None:
    executor = executor_for()

    def stop_at_three(event: ev.Event) -> None:
        if isinstance(event, ev.NodeProgress) and event.node == "train" and event.value == 3:
            executor.interrupt()

    executor.subscribe(stop_at_three)
    result = executor.run(training_graph(dataset_folder, steps=50, save_every=100),
                          targets=["train"])  # fmt: skip
    assert result.status == "cancelled"
    file = tmp_path / "models" / "loras" / "t.safetensors"
    lora = read_lora_file(file)  # what LoadLoRA reads
    assert lora.entries and all(torch.isfinite(e.weights.up).all() for e in lora.entries)
    state = json.loads((tmp_path / "models/loras/t.state/state.json").read_text())
    assert state["step"] == 4  # the step in flight when the interrupt came finished first

    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="tiny")
    loaded = b.add("LoadLoRA", id="lora", unet=model.unet, text_encoder=model.text_encoder,
                   path="t.safetensors")  # fmt: skip
    add_render(b, loaded.unet, loaded.text_encoder, model.vae, "after")
    run_ok(executor_for(), b.build(), targets=["after_decode"])


def test_a_rerun_with_the_same_inputs_is_a_cache_hit(
    executor_for: Callable[..., Executor], dataset_folder: str
) -> None:
    executor = executor_for()
    seen: list[ev.Event] = []
    executor.subscribe(seen.append)
    graph = training_graph(dataset_folder, steps=2)
    run_ok(executor, graph, targets=["train"])
    seen.clear()
    run_ok(executor, graph, targets=["train"])
    assert [e.node for e in seen if isinstance(e, ev.NodeCached)] == ["model", "data", "train"]
    assert not [e for e in seen if isinstance(e, ev.NodeStarted)]


def test_resumed_training_gives_the_same_lora_bytes_as_a_straight_run(
    executor_for: Callable[..., Executor], dataset_folder: str, tmp_path: Path
) -> None:
    executor = executor_for()
    run_ok(executor, training_graph(dataset_folder, name="straight", steps=4), targets=["train"])
    run_ok(executor, training_graph(dataset_folder, name="resumed", steps=2), targets=["train"])
    fresh = executor_for()  # a new process's view: nothing cached, the state read from disk
    run_ok(fresh, training_graph(dataset_folder, name="resumed", steps=4), targets=["train"])
    assert lora_bytes(tmp_path, "resumed") == lora_bytes(tmp_path, "straight")


def test_training_is_deterministic_for_a_seed_and_changes_with_it(
    executor_for: Callable[..., Executor], dataset_folder: str, tmp_path: Path
) -> None:
    for name, seed in (("one", 5), ("two", 5), ("three", 6)):
        graph = training_graph(dataset_folder, name=name, seed=seed, resume=False)
        run_ok(executor_for(), graph, targets=["train"])
    assert lora_bytes(tmp_path, "one") == lora_bytes(tmp_path, "two")
    assert lora_bytes(tmp_path, "one") != lora_bytes(tmp_path, "three")


def test_training_leaves_the_shared_base_model_untouched(
    executor_for: Callable[..., Executor], dataset_folder: str
) -> None:
    executor = executor_for()
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="tiny")
    add_render(b, model.unet, model.text_encoder, model.vae, "base")
    before = run_ok(executor, b.build(), targets=["base_decode"]).values["base_decode"]
    before = before["image"].pixels
    unet = run_ok(executor, b.build(), targets=["model"]).values["model"]["unet"].model
    weights = {k: v.clone() for k, v in unet.state_dict().items()}
    flags = [p.requires_grad for p in unet.parameters()]
    run_ok(executor, training_graph(dataset_folder, steps=2), targets=["train"])
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in weights.items())
    assert [p.requires_grad for p in unet.parameters()] == flags
    assert all(p.grad is None for p in unet.parameters())
    after = run_ok(executor_for(), b.build(), targets=["base_decode"]).values["base_decode"]
    after = after["image"].pixels
    assert torch.equal(before, after)


def test_a_state_made_with_other_settings_is_not_resumed_silently(
    executor_for: Callable[..., Executor], dataset_folder: str
) -> None:
    run_ok(executor_for(), training_graph(dataset_folder, steps=2), targets=["train"])
    result = executor_for().run(training_graph(dataset_folder, steps=4, rank=2), targets=["train"])
    assert not result.ok and "rank" in result.error.message and "t.state" in result.error.message
    run_ok(executor_for(), training_graph(dataset_folder, steps=4, rank=2, resume=False),
           targets=["train"])  # fmt: skip
