"""Graphs the training tests share: the tiny model, a folder dataset, a trainer, a render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodeflow.builder import WorkflowBuilder
from nodeflow.executor import Executor
from nodeflow.workflow import Workflow

SIZE = 16
PROMPTS = "a red circle\na blue square"


def training_graph(
    folder: str, *, render: bool = False, node: str = "TrainLoRA", template: str = "",
    **train: Any,
) -> Workflow:  # fmt: skip
    """LoadCheckpoint tiny -> LoadImageDataset [-> CaptionTemplate] -> ``node`` (-> a render
    with its outputs, ids ``trained_*``)."""
    settings = {
        "name": "t",
        "steps": 4,
        "batch_size": 2,
        "learning_rate": 1e-2,
        "save_every": 2,
        "preview_every": 0,
        "preview_prompts": PROMPTS,
        "preview_steps": 2,
    } | train
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="tiny")
    data = b.add("LoadImageDataset", id="data", path=folder, size=SIZE)
    dataset = data.dataset
    if template:
        dataset = b.add("CaptionTemplate", id="captions", dataset=dataset,
                        template=template).dataset  # fmt: skip
    trained = b.add(node, id="train", unet=model.unet, text_encoder=model.text_encoder,
                    vae=model.vae, dataset=dataset, **settings)  # fmt: skip
    if render:
        add_render(b, trained.unet, trained.text_encoder, model.vae, "trained")
    return b.build()


def add_render(b: WorkflowBuilder, unet: Any, text_encoder: Any, vae: Any, tag: str) -> None:
    """txt2img of "a red circle" at SIZE, euler 3 steps, CFG 7.5, seed 3; ``<tag>_decode``."""
    pos = b.add("TextEncode", id=f"{tag}_pos", text_encoder=text_encoder, text="a red circle")
    neg = b.add("TextEncode", id=f"{tag}_neg", text_encoder=text_encoder, text="")
    sched = b.add("Scheduler", id=f"{tag}_sched", unet=unet, name="euler", steps=3)
    guider = b.add("CFG", id=f"{tag}_cfg", unet=unet, positive=pos.conditioning,
                   negative=neg.conditioning, scale=7.5)  # fmt: skip
    empty = b.add("EmptyLatent", id=f"{tag}_empty", width=SIZE, height=SIZE, batch_size=1)
    den = b.add("Denoise", id=f"{tag}_denoise", guider=guider.guider,
                scheduler=sched.scheduler, latent=empty.latent, seed=3)  # fmt: skip
    b.add("VAEDecode", id=f"{tag}_decode", vae=vae, latent=den.latent)


def run_ok(executor: Executor, workflow: Workflow, **kwargs: Any) -> Any:
    result = executor.run(workflow, **kwargs)
    assert result.ok, result.error.traceback if result.error else result.status
    return result


def saved_bytes(tmp_path: Path, name: str, kind: str = "loras") -> bytes:
    return (tmp_path / "models" / kind / f"{name}.safetensors").read_bytes()


def lora_bytes(tmp_path: Path, name: str) -> bytes:
    return saved_bytes(tmp_path, name, "loras")
