"""The SD3/Flux txt2img graph and the diffusers references the flow parity tests share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nodeflow.builder import WorkflowBuilder
from nodeflow.workflow import Workflow

# Which diffusers scheduler each Scheduler name means for a flow model, written independently of
# nodes/ (the same overrides diffusers documents for flow-matching models such as SANA).
FLOW_SOLVER = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
REFERENCE = {
    "euler": ("FlowMatchEulerDiscreteScheduler", {}, "shift"),
    "heun": ("FlowMatchHeunDiscreteScheduler", {}, "shift"),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", FLOW_SOLVER, "flow_shift"),
}


def reference_scheduler(folder: Path, name: str, shift: float | None = None) -> Any:
    import diffusers

    class_name, overrides, key = REFERENCE[name]
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    extra = dict(overrides)
    extra[key] = shift if shift is not None else config.get("shift", 1.0)
    if shift is not None:
        extra["use_dynamic_shifting"] = False
    return getattr(diffusers, class_name).from_config(config, **extra)


def flow_graph(
    checkpoint: str,
    *,
    prompt: str,
    negative: str = "",
    seed: int = 0,
    scheduler: str = "euler",
    steps: int = 4,
    scale: float = 5.0,
    shift: float = 0.0,
    width: int = 64,
    height: int = 64,
    max_sequence_length: int = 0,
    guidance: float | None = None,
    lora: str | None = None,
    lora_strength: float = 1.0,
    dtype: str = "auto",
    image: str | None = None,
    strength: float = 1.0,
    text_encoders: dict[str, str] | None = None,
) -> Workflow:
    """``text_encoders``: LoadTextEncoder's paths, whose encoders replace the checkpoint's."""
    b = WorkflowBuilder()
    model = loaded = b.add("LoadCheckpoint", id="model", path=checkpoint, dtype=dtype)
    if lora is not None:
        model = b.add(
            "LoadLoRA", id="lora", unet=model.unet, text_encoder=model.text_encoder, path=lora,
            strength_unet=lora_strength,
        )  # fmt: skip
    text_encoder = model.text_encoder
    if text_encoders is not None:
        text_encoder = b.add("LoadTextEncoder", id="text", **text_encoders).text_encoder
    encode = {"text_encoder": text_encoder, "max_sequence_length": max_sequence_length}
    pos = b.add("TextEncode", id="pos", text=prompt, **encode)
    neg = b.add("TextEncode", id="neg", text=negative, **encode)
    if guidance is not None:
        pos = b.add("FluxGuidance", id="fg", conditioning=pos.conditioning, guidance=guidance)
    sched = b.add(
        "Scheduler", id="sched", unet=model.unet, name=scheduler, steps=steps, shift=shift
    )
    cfg = b.add(
        "CFG", id="cfg", unet=model.unet, positive=pos.conditioning,
        negative=neg.conditioning, scale=scale,
    )  # fmt: skip
    if image is None:
        latent = b.add("EmptyLatent", id="empty", width=width, height=height, batch_size=1)
    else:
        loaded_image = b.add("LoadImage", id="load", path=image)
        latent = b.add("VAEEncode", id="encode", vae=loaded.vae, image=loaded_image.image)
    den = b.add(
        "Denoise", id="denoise", guider=cfg.guider, scheduler=sched.scheduler,
        latent=latent.latent, seed=seed, strength=strength,
    )  # fmt: skip
    b.add("VAEDecode", id="decode", vae=loaded.vae, latent=den.latent)
    return b.build()


def nodeflow_image(make_executor: Any, checkpoint: str, **settings: Any) -> np.ndarray:
    result = make_executor().run(flow_graph(checkpoint, **settings), targets=["decode"])
    assert result.ok, result.error and result.error.traceback
    return result.values["decode"]["image"].pixels.numpy()


def diffusers_image(pipeline: Any, *, seed: int, **kwargs: Any) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipeline(generator=generator, output_type="np", **kwargs).images
