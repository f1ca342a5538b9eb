"""Training levers for teaching the demo U-Net where a shape goes (issue 22's position probes).

The grown v2 demo read position at chance after 2,300 steps although colour and shape kept
improving. Where a shape lies is decided while the picture is still almost pure noise: once the
shape shows in x_t, denoising it needs no caption, so only the noisiest timesteps carry any
gradient for the position words. Under the epsilon objective those timesteps weigh an error in
the predicted picture by its SNR (0.004 at t = 999, 0.04 at t = 800), so a uniform draw of
timesteps spends almost nothing on layout. These levers change only what a run samples and how
it starts, never the model's architecture or prediction type, so a run that uses none of them is
exactly ``train_grow``'s:

* ``high_noise_timesteps``: a share of each batch's timesteps drawn from the noisy end only;
* ``load_start_weights``: begin from another run's saved state (its EMA or training weights)
  instead of from the grown base, so a short probe continues a long run on a copy;
* ``layout_weights``: weigh the noisiest timesteps' epsilon loss up towards what an error in
  the predicted picture costs there (``1 / SNR``, capped);
* ``layout_noise``: Gaussian noise plus coarse (1x1, 2x2, 4x4 upsampled) Gaussian fields, which
  hide the layout that SD's schedule leaves in x_t even at t = 999 (see its docstring);
* ``spread_token_rows``: re-initialise the position words' token rows orthogonal and long, so
  the text encoder passes them on (see its docstring for what was measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from nodes.demo.run_state import load_run_state

__all__ = [
    "POSITION_WORDS",
    "StartWeights",
    "high_noise_timesteps",
    "layout_noise",
    "layout_weights",
    "load_start_weights",
    "spread_token_rows",
]

StartWeights = Literal["ema", "train"]


def high_noise_timesteps(
    count: int,
    total: int,
    share: float,
    start: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``count`` training timesteps in ``0..total-1``: each, with probability ``share``, uniform
    in ``start..total-1`` (the noisy end, where layout is decided) and otherwise uniform over all.

    Draws from ``generator`` only (three tensors of ``count``), so a seeded run repeats.
    """
    if not 0 <= share <= 1:
        raise ValueError(f"the high-noise share must be in 0..1, not {share}")
    if not 0 <= start < total:
        raise ValueError(f"the high-noise start must be in 0..{total - 1}, not {start}")
    anywhere = torch.randint(0, total, (count,), generator=generator, device=device)
    noisy = torch.randint(start, total, (count,), generator=generator, device=device)
    biased = torch.rand(count, generator=generator, device=device) < share
    return torch.where(biased, noisy, anywhere)


def layout_noise(
    shape: Sequence[int],
    strength: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    grids: Sequence[int] = (1, 2, 4),
) -> torch.Tensor:
    """Training noise of ``shape`` ``[B, C, H, W]``: unit Gaussian plus, for each ``grids`` size
    ``g``, a ``g x g`` Gaussian field of standard deviation ``strength`` upsampled (nearest) to
    ``H x W`` (offset noise, Guttenberg 2023, at several coarse scales).

    Why: SD's scaled-linear schedule stops at SNR 0.0047, so x_t at t = 999 still holds
    0.069 of the clean latents. Summed over a large flat shape's 6x6 latent patch that faint
    picture shows where the shape is, and the measured v2 U-Net reads its place from it (its
    guess of the picture follows the leaked side whatever the caption says): position words
    never carry information the model lacks, so they are never learnt, and from the pure noise
    sampling starts at the shape lands where the noise suggests. Coarse noise of this size
    drowns the leaked layout at the noisiest steps (Lin et al. 2024 fix the schedule instead,
    which needs v-prediction and a new scheduler config). The U-Net predicts this whole noise.
    """
    if strength < 0:
        raise ValueError(f"the layout noise strength must be at least 0, not {strength}")
    batch, channels, height, width = shape
    noise = torch.randn(tuple(shape), generator=generator, device=device)
    for grid in grids:
        if grid > min(height, width):
            continue
        coarse = torch.randn(batch, channels, grid, grid, generator=generator, device=device)
        noise = noise + strength * nn.functional.interpolate(coarse, size=(height, width))
    return noise


