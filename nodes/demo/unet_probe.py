"""How much a caption's position words change the demo U-Net's first guess of the picture, and
how much the faint picture left in x_t does.

``text_probe`` asks whether the text encoder tells two captions apart; this asks whether the
U-Net then draws them differently where it matters for layout: from pure noise, at the first,
noisiest timesteps of sampling, where a shape's place is decided. For each noise and each pair of
captions differing only in the attribute, it compares the predicted clean latents
``x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)`` (relative norm of the difference). A model that draws
position as it draws colour moves its guess about as much for "left" vs "right" as for "red" vs
"green"; the v2 demo at step 500 moved its noise prediction 40 times less (TRAINING.md).

``leak_and_caption`` asks where a guess's layout comes from: x_t is made from the latents of a
shape on the left (or right) as training makes it, the caption names the left or the right, and
the guess is scored by its projection on ``z_left - z_right`` (+1 left picture, -1 right). SD's
schedule ends at SNR 0.0047, so even at t = 999 x_t holds 0.069 of the picture; if the guess
follows that leak and not the caption, the position words carry nothing the model lacks in
training, and from the pure noise sampling starts at, the noise places the shape.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nodes.clip_vocab import MODEL_MAX_LENGTH, clip_tokenizer
from nodes.demo.dataset import POSITION_PHRASES
from nodes.demo.text_probe import COLOR_TEMPLATE, TEMPLATE

__all__ = ["LEAK_SCENES", "layout_response", "leak_and_caption", "main", "probe_folder"]

LEAK_SCENES: tuple[tuple[str, str, str, str], ...] = (
    ("circle", "red", "blue", "large"),
    ("square", "yellow", "black", "large"),
    ("triangle", "white", "green", "large"),
    ("circle", "orange", "purple", "small"),
)
"""(shape, colour, background, size) of the left/right pairs ``leak_and_caption`` uses."""


@torch.no_grad()
def _x0_guesses(
    unet: Any, text_encoder: Any, alphas: torch.Tensor, captions: Sequence[str],
    timestep: int, noise: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """``[captions, noises, C, H, W]`` predicted clean latents from ``noise`` at ``timestep``."""
    tokenizer: Any = clip_tokenizer()
    ids = torch.tensor([
        tokenizer(text, padding="max_length", max_length=MODEL_MAX_LENGTH).input_ids
        for text in captions
    ])  # fmt: skip
    device = next(unet.parameters()).device
    context = text_encoder(ids.to(device))[0]
    a = alphas[timestep].to(device)
    guesses = []
    for states in context:
        batch = states[None].expand(noise.shape[0], -1, -1)
        t = torch.full((noise.shape[0],), timestep, device=device)
        eps = unet(noise.to(device), t, encoder_hidden_states=batch).sample
        guesses.append((noise.to(device) - (1 - a).sqrt() * eps) / a.sqrt())
    return torch.stack(guesses).float().cpu()


def _mean_pair_distance(guesses: torch.Tensor) -> float:
    distances = [
        float((guesses[i] - guesses[j]).flatten(1).norm(dim=1).div(
            guesses[i].flatten(1).norm(dim=1).clamp(min=1e-12)).mean())
        for i, j in itertools.combinations(range(guesses.shape[0]), 2)
    ]  # fmt: skip
    return sum(distances) / len(distances)


def layout_response(
    unet: Any,
    text_encoder: Any,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int] = (999, 900),
    noises: int = 8,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Per timestep: ``{"position": d, "color": d, "ratio": position / color}``, ``d`` the mean
    relative distance between the x0 guesses for captions differing only in that attribute
    (the five position phrases; red vs green), over ``noises`` seeded noises (``x_t ~ N(0, 1)``,
    the sampler's start; at t = 900 the true x_t holds 0.12 of the picture, ignored here)."""
    channels = unet.config.in_channels
    size = unet.config.sample_size
    noise = torch.randn(noises, channels, size, size, generator=torch.Generator().manual_seed(seed))
    positions = [TEMPLATE.format(" " + phrase) for phrase in POSITION_PHRASES.values()]
    colors = [COLOR_TEMPLATE.format(color) for color in ("red", "green")]
    result: dict[str, dict[str, float]] = {}
    for timestep in timesteps:
        args = (unet, text_encoder, alphas_cumprod)
        position = _mean_pair_distance(_x0_guesses(*args, positions, timestep, noise))
        color = _mean_pair_distance(_x0_guesses(*args, colors, timestep, noise))
        ratio = position / color if color > 0 else float("nan")
        result[str(timestep)] = {"position": position, "color": color, "ratio": ratio}
    return result


