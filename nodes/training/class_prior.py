"""DreamBooth's prior preservation: class pictures drawn by the base model, once, and kept.

Ruiz et al. (2022) fine-tune on a few pictures of a subject under a rare-token prompt ("a sks
dog") and, to keep the model from forgetting what the class looks like (and from drifting every
"dog" toward the subject), add the denoising loss on pictures the *base* model made for the
class prompt ("a dog"), weighted by lambda. Those pictures are a function of the base model, the
prompts and the sampling settings, so they are drawn once and cached by that key in
``<models>/training_priors/<key hash>.safetensors`` (uint8 pixels and the key as metadata): a
rerun, a resumed run, or a TrainUNet run beside a TrainLoRA one on the same base reuses them.

Picture ``i`` is prompt ``i mod len(prompts)`` drawn from seed ``seed + i`` through the pack's
own sampling loop (euler, CFG 7.5, as the previews), so they are deterministic.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from nodes.denoise import sample
from nodes.schedulers import make_scheduler
from nodes.text import encode_text
from nodes.training.dataset import Dataset
from nodes.training.previews import PREVIEW_CFG, PREVIEW_SCHEDULER
from nodes.training.state import atomic_save_tensors
from nodes.types import VAE, Guider, Latent, TextEncoder, UNet
from nodes.vae import decode

CACHE_KIND = "training_priors"
KEY_METADATA = "nodeflow_prior"


def model_identity(model: UNet | TextEncoder | VAE) -> str:
    """The model's source with its size and mtime when it is a file (a rewritten file is
    another model), and the sources of its patches (a LoRA loaded before training)."""
    source = model.source
    path = Path(source) if source else None
    if path is not None and path.is_file():
        stat = path.stat()
        source = f"{source}:{stat.st_size}:{stat.st_mtime_ns}"
    patches = getattr(model, "patches", ())
    return source + "".join(f"+{getattr(p, 'source', p)}:{getattr(p, 'strength', '')}"
                            for p in patches)  # fmt: skip


def parse_class_prompts(text: str) -> tuple[str, ...]:
    """The class prompts, one a line (blank lines ignored)."""
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def prior_key(
    unet: UNet, text_encoder: TextEncoder, vae: VAE, prompts: Sequence[str], count: int,
    size: int, seed: int, steps: int,
) -> dict[str, Any]:  # fmt: skip
    """Everything the class pictures depend on."""
    return {
        "unet": model_identity(unet),
        "text_encoder": model_identity(text_encoder),
        "vae": model_identity(vae),
        "prompts": list(prompts),
        "count": count,
        "size": size,
        "seed": seed,
        "steps": steps,
        "scheduler": PREVIEW_SCHEDULER,
        "cfg": PREVIEW_CFG,
    }


def prior_pictures(
    unet: UNet,
    text_encoder: TextEncoder,
    vae: VAE,
    prompts: Sequence[str],
    count: int,
    size: int,
    seed: int,
    steps: int,
    folder: Path,
    made: Callable[[int, int], None] = lambda i, n: None,
) -> Dataset:
    """``count`` class pictures of ``size`` pixels with their prompts, drawn by the base model
    or read from ``folder`` when an earlier run drew them. ``made(i, count)`` is called after
    each new picture (raising there stops: an interrupt); nothing is kept until all are drawn."""
    from PIL import Image as PILImage

    if not prompts:
        raise ValueError("class_prompts: give at least one class prompt (one a line)")
    key = prior_key(unet, text_encoder, vae, prompts, count, size, seed, steps)
    text = json.dumps(key, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
    file = folder / f"{digest[:32]}.safetensors"
    pixels = _read(file, text)
    if pixels is None:
        pixels = _draw(unet, text_encoder, vae, prompts, count, size, seed, steps, made)
        atomic_save_tensors({"pixels": pixels}, file, **{KEY_METADATA: text})
    captions = tuple(prompts[i % len(prompts)] for i in range(count))
    return Dataset(
        pictures=tuple(PILImage.fromarray(p.numpy()) for p in pixels),
        captions=captions,
        size=size,
        identity=f"prior:{digest}",
    )


def _read(file: Path, key: str) -> torch.Tensor | None:
    """The cached pixels, if ``file`` holds them for exactly ``key``."""
    from safetensors import safe_open

    if not file.is_file():
        return None
    with safe_open(str(file), framework="pt") as opened:
        if (opened.metadata() or {}).get(KEY_METADATA) != key:
            return None
        return opened.get_tensor("pixels")


def _draw(
    unet: UNet, text_encoder: TextEncoder, vae: VAE, prompts: Sequence[str], count: int,
    size: int, seed: int, steps: int, made: Callable[[int, int], None],
) -> torch.Tensor:  # fmt: skip
    """uint8 [count, size, size, 3]: picture i from prompt i mod len, seed ``seed + i``."""
    device = unet.model.device
    negative = encode_text(text_encoder, "", device)
    recipe = make_scheduler(PREVIEW_SCHEDULER, unet.scheduler_config, steps)
    encoded = {p: encode_text(text_encoder, p, device) for p in dict.fromkeys(prompts)}
    pictures = []
    with torch.no_grad():
        for index in range(count):
            prompt = prompts[index % len(prompts)]
            guider = Guider(unet, encoded[prompt], negative, PREVIEW_CFG)
            latents = sample(guider, recipe, Latent(None, size, size, 1), seed + index)
            decoded = decode(vae, Latent(latents, size, size, 1)).pixels
            pictures.append((decoded[0] * 255).round().clamp(0, 255).to(torch.uint8))
            made(index + 1, count)
    return torch.stack(pictures).contiguous()
