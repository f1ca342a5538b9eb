"""Attention patches: controllers that work inside a U-Net's attention layers while it samples.

This is the second kind of model patch beside LoRA's forward hooks, installed by the same
``nodes.lora.patched`` for the duration of one node and removed after, so a shared model is never
left changed (DESIGN: "One patch mechanism for models"). A patch value is immutable and lives in
``UNet.patches`` (so it is part of the cache key like a LoRA); ``start`` makes the per-run
``Controller`` that holds whatever the run accumulates, so two runs never share state.

While installed, every attention module of the model gets an ``AttentionSwitch`` processor
(diffusers' ``set_attn_processor``; the originals are put back on exit). A switch asks the active
controllers whether they act on this call; when none does, it calls the original processor
untouched, so a step or layer outside every controller's window gives exactly the plain bits.
When one does, the switch computes query, key and value as diffusers' ``AttnProcessor2_0`` does
and lets the controllers observe (recorders) or replace (editors) the attention.

The sampling loop tells patches where it is through a ``Sampling`` object (step index, step
count, batch layout, latent size); patches never become parameters of ``sample()`` and the loop
knows no controller by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "ATTENTION_RECORD",
    "AttentionCall",
    "AttentionPatch",
    "AttentionSwitch",
    "Controller",
    "Layer",
    "Sampling",
    "installed",
    "sdpa",
]

ATTENTION_RECORD = "attention"
"""The ``Sampling.records`` key a recorder leaves its ``nodes.types.AttentionStore`` under."""


@dataclass
class Sampling:
    """What a sampling loop tells the patches installed for it.

    ``halves`` is 2 under classifier-free guidance, whose U-Net batch is ``[negative rows,
    positive rows]``, and 1 without it; ``pictures`` is the number of rows per half (the latent
    batch). Patches hand results back in ``records`` (read by the node after sampling) and may
    change the latents after each step through ``latent_hooks`` (local blending).
    """

    steps: int = 1
    pictures: int = 1
    halves: int = 1
    latent_size: tuple[int, int] = (1, 1)
    step: int = 0
    records: dict[str, Any] = field(default_factory=dict)
    latent_hooks: list[Callable[[Any, Sampling], Any]] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        """How far sampling is, in [0, 1): the step index over the step count."""
        return self.step / max(self.steps, 1)

    def positive_rows(self, batch: int) -> slice:
        """The rows of a U-Net batch of ``batch`` that carry the prompts (not the negative)."""
        if batch != self.halves * self.pictures:
            raise ValueError(
                f"attention controller: a U-Net batch of {batch} rows is not {self.halves} x "
                f"{self.pictures} pictures"
            )
        return slice(batch - self.pictures, batch)

    def after_step(self, latents: Any) -> Any:
        """The latents after every patch's latent hook (none: the same tensor)."""
        for hook in self.latent_hooks:
            latents = hook(latents, self)
        return latents


@dataclass(frozen=True)
class Layer:
    """One attention module: its name in the U-Net, cross or self, and its feature-map size."""

    name: str
    cross: bool
    size: tuple[int, int]
    """(height, width) of the feature map its queries come from."""


def layer_size(queries: int, latent_size: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) of a feature map of ``queries`` cells with the latent's aspect."""
    height, width = latent_size
    factor = math.sqrt(height * width / queries)
    return max(1, round(height / factor)), max(1, round(width / factor))


@dataclass
class AttentionCall:
    """One attention computation, heads split: tensors ``[batch, heads, tokens, head_dim]``."""

    layer: Layer
    sampling: Sampling
    query: Any
    key: Any
    value: Any
    mask: Any
    scale: float
    _probs: Any = None

    @property
    def probs(self) -> Any:
        """softmax(q k^T * scale) [batch, heads, queries, keys], computed once when asked."""
        if self._probs is None:
            scores = (self.query @ self.key.transpose(-1, -2)) * self.scale
            if self.mask is not None:
                scores = scores + self.mask
            self._probs = scores.softmax(dim=-1)
        return self._probs


