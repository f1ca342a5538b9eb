"""Prompt-to-prompt editing (Hertz et al. 2022): the PromptToPrompt node and its attention patch.

The source and the edited prompt are denoised together, as one batch of two from the same noise
(Denoise starts every prompt of a conditioning from the one noise of a batch-1 latent). While the
U-Net samples, an ``EditPatch`` (``nodes.attention``) makes the edit row attend as the source row
does, on the positive (prompt) rows only, as the paper's controller does:

* cross-attention, for the first ``cross_steps`` of the steps (or a word's own window,
  ``nodes.p2p_windows``): the edit's attention probabilities become the source's, mapped to the
  edit's tokens (``nodes.p2p_tokens``: replace, refine);
  reweighting scales the edit's probabilities per token at every step (past the window, its
  own), since on a small model the last steps alone undo a reweight that stops with the window;
* self-attention, for the first ``self_steps``: the edit takes the source's self-attention
  probabilities (feature maps up to 32x32, as the paper), which keeps the layout;
* local blending, optional: after each step from ``blend_start`` on, the latents outside a mask
  made from the chosen words' cross-attention stay the source's.

No probabilities are materialised to do this. Attention is ``probs @ values``, and every edit is
linear in the probabilities, so ``(source probs @ M) @ V == source probs @ (M @ V)``: the edit row
is computed by the same scaled-dot-product call as diffusers' processor, with the source's query
and key and mapped (or scaled) values. So an identity edit (identical prompts, factors 1) gives
exactly the plain bits, and memory stays that of plain attention.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import Field

from nodeflow import Context, Widget, node
from nodes.attention import AttentionCall, Layer, Sampling, sdpa
from nodes.attention_record import in_window
from nodes.p2p_tokens import (
    identity_mapper,
    positions_of,
    refinement_mapper,
    replacement_mapper,
)
from nodes.p2p_windows import parse_word_windows, token_windows
from nodes.types import Conditioning, TextEncoder, UNet

__all__ = ["EditPatch", "LocalBlend", "parse_factors", "prompt_to_prompt"]

Mode = Literal["replace", "refine", "reweight"]
SELF_ATTENTION_MAX_QUERIES = 32 * 32
"""Self-attention is injected on feature maps up to this many cells, as in the paper's code."""


def parse_factors(text: str) -> list[tuple[str, float]]:
    """``"red:2, circle:0.5"`` -> [("red", 2.0), ("circle", 0.5)]."""
    factors = []
    for item in text.replace(";", ",").split(","):
        if not item.strip():
            continue
        word, sep, value = item.partition(":")
        try:
            factor = float(value) if sep else math.nan
        except ValueError:
            factor = math.nan
        if not word.strip() or not math.isfinite(factor):
            raise ValueError(f"reweight {text!r}: write word:factor pairs, e.g. 'red:2, sky:0.5'")
        factors.append((word.strip(), factor))
    return factors


@dataclass(frozen=True, eq=False)
class LocalBlend:
    """Keep the source's latents outside the mask of ``positions`` (per prompt: token positions
    of the chosen words) from step fraction ``start`` on, as the paper's ``LocalBlend``: the
    words' cross-attention of the largest feature map below the latent's own resolution (the
    largest of all where every map is at it), averaged over the steps so far, summed
    over the words, max-pooled 3x3, upsampled to the latent, above ``threshold`` of its range,
    the source's or the edit's. The paper divides by the maximum only; a softmax map has a floor
    (the small demo model's maps sit well above zero everywhere), so the range is used: with
    the maximum alone, everything would be above 0.3 and nothing kept. It acts after each step
    whose index over the step count is at least ``start`` (the paper's ``start_blend=0.2``):
    the first steps' maps are too vague to draw a mask from.

    Why not the latent's own resolution: the paper's mask comes from Stable Diffusion's 16x16
    maps of a 64x64 latent, and its attention store never keeps the full-resolution ones. The
    demo model's U-Net (v2b) has cross-attention at its 16x16 latent's resolution, grown onto
    it late (``nodes/demo/grow.py``), and those maps do not localise a word: over 100 held-out
    captions the shape word's map (above its minimum) puts 12.4% of its mass on shapes that
    cover 12.7% of the picture, against 20.7% in its 8x8 maps (``tests/benchmarks/
    bench_map_localisation.py``, BENCHMARKS.md). A mask drawn from them kept 10% of
    the latent cells in ``tests/nodes/test_p2p.py``'s edit and left its circle red; from the 8x8
    maps (what the blend read before that U-Net, its finest then) 45%, and the circle green."""

    positions: tuple[tuple[int, ...], ...]
    threshold: float = 0.3
    start: float = 0.2