def layout_weights(
    timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, cap: float
) -> torch.Tensor:
    """Per-picture loss weights ``clamp(1 / SNR(t), 1, cap)``.

    An error ``d`` in the predicted clean latents costs ``SNR * d**2`` in the epsilon loss, so at
    t = 999 (SNR 0.005) the loss hardly sees where the model put the shape. Multiplying by
    ``1 / SNR`` makes those timesteps cost what the picture's error is; ``cap`` bounds it (the
    eps loss of the noisiest steps is small and low-variance, but x0 errors there are large), and
    timesteps with SNR above 1 keep weight 1, so the rest of training is ``train_demo``'s.
    """
    if cap < 1:
        raise ValueError(f"the layout weight cap must be at least 1, not {cap}")
    alphas = alphas_cumprod.to(timesteps.device)[timesteps].double()
    snr = alphas / (1 - alphas)
    return torch.clamp(1 / snr, min=1.0, max=cap).float()


@torch.no_grad()
def load_start_weights(
    state_dir: Path,
    modules: dict[str, nn.Module],
    parameters: Sequence[nn.Parameter],
    which: StartWeights = "ema",
) -> int:
    """Copy a saved ``train_grow`` run's weights into ``modules`` (keyed by the prefix the state
    uses: ``unet``, ``text_encoder``); returns the step they were saved at.

    ``which="ema"`` takes the EMA shadows (the weights the run's checkpoints are measured with);
    they are stored by index in ``parameters``' order, which is the optimiser's grouping of the
    same modules, so the caller must build ``parameters`` as the saved run did (``adamw``).
    The state is only read: a probe never writes into the run it starts from.
    """
    saved = load_run_state(state_dir)
    if saved is None:
        raise FileNotFoundError(f"{state_dir} holds no saved run state (state.safetensors)")
    tensors, meta = saved
    for prefix, module in modules.items():
        own = module.state_dict()
        names = {k for k in tensors if k.startswith(prefix + ".")}
        expected = {f"{prefix}.{k}" for k in own}
        if names != expected:
            missing = sorted(expected - names)[:3]
            extra = sorted(names - expected)[:3]
            raise ValueError(
                f"{state_dir}: its {prefix} does not match this run's architecture "
                f"(missing {missing}, unexpected {extra}); grow the same levels"
            )
        module.load_state_dict({k: tensors[f"{prefix}.{k}"] for k in own})
    if which == "ema":
        shadows = [tensors.get(f"ema.{i}") for i in range(len(parameters))]
        if any(s is None for s in shadows) or f"ema.{len(parameters)}" in tensors:
            raise ValueError(f"{state_dir} holds no EMA of these {len(parameters)} parameters")
        for param, shadow in zip(parameters, shadows, strict=True):
            if shadow is None or shadow.shape != param.shape:
                raise ValueError(f"{state_dir}: an EMA shadow does not fit its parameter")
            param.copy_(shadow.to(param.device, param.dtype))
    return int(meta["step"])


POSITION_WORDS: tuple[str, ...] = ("center", "left", "right", "top", "bottom")
"""The words that tell the dataset's five position phrases apart (``dataset.POSITION_PHRASES``:
"on the left", "at the top", ...); the phrases' other words are shared by pairs of them."""


@torch.no_grad()
def spread_token_rows(text_encoder: nn.Module, words: Sequence[str], norm: float) -> list[int]:
    """Make ``words``' token-table rows orthogonal, each of length ``norm``; returns their ids.

    Why: the demo encoder's first layer adds a component of norm ~10 shared by every token, so a
    position word's row (norm ~0.25, as every caption word's) survives into the states only as a
    few percent, and the U-Net never learns to read it. A row of the size of that component
    survives the residual path. The rows are Gram-Schmidt orthogonalised in the given order, so
    each keeps as much of its learned direction as orthogonality allows. Only these rows change.
    """
    from nodes.clip_vocab import clip_tokenizer

    if norm <= 0:
        raise ValueError(f"a token row's norm must be positive, not {norm}")
    tokenizer: Any = clip_tokenizer()
    ids = []
    for word in words:
        pieces = tokenizer(word, add_special_tokens=False).input_ids
        if len(pieces) != 1:
            raise ValueError(f"{word!r} is {len(pieces)} tokens, not one: its row is not its own")
        ids.append(pieces[0])
    table = text_encoder.get_input_embeddings().weight
    rows = table[ids].double()
    basis: list[torch.Tensor] = []
    for row in rows:
        for other in basis:
            row = row - (row @ other) * other
        if row.norm() < 1e-8:
            raise ValueError("the rows are linearly dependent: give fewer words than the width")
        basis.append(row / row.norm())
    table[ids] = (torch.stack(basis) * norm).to(table.dtype)
    return ids
