"""The unCLIP prior: from a prompt's CLIP text embedding to a CLIP image embedding.

DALL-E 2's second stage. The prior is a diffusion model over embeddings: it denoises a random
image embedding, guided by the prompt's projected text embedding and its token hidden states. It
is sampled exactly as diffusers' ``KandinskyV22PriorPipeline`` and ``StableUnCLIPPipeline`` sample
it (same encoding, batching, guidance, generator use and scheduler calls), so a seed gives the same
embeddings. The decoder then draws pictures of that embedding (see ``nodes.unclip``).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from pydantic import Field

from nodeflow import Context, Widget, node
from nodeflow.runtime.models import file_identity
from nodes import hf
from nodes.clip_vision import zero_input_embeds
from nodes.clip_vocab import clip_tokenizer
from nodes.denoise import Seed
from nodes.loaders import (
    CHECKPOINT_DIRS,
    DEMO_KANDINSKY_PRIOR,
    Dtype,
    _identity,
    has_tokenizer,
    quiet_hub_libraries,
    resolve_checkpoint,
)
from nodes.types import ImageEmbeds, Prior


@node("LoadPrior", category="loaders", fingerprint=_identity(CHECKPOINT_DIRS))
def load_prior(
    ctx: Context,
    path: Annotated[str, Widget(files="checkpoints")] = DEMO_KANDINSKY_PRIOR,
    dtype: Dtype = "auto",
) -> Prior:
    """Load an unCLIP prior: a Kandinsky 2.2 prior folder, or the prior of a Stable unCLIP folder
    (its ``prior_*`` parts), in the diffusers layout."""
    location = resolve_checkpoint(path, ctx.env)
    torch_dtype = ctx.runtime.dtype(dtype)
    key = ("prior", file_identity(location), str(torch_dtype))

    def load() -> Prior:
        loaded = _load_prior_folder(location, torch_dtype)
        for model, what in ((loaded.model, "prior"), (loaded.text_encoder, "prior text encoder")):
            ctx.models.register(model, label=f"{what} of {location.name}")
        if loaded.image_encoder is not None:
            ctx.models.register(loaded.image_encoder, label=f"image encoder of {location.name}")
        return loaded

    return ctx.models.get(key, load)


def _load_prior_folder(folder: Path, dtype: Any) -> Prior:
    diffusers, transformers = hf.diffusers(), hf.transformers()
    PriorTransformer = diffusers.PriorTransformer
    CLIPTextModelWithProjection = transformers.CLIPTextModelWithProjection
    CLIPTokenizer = transformers.CLIPTokenizer
    CLIPVisionModelWithProjection = transformers.CLIPVisionModelWithProjection

    if not (folder / "prior" / "config.json").is_file():
        raise ValueError(f"{folder} holds no prior (no prior/ folder of a diffusers model)")
    quiet_hub_libraries()
    prefix = "prior_" if (folder / "prior_text_encoder").is_dir() else ""  # Stable unCLIP
    prior = PriorTransformer.from_pretrained(
        folder, subfolder="prior", torch_dtype=dtype, local_files_only=True
    )
    text_encoder = CLIPTextModelWithProjection.from_pretrained(
        folder / f"{prefix}text_encoder", dtype=dtype, local_files_only=True
    )
    tokenizer_folder = folder / f"{prefix}tokenizer"
    if has_tokenizer(tokenizer_folder):
        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_folder, local_files_only=True)
    else:
        tokenizer = clip_tokenizer()
    config = json.loads((folder / f"{prefix}scheduler" / "scheduler_config.json").read_text())
    image_encoder = None
    if not prefix and (folder / "image_encoder").is_dir():
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(
            folder / "image_encoder", dtype=dtype, local_files_only=True
        )
        image_encoder.eval().requires_grad_(False)
    return Prior(
        model=prior.eval().requires_grad_(False),
        tokenizer=tokenizer,
        text_encoder=text_encoder.eval().requires_grad_(False),
        scheduler_class=getattr(diffusers, config["_class_name"]),
        scheduler_config=config,
        image_encoder=image_encoder,
        source=str(folder),
    )


class PriorOutput(NamedTuple):
    image_embeds: ImageEmbeds
    negative_image_embeds: ImageEmbeds


@node("PriorSample", category="prior")
def prior_sample(
    ctx: Context,
    prior: Prior,
    text: Annotated[str, Widget(multiline=True)] = "",
    negative: Annotated[str, Widget(multiline=True)] = "",
    steps: Annotated[int, Field(ge=1, le=1000)] = 25,
    guidance_scale: Annotated[float, Field(ge=0, le=100)] = 4.0,
    seed: Seed = 0,
) -> PriorOutput:
    """Turn a prompt into a CLIP image embedding with the prior, and a negative one.

    With a negative prompt, both prompts go through the prior together (the negative one also
    guides against itself) and the negative embedding is the negative prompt's. Without one, the
    prompt is guided against the empty prompt, and the negative embedding is the prior's
    image encoder's embedding of an all-zero input (zeros without one). As in diffusers.
    """
    ctx.models.use(*prior.models)
    image, negative_image = sample_prior(
        prior, text, negative, steps, guidance_scale, seed, ctx=ctx
    )
    return PriorOutput(ImageEmbeds(image), ImageEmbeds(negative_image))


def _encode(prior: Prior, prompts: list[str]) -> tuple[Any, Any, Any]:
    """(projected text embeddings, last hidden states, attention mask) of ``prompts``."""
    tokenizer = prior.tokenizer
    tokens = tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    device = prior.text_encoder.device
    output = prior.text_encoder(tokens.input_ids.to(device))
    mask = tokens.attention_mask.bool().to(device)
    return output.text_embeds, output.last_hidden_state, mask


def _step_kwargs(scheduler: Any, generator: Any, next_timestep: Any) -> dict[str, Any]:
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "generator" in accepted:
        kwargs["generator"] = generator
    if "prev_timestep" in accepted:  # UnCLIPScheduler skips to the next timestep it is told
        kwargs["prev_timestep"] = next_timestep
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    return kwargs


def sample_prior(
    prior: Prior,
    text: str,
    negative: str,
    steps: int,
    scale: float,
    seed: int,
    ctx: Context | None = None,
) -> tuple[Any, Any]:
    """(image embeddings, negative image embeddings), each [1, width]."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    prompts = [text, negative] if negative else [text]
    guided = scale > 1.0
    with torch.inference_mode():
        proj, hidden, mask = _encode(prior, prompts)
        if guided:
            uncond = _encode(prior, [negative or ""] * len(prompts))
            proj, hidden, mask = (
                torch.cat([u, c]) for u, c in zip(uncond, (proj, hidden, mask), strict=True)
            )
        scheduler = prior.scheduler_class.from_config(prior.scheduler_config)
        device = prior.model.device
        scheduler.set_timesteps(steps, device=device)
        timesteps = scheduler.timesteps
        generator = torch.Generator("cpu").manual_seed(seed)
        shape = (len(prompts), prior.model.config.embedding_dim)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=proj.dtype)
        latents = latents * scheduler.init_noise_sigma
        for index, timestep in enumerate(timesteps):
            if ctx is not None:
                ctx.check_interrupted()
            model_input = torch.cat([latents, latents]) if guided else latents
            model_input = scheduler.scale_model_input(model_input, timestep)
            predicted = prior.model(
                model_input,
                timestep=timestep,
                proj_embedding=proj,
                encoder_hidden_states=hidden,
                attention_mask=mask,
            ).predicted_image_embedding
            if guided:
                uncond_pred, cond_pred = predicted.chunk(2)
                predicted = uncond_pred + scale * (cond_pred - uncond_pred)
            following = timesteps[index + 1] if index + 1 < len(timesteps) else None
            kwargs = _step_kwargs(scheduler, generator, following)
            latents = scheduler.step(predicted, timestep=timestep, sample=latents, **kwargs)[0]
            if ctx is not None:
                ctx.progress(index + 1, len(timesteps))
        embeds = prior.model.post_process_latents(latents)
        if negative:
            image, negative_image = embeds.chunk(2)
            return image, negative_image
        return embeds, _empty_image_embeds(prior, embeds)


def _empty_image_embeds(prior: Prior, like: Any) -> Any:
    """diffusers' "zero embed" (the image encoder's embedding of an all-zero input), or zeros
    for a prior without an image encoder (Stable unCLIP's, whose decoder needs none)."""
    import torch

    if prior.image_encoder is None:
        return torch.zeros_like(like)
    return zero_input_embeds(prior.image_encoder, like.shape[0])