@dataclass(frozen=True, eq=False)
class EditPatch:
    """The edit as tensors: ``mapper`` [source tokens, edit tokens], ``residual`` [edit tokens]
    (the share of its own attention an edit token keeps: refine's 1 - alpha, else 0),
    ``weights`` [edit tokens] (reweight), the windows as fractions of the steps, and an optional
    local blend. ``word_windows`` gives some edit tokens their own cross-attention window
    ((token positions, fraction) pairs, ``nodes.p2p_windows``); the others keep ``cross_steps``.
    Rows: [source, edit] of the positive half."""

    mapper: Any
    residual: Any
    weights: Any
    cross_steps: float
    self_steps: float
    blend: LocalBlend | None = None
    target: str = "unet"
    word_windows: tuple[tuple[tuple[int, ...], float], ...] = ()

    @property
    def reweights(self) -> bool:
        """Whether any factor differs from 1: reweighting then holds at every step, also past
        the injection window (it edits the edit's own attention, not what it copies)."""
        return bool((self.weights != 1).any())

    def start(self, model: Any, sampling: Sampling) -> _Editor:
        editor = _Editor(self)
        if self.blend is not None:
            sampling.latent_hooks.append(editor.blend_latents)
        return editor


@dataclass
class _Editor:
    patch: EditPatch
    _on: dict[Any, tuple[Any, Any, Any, Any, bool]] = field(default_factory=dict)
    blend_sums: dict[tuple[int, int], Any] = field(default_factory=dict)

    def acts(self, layer: Layer, sampling: Sampling) -> bool:
        patch = self.patch
        if layer.cross:
            return (
                patch.blend is not None
                or patch.reweights
                or in_window(sampling, 0.0, patch.cross_steps)
                or any(in_window(sampling, 0.0, f) for _, f in patch.word_windows)
            )
        small = layer.size[0] * layer.size[1] <= SELF_ATTENTION_MAX_QUERIES
        return small and in_window(sampling, 0.0, patch.self_steps)

    def injected(self, sampling: Sampling) -> bool | Any:
        """Which edit tokens take the source's cross-attention at this step: True or False when
        all of them do or none does (the plain-window computation), else a 0/1 vector [edit
        tokens] (the paper's ``alpha_time_words`` row) where word windows and the global one
        disagree."""
        import torch

        patch = self.patch
        default = in_window(sampling, 0.0, patch.cross_steps)
        states = [in_window(sampling, 0.0, f) for _, f in patch.word_windows]
        if all(state == default for state in states):
            return default
        alpha = torch.full((patch.weights.shape[0],), float(default))
        for (positions, _), state in zip(patch.word_windows, states, strict=True):
            alpha[list(positions)] = float(state)
        return alpha

    def _tensors(self, device: Any, dtype: Any) -> tuple[Any, Any, Any, Any, bool]:
        key = (str(device), dtype)
        if key not in self._on:
            p = self.patch
            weights = p.weights.to(device, dtype)
            residual = (p.residual * p.weights).to(device, dtype)
            self._on[key] = (
                p.mapper.to(device, dtype),
                weights,
                residual,
                p.residual.to(device, dtype),
                bool(p.residual.any()),
            )
        return self._on[key]

    def attend(self, call: AttentionCall) -> Any:
        sampling = call.sampling
        rows = sampling.positive_rows(call.query.shape[0])
        if rows.stop - rows.start != 2:
            raise ValueError("prompt-to-prompt denoises [source, edit]: give it a batch-1 latent")
        source, edit = rows.start, rows.start + 1
        cross = call.layer.cross
        if cross and self.patch.blend is not None:
            self._observe(call, rows)
        # self-attention calls only come inside their window (``acts``)
        injecting = self.injected(sampling) if cross else True
        if injecting is False and not (cross and self.patch.reweights):
            return None
        query, key, value = call.query, call.key, call.value.clone()
        extra = None
        if injecting is not False:
            query, key = query.clone(), key.clone()
            query[edit], key[edit] = call.query[source], call.key[source]
        if cross:
            mapper, weights, residual, own_share, keeps_own = self._tensors(
                value.device, value.dtype
            )
            own = call.value[edit] * weights[:, None]  # [heads, tokens, head_dim]
            if injecting is False:  # past the window: the edit's own attention, still reweighted
                value[edit] = own
            elif injecting is True:
                value[edit] = mapper @ own
                if keeps_own:
                    extra = self._own(call, edit, residual)
            else:  # per-word windows: column t is alpha_t * replaced + (1 - alpha_t) * own
                alpha = injecting.to(value.device, value.dtype)
                value[edit] = (mapper * alpha) @ own
                extra = self._own(call, edit, (1 - alpha * (1 - own_share)) * weights)
        output = sdpa(query, key, value, call.mask)
        if extra is not None:
            output[edit] = output[edit] + extra[0]
        return output

    @staticmethod
    def _own(call: AttentionCall, edit: int, share: Any) -> Any:
        """The edit row's own attention with each token's value scaled by ``share``:
        ``own probs @ (share * V)``, the part of an edit token's attention that is its own."""
        return sdpa(
            call.query[edit : edit + 1],
            call.key[edit : edit + 1],
            (call.value[edit] * share[:, None])[None],
            None,
        )

    def _observe(self, call: AttentionCall, rows: slice) -> None:
        probs = call.probs[rows].float().mean(dim=1)
        size = call.layer.size
        previous = self.blend_sums.get(size)
        self.blend_sums[size] = probs if previous is None else previous + probs

    def blend_latents(self, latents: Any, sampling: Sampling) -> Any:
        import torch
        import torch.nn.functional as F

        blend = self.patch.blend
        if blend is None or not self.blend_sums or sampling.fraction < blend.start:
            return latents
        below = {size: s for size, s in self.blend_sums.items() if size[0] < latents.shape[-2]}
        (height, width), sums = max((below or self.blend_sums).items(), key=lambda kv: kv[0][0])
        maps = sums.reshape(sums.shape[0], height, width, sums.shape[-1])
        words = torch.stack(
            [maps[i, :, :, list(p)].sum(dim=-1) for i, p in enumerate(blend.positions)]
        )[:, None]
        mask = F.max_pool2d(words, 3, stride=1, padding=1)
        mask = F.interpolate(mask, size=latents.shape[-2:])
        low = mask.flatten(1).min(dim=1).values[:, None, None, None]
        high = mask.flatten(1).max(dim=1).values[:, None, None, None]
        mask = (mask - low) / (high - low).clamp_min(1e-12) > blend.threshold
        mask = (mask[:1] | mask).to(latents.dtype)
        return latents[:1] + mask * (latents - latents[:1])

    def finish(self, sampling: Sampling) -> None:
        return None