def sdpa(query: Any, key: Any, value: Any, mask: Any = None) -> Any:
    """Attention as diffusers' ``AttnProcessor2_0`` computes it, so an identity edit is exact."""
    import torch.nn.functional as F

    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False
    )


class Controller(Protocol):
    """A patch's per-run state. ``acts`` is asked first and must be cheap: a switch whose
    controllers all decline runs the original processor. ``attend`` returns the attention output
    ``[batch, heads, queries, head_dim]`` to use, or None to leave it (a recorder)."""

    def acts(self, layer: Layer, sampling: Sampling) -> bool: ...

    def attend(self, call: AttentionCall) -> Any: ...

    def finish(self, sampling: Sampling) -> None: ...


class AttentionPatch(Protocol):
    """A value in ``UNet.patches`` that works through attention processors."""

    target: str

    def start(self, model: Any, sampling: Sampling) -> Controller: ...


def is_attention_patch(patch: Any) -> bool:
    return callable(getattr(patch, "start", None))


class AttentionSwitch:
    """The processor installed on each attention module while controllers are active."""

    def __init__(self, name: str, original: Any, controllers: list[Any], sampling: Sampling):
        self.name = name
        self.original = original
        self.controllers = controllers
        self.sampling = sampling

    def __call__(
        self,
        attn: Any,
        hidden_states: Any,
        encoder_hidden_states: Any = None,
        attention_mask: Any = None,
        temb: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        cross = encoder_hidden_states is not None
        queries = hidden_states.shape[1] if hidden_states.ndim == 3 else None
        if queries is None:
            queries = hidden_states.shape[2] * hidden_states.shape[3]
        layer = Layer(self.name, cross, layer_size(queries, self.sampling.latent_size))
        active = [c for c in self.controllers if c.acts(layer, self.sampling)]
        if not active:
            return self.original(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs
            )
        return self._controlled(
            attn, hidden_states, encoder_hidden_states, attention_mask, temb, layer, active
        )

    def _controlled(
        self,
        attn: Any,
        hidden_states: Any,
        encoder_hidden_states: Any,
        attention_mask: Any,
        temb: Any,
        layer: Layer,
        active: list[Any],
    ) -> Any:
        """``AttnProcessor2_0.__call__`` with the attention itself handed to the controllers."""
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(
                attention_mask, sequence_length, batch_size
            )
            attention_mask = attention_mask.view(
                batch_size, attn.heads, -1, attention_mask.shape[-1]
            )
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        call = AttentionCall(
            layer, self.sampling, query, key, value, attention_mask, float(attn.scale)
        )
        output = None
        for controller in active:
            result = controller.attend(call)
            if result is not None:
                if output is not None:
                    raise ValueError(f"two attention editors act on {self.name}; use one")
                output = result
        if output is None:
            output = sdpa(query, key, value, attention_mask)

        hidden_states = output.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(
                batch_size, channel, height, width
            )
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextmanager
def installed(model: Any, patches: list[Any], sampling: Sampling | None) -> Iterator[None]:
    """Start each attention patch's controller and switch every attention processor of
    ``model`` to one that consults them; the original processors are restored on exit (also on
    an exception), and each controller's ``finish`` hands its results to ``sampling.records``."""
    if not patches:
        yield
        return
    if not hasattr(model, "attn_processors"):
        raise ValueError(f"{type(model).__name__} has no attention processors to patch")
    sampling = sampling if sampling is not None else Sampling()
    controllers = [patch.start(model, sampling) for patch in patches]
    originals = dict(model.attn_processors)
    switches = {
        name: AttentionSwitch(name.removesuffix(".processor"), processor, controllers, sampling)
        for name, processor in originals.items()
    }
    model.set_attn_processor(switches)
    try:
        yield
    finally:
        model.set_attn_processor(originals)
    for controller in controllers:
        controller.finish(sampling)
