"""The standard Stable Diffusion graphs, built in code for the tests."""

from __future__ import annotations

from nodeflow.builder import WorkflowBuilder
from nodeflow.workflow import Workflow


def sd_graph(
    *,
    prompt: str = "a red circle",
    negative: str = "",
    seed: int = 0,
    scheduler: str = "euler",
    steps: int = 4,
    scale: float = 7.5,
    rescale: float = 0.0,
    width: int = 64,
    height: int = 64,
    batch_size: int = 1,
    karras: bool = False,
    beta_schedule: str = "default",
    checkpoint: str = "tiny",
    image: str | None = None,
    strength: float = 1.0,
    save: bool = True,
    size: dict[str, int] | None = None,
    prediction: str = "auto",
) -> Workflow:
    """txt2img (or img2img when ``image`` is given) as the standard graph of nodes."""
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path=checkpoint, prediction=prediction)
    pos = b.add("TextEncode", id="pos", text_encoder=model.text_encoder, text=prompt)
    neg = b.add("TextEncode", id="neg", text_encoder=model.text_encoder, text=negative)
    if size is not None:  # SDXL micro-conditioning, on both prompts as diffusers does
        pos = b.add("SizeConditioning", id="pos_size", conditioning=pos.conditioning, **size)
        neg = b.add("SizeConditioning", id="neg_size", conditioning=neg.conditioning, **size)
    sched = b.add(
        "Scheduler",
        id="sched",
        unet=model.unet,
        name=scheduler,
        steps=steps,
        karras=karras,
        beta_schedule=beta_schedule,
    )
    guider = b.add(
        "CFG",
        id="cfg",
        unet=model.unet,
        positive=pos.conditioning,
        negative=neg.conditioning,
        scale=scale,
        rescale=rescale,
    )
    if image is None:
        latent = b.add("EmptyLatent", id="empty", width=width, height=height, batch_size=batch_size)
    else:
        loaded = b.add("LoadImage", id="load", path=image)
        latent = b.add("VAEEncode", id="encode", vae=model.vae, image=loaded.image)
    den = b.add(
        "Denoise",
        id="denoise",
        guider=guider.guider,
        scheduler=sched.scheduler,
        latent=latent.latent,
        seed=seed,
        strength=strength,
    )
    decode = b.add("VAEDecode", id="decode", vae=model.vae, latent=den.latent)
    if save:
        b.add("SaveImage", id="save", image=decode.image, prefix="test")
    return b.build()