def edit_patch(
    tokenizer: Any,
    source: str,
    edit: str,
    mode: Mode,
    cross_steps: float,
    self_steps: float,
    reweight: str = "",
    blend_words: str = "",
    blend_threshold: float = 0.3,
    word_cross_steps: str = "",
    blend_start: float = 0.2,
) -> EditPatch:
    """The patch for editing ``source`` into ``edit`` (see ``prompt_to_prompt``)."""
    import torch

    length = int(tokenizer.model_max_length)
    residual = torch.zeros(length)
    if mode == "reweight":
        mapper = identity_mapper(tokenizer)
    elif mode == "replace":
        mapper = replacement_mapper(tokenizer, source, edit)
    else:
        mapper, alphas = refinement_mapper(tokenizer, source, edit)
        residual = 1 - alphas
    weights = torch.ones(length)
    for word, factor in parse_factors(reweight):
        weights[positions_of(tokenizer, edit, word)] = factor
    blend = None
    if blend_words.strip():
        words = blend_words.replace(",", " ").split()
        per_prompt = []
        for text in (source, edit):
            present = [w for w in words if w.lower() in text.lower().split()]
            if not present:
                raise ValueError(f"none of the blend words {blend_words!r} is in {text!r}")
            per_prompt.append(tuple(positions_of(tokenizer, text, " ".join(present))))
        blend = LocalBlend(tuple(per_prompt), blend_threshold, blend_start)
    windows = token_windows(tokenizer, edit, parse_word_windows(word_cross_steps))
    return EditPatch(
        mapper, residual, weights, cross_steps, self_steps, blend, word_windows=windows
    )