@torch.no_grad()
def leak_and_caption(
    unet: Any,
    text_encoder: Any,
    vae: Any,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int] = (999, 900),
    noises: int = 6,
) -> dict[str, dict[str, float]]:
    """Per timestep: ``leak``, how far the guess follows the side x_t was made from (half the
    leftness difference, caption held, mean over both captions); ``caption``, how far it follows
    the caption (half the difference between "left" and "right" captions, mean over x_t made
    from either side and from pure noise); ``noise_spread``, the standard deviation of the
    leftness over the noises from pure noise (where sampling starts). Means over ``LEAK_SCENES``.
    """
    import numpy as np

    from nodes.demo.dataset import Scene, caption, render

    tokenizer: Any = clip_tokenizer()
    device = next(unet.parameters()).device

    def latents(scene: Scene) -> torch.Tensor:
        pixels = torch.from_numpy(np.asarray(render(scene), dtype=np.float32))
        pixels = pixels.permute(2, 0, 1)[None].to(device) / 127.5 - 1
        return vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor

    def states(text: str) -> torch.Tensor:
        ids = tokenizer(text, padding="max_length", max_length=MODEL_MAX_LENGTH).input_ids
        return text_encoder(torch.tensor([ids], device=device))[0]

    figures: dict[str, dict[str, list[float]]] = {}
    for shape, color, background, size in LEAK_SCENES:
        left, right = (Scene(shape, color, background, size, 1, side, layout_seed=1)
                       for side in ("left", "right"))  # fmt: skip
        z_left, z_right = latents(left), latents(right)
        axis, middle = (z_left - z_right).flatten(), ((z_left + z_right) / 2).flatten()
        texts = {"left": states(caption(left)), "right": states(caption(right))}
        for timestep in timesteps:
            a = alphas_cumprod[timestep].to(device)
            score: dict[tuple[str, str], list[float]] = {}
            for source, clean in (("left", z_left), ("right", z_right), ("none", None)):
                for side, context in texts.items():
                    values = []
                    for i in range(noises):
                        noise = torch.randn(
                            z_left.shape, generator=torch.Generator().manual_seed(i)
                        )
                        noise = noise.to(device)
                        x_t = noise if clean is None else a.sqrt() * clean + (1 - a).sqrt() * noise
                        t = torch.tensor([timestep], device=device)
                        eps = unet(x_t, t, encoder_hidden_states=context).sample
                        guess = ((x_t - (1 - a).sqrt() * eps) / a.sqrt()).flatten()
                        values.append(float(2 * (guess - middle) @ axis / (axis @ axis)))
                    score[source, side] = values
            mean = {key: sum(v) / len(v) for key, v in score.items()}
            row = figures.setdefault(str(timestep), {"leak": [], "caption": [], "noise_spread": []})
            row["leak"].append(sum((mean["left", s] - mean["right", s]) / 2 for s in texts) / 2)
            row["caption"].append(
                sum(
                    (mean[src, "left"] - mean[src, "right"]) / 2
                    for src in ("left", "right", "none")
                )
                / 3
            )
            row["noise_spread"].append(float(np.std(score["none", "left"])))
    return {t: {k: sum(v) / len(v) for k, v in row.items()} for t, row in figures.items()}


def probe_folder(folder: Path, timesteps: Sequence[int] = (999, 900)) -> dict[str, Any]:
    """Both probes on a saved demo diffusers folder (float32, CPU): ``{"response": ...,
    "leak": ...}``, keyed by timestep as ``layout_response`` and ``leak_and_caption`` key them."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32)
    encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32)
    alphas = DDPMScheduler.from_pretrained(folder / "scheduler").alphas_cumprod
    models = (unet.eval(), encoder.eval())
    return {
        "response": layout_response(*models, alphas, timesteps),
        "leak": leak_and_caption(*models, vae.eval(), alphas, timesteps),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m nodes.demo.unet_probe FOLDER...``: one JSON line per folder."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+", help="demo diffusers folders")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[999, 900])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for folder in args.folders:
        figures = probe_folder(folder, args.timesteps)
        print(json.dumps({"folder": str(folder), **figures}), flush=True)


if __name__ == "__main__":
    main()
