"""Sweep nodes: one node runs guidance + denoising once per value, by calling the built-in pack.

Why one node rather than a fan-out of CFG/Denoise copies in the graph: the graph stays the size of
txt2img whatever the number of values, upstream nodes (model, prompts, schedule, empty latent) are
its inputs and so run once, and each picture is computed by the same functions ``CFG`` and
``Denoise`` use (``nodes.guidance.cfg``, ``nodes.denoise.sample``) with a fresh generator seeded
as they seed it, so every cell equals the picture a plain graph makes at that value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

from pydantic import Field

from nodeflow import Context, Widget, node
from nodes.denoise import sample
from nodes.guidance import cfg
from nodes.text import encode_text
from nodes.types import Conditioning, Guider, Latent, Scheduler, TextEncoder, UNet

MAX_VALUES = 64
MAX_PROMPT = 1000
_NUMBER = r"-?\d+(?:\.\d+)?"
Numbers = Annotated[
    str,
    Field(pattern=rf"^\s*{_NUMBER}(?:\s*[,\s]\s*{_NUMBER})*\s*$", max_length=1000),
    Widget(),
]
"""A list of numbers as text (``"1, 3, 7.5"``): checked when the workflow is validated."""


class SweepOutput(NamedTuple):
    latent: Latent
    labels: str
    """One label per picture, one per line: link it into ``imageops.ImageGrid``'s labels."""


def parse_numbers(text: str) -> list[float]:
    values = [float(v) for v in re.split(r"[,\s]+", text.strip()) if v]
    if not 1 <= len(values) <= MAX_VALUES:
        raise ValueError(f"a sweep takes 1 to {MAX_VALUES} values, not {len(values)}")
    return values


def parse_prompts(text: str) -> list[str]:
    """One prompt per non-blank line, stripped."""
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not 1 <= len(prompts) <= MAX_VALUES:
        count = len(prompts)
        raise ValueError(f"a sweep takes 1 to {MAX_VALUES} prompts, one per line, not {count}")
    return prompts


def _label(name: str, value: float) -> str:
    return f"{name} {value:g}"


@dataclass
class _StepContext:
    """What ``sample`` needs of a Context, with progress counted over the whole sweep."""

    ctx: Context
    offset: int
    total: int

    @property
    def wants_previews(self) -> bool:
        return self.ctx.wants_previews

    def check_interrupted(self) -> None:
        self.ctx.check_interrupted()

    def progress(self, value: float, maximum: float) -> None:
        self.ctx.progress(self.offset + value, self.total)

    def preview(self, image: Any, step: int = 0) -> None:
        self.ctx.preview(image, self.offset + step)


def run_sweep(
    ctx: Context,
    jobs: list[tuple[Guider, int, str]],
    scheduler: Scheduler,
    latent: Latent,
) -> SweepOutput:
    """Denoise ``latent`` once per ``(guider, seed, label)``; the results as one batch."""
    import torch

    models: list[Any] = []
    for guider, _, _ in jobs:  # the denoiser and any ControlNet a conditioning brings
        models += [model for model in guider.models if all(model is not m for m in models)]
    ctx.models.use(*models)
    batches, labels = [], []
    steps = scheduler.steps
    for index, (guider, seed, label) in enumerate(jobs):
        step_ctx = _StepContext(ctx, index * steps, len(jobs) * steps)
        batches.append(sample(guider, scheduler, latent, seed, 1.0, step_ctx))
        labels += [label] * batches[-1].shape[0]
    samples = torch.cat(batches)
    out = Latent(samples=samples, width=latent.width, height=latent.height, batch_size=len(labels))
    return SweepOutput(out, "\n".join(labels))


@node("CFGSweep", category="sampling/sweep", display_name="CFG Sweep")
def cfg_sweep(
    ctx: Context,
    unet: UNet,
    positive: Conditioning,
    negative: Conditioning,
    scheduler: Scheduler,
    latent: Latent,
    scales: Numbers = "1, 3, 7.5, 15",
    seed: Annotated[int, Field(ge=0, le=2**64 - 1), Widget(seed=True)] = 0,
    rescale: Annotated[float, Field(ge=0, le=1)] = 0.0,
) -> SweepOutput:
    """Denoise the same noise at each guidance scale (low: diverse, loose; high: faithful to the
    prompt, saturated). One picture per scale, labelled ``cfg <scale>``."""
    jobs = []
    for scale in parse_numbers(scales):
        if not 0 <= scale <= 100:
            raise ValueError(f"guidance scale {scale:g} is outside 0..100")
        guider = cfg(unet, positive, negative, scale=scale, rescale=rescale)
        jobs.append((guider, seed, _label("cfg", scale)))
    return run_sweep(ctx, jobs, scheduler, latent)


@node("SeedSweep", category="sampling/sweep", display_name="Seed Sweep")
def seed_sweep(
    ctx: Context,
    guider: Guider,
    scheduler: Scheduler,
    latent: Latent,
    seeds: Numbers = "0, 1, 2, 3",
) -> SweepOutput:
    """Denoise with each seed: the same settings, different noise. Labelled ``seed <n>``."""
    jobs = []
    for value in parse_numbers(seeds):
        if value != int(value) or value < 0:
            raise ValueError(f"seed {value:g} is not a whole number >= 0")
        jobs.append((guider, int(value), _label("seed", value)))
    return run_sweep(ctx, jobs, scheduler, latent)


@node("PromptSweep", category="sampling/sweep", display_name="Prompt Sweep")
def prompt_sweep(
    ctx: Context,
    unet: UNet,
    text_encoder: TextEncoder,
    negative: Conditioning,
    scheduler: Scheduler,
    latent: Latent,
    prompts: Annotated[
        str, Field(min_length=1, max_length=MAX_VALUES * MAX_PROMPT), Widget(multiline=True)
    ] = "a large red circle on a blue background\ntwo small yellow squares on a black background",
    scale: Annotated[float, Field(ge=0, le=100)] = 7.5,
    seed: Annotated[int, Field(ge=0, le=2**64 - 1), Widget(seed=True)] = 0,
    rescale: Annotated[float, Field(ge=0, le=1)] = 0.0,
) -> SweepOutput:
    """Denoise the same noise once per prompt (one per line), each labelled with its prompt:
    a picture of what the model does with each caption, for a model card or a regression look."""
    ctx.models.use(*text_encoder.models)
    device = text_encoder.model.device if text_encoder.model is not None else None
    jobs = []
    for prompt in parse_prompts(prompts):
        positive = encode_text(text_encoder, prompt, device)
        guider = cfg(unet, positive, negative, scale=scale, rescale=rescale)
        jobs.append((guider, seed, prompt))
    return run_sweep(ctx, jobs, scheduler, latent)