class PromptToPromptOutputs(NamedTuple):
    unet: UNet
    conditioning: Conditioning


Fraction = Annotated[float, Field(ge=0, le=1)]


@node("PromptToPrompt", category="conditioning")
def prompt_to_prompt(
    ctx: Context,
    unet: UNet,
    text_encoder: TextEncoder,
    source: Annotated[str, Widget(multiline=True)] = "",
    edit: Annotated[str, Widget(multiline=True)] = "",
    mode: Mode = "replace",
    cross_steps: Fraction = 0.8,
    self_steps: Fraction = 0.4,
    reweight: str = "",
    blend_words: str = "",
    blend_threshold: Fraction = 0.3,
    word_cross_steps: str = "",
    blend_start: Fraction = 0.2,
) -> PromptToPromptOutputs:
    """Edit a picture by editing its prompt: denoise ``source`` and ``edit`` as one pair.

    ``mode``: replace swaps words one for one (token counts may differ); refine aligns added or
    changed words by tokens; reweight keeps the source prompt (``edit`` empty) and only scales
    words. ``reweight`` scales words' attention in the edit, e.g. "red:2, circle:0.5". The edit
    follows the source's cross-attention for the first ``cross_steps`` of the steps and its
    self-attention for the first ``self_steps``; ``word_cross_steps`` gives words of the edit
    their own cross-attention window, e.g. "square:0.2" (the paper's per-word
    ``cross_replace_steps``: a shorter window lets a word draw a new shape while the rest keeps
    the source's layout). ``blend_words`` (e.g. "circle") keeps the pixels outside those words'
    attention the source's, from step fraction ``blend_start`` on. Link ``unet`` and
    ``conditioning`` into CFG as the positive, and Denoise a batch-1 latent: the output is the
    pair [source, edit].
    """
    from nodes.text import encode_text

    if not source.strip():
        raise ValueError("give the source prompt")
    if mode == "reweight":
        if edit.strip() and edit.strip() != source.strip():
            raise ValueError("reweight edits the source prompt itself: leave edit empty")
        edit = source
    elif not edit.strip():
        raise ValueError(f"{mode} needs an edited prompt")
    patch = edit_patch(
        text_encoder.tokenizer,
        source,
        edit,
        mode,
        cross_steps,
        self_steps,
        reweight,
        blend_words,
        blend_threshold,
        word_cross_steps,
        blend_start,
    )
    ctx.models.use(*text_encoder.models)
    device = text_encoder.model.device
    pair = [encode_text(text_encoder, text, device) for text in (source, edit)]
    conditioning = _stack(pair)
    return PromptToPromptOutputs(
        unet=dataclasses.replace(unet, patches=(*unet.patches, patch)), conditioning=conditioning
    )


def _stack(conditionings: list[Conditioning]) -> Conditioning:
    import torch

    embeds = torch.cat([c.embeds for c in conditionings])
    pooled = None
    if all(c.pooled is not None for c in conditionings):
        pooled = torch.cat([c.pooled for c in conditionings])
    return Conditioning(embeds=embeds, pooled=pooled)
