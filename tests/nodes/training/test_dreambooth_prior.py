"""DreamBooth's prior preservation on the tiny model: the class pictures are the base model's
own txt2img pictures, drawn once and cached; training with them is deterministic and resumes;
CaptionTemplate puts the rare token in; bad settings are refused naming node and input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from training_graphs import SIZE, lora_bytes, run_ok, training_graph

from nodeflow import events as ev
from nodeflow.builder import WorkflowBuilder
from nodeflow.executor import Executor

CLASS = {"class_prompts": "a red circle\na blue square", "class_images": 3, "preview_steps": 2}


def _txt2img(executor: Executor, prompt: str, seed: int) -> torch.Tensor:
    """The standard graph's picture (euler 2 steps, CFG 7.5, negative ""), as uint8 levels."""
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="tiny")
    pos = b.add("TextEncode", id="pos", text_encoder=model.text_encoder, text=prompt)
    neg = b.add("TextEncode", id="neg", text_encoder=model.text_encoder, text="")
    sched = b.add("Scheduler", id="sched", unet=model.unet, name="euler", steps=2)
    cfg = b.add("CFG", id="cfg", unet=model.unet, positive=pos.conditioning,
                negative=neg.conditioning, scale=7.5)  # fmt: skip
    empty = b.add("EmptyLatent", id="empty", width=SIZE, height=SIZE, batch_size=1)
    den = b.add("Denoise", id="den", guider=cfg.guider, scheduler=sched.scheduler,
                latent=empty.latent, seed=seed)  # fmt: skip
    b.add("VAEDecode", id="decode", vae=model.vae, latent=den.latent)
    pixels = run_ok(executor, b.build(), targets=["decode"]).values["decode"]["image"].pixels
    return pixels[0] * 255


def test_class_pictures_are_the_base_models_pictures_drawn_once_and_cached(
    executor_for: Callable[..., Executor], dataset_folder: str, tmp_path: Path
) -> None:
    executor = executor_for()
    seen: list[ev.Event] = []
    executor.subscribe(seen.append)
    run_ok(executor, training_graph(dataset_folder, **CLASS), targets=["train"])
    drawn = [e for e in seen if isinstance(e, ev.NodeProgress) and "class_images" in e.metrics]
    assert [(e.value, e.max) for e in drawn] == [(1, 3), (2, 3), (3, 3)]
    (cache,) = (tmp_path / "models" / "training_priors").glob("*.safetensors")
    pixels = load_file(cache)["pixels"]
    assert pixels.shape == (3, SIZE, SIZE, 3) and pixels.dtype == torch.uint8
    # picture i: class prompt i mod 2 from seed 0 + i, as the plain txt2img graph draws it
    for index, prompt in enumerate(["a red circle", "a blue square", "a red circle"]):
        expected = _txt2img(executor, prompt, index)
        assert (pixels[index].float() - expected).abs().max() <= 0.5 + 1e-3

    stamp = cache.stat().st_mtime_ns
    seen.clear()
    graph = training_graph(dataset_folder, node="TrainUNet", name="u", **CLASS)
    run_ok(executor_for(), graph, targets=["train"])  # another node, another executor
    assert cache.stat().st_mtime_ns == stamp
    assert len(list(cache.parent.glob("*.safetensors"))) == 1


def test_training_with_a_prior_is_deterministic_resumes_and_differs_from_without(
    executor_for: Callable[..., Executor], dataset_folder: str, tmp_path: Path
) -> None:
    def train(name: str, steps: int, **extra: object) -> None:
        graph = training_graph(dataset_folder, name=name, steps=steps, **extra)
        run_ok(executor_for(), graph, targets=["train"])

    train("straight", 4, **CLASS)
    train("resumed", 2, **CLASS)
    train("resumed", 4, **CLASS)
    train("heavier", 4, **CLASS | {"prior_loss_weight": 4.0})
    train("plain", 4, preview_steps=2)
    straight = lora_bytes(tmp_path, "straight")
    assert lora_bytes(tmp_path, "resumed") == straight
    assert lora_bytes(tmp_path, "heavier") != straight
    assert lora_bytes(tmp_path, "plain") != straight


def test_caption_template_puts_the_rare_token_into_every_caption(
    executor_for: Callable[..., Executor], dataset_folder: str
) -> None:
    graph = training_graph(dataset_folder, template="sks style, {caption}")
    values = run_ok(executor_for(), graph, targets=["captions"]).values
    captions = values["captions"]["dataset"].captions
    assert captions[0] == "sks style, a red picture with a square"
    assert all(c.startswith("sks style, a ") for c in captions)


def test_class_prompts_without_class_images_are_refused_naming_node_and_input(
    executor_for: Callable[..., Executor], dataset_folder: str
) -> None:
    graph = training_graph(dataset_folder, **CLASS | {"class_images": 0})
    result = executor_for().run(graph, targets=["train"])
    assert result.status == "failed" and result.error.node == "train"
    assert "class_images" in result.error.message
