"""State-dict key conversion between the single-file LDM/SGM layout and the diffusers layout.

Single-file Stable Diffusion checkpoints (SD 1.x, SD 2.x, SDXL) keep the weights in the layout of
the original CompVis/Stability code: the U-Net under ``model.diffusion_model.``, the VAE under
``first_stage_model.``, the OpenCLIP text encoders under ``cond_stage_model.model.`` (SD 2.x) or
``conditioner.embedders.1.model.`` (SDXL). Loading them into diffusers/transformers models means
renaming every key. The caller strips those prefixes; everything here works on prefix-less keys.

Why not diffusers' own converters? They need a config up front (``layers_per_block``, block
types) that a single file does not carry, and they copy or silently drop what they do not
recognise. Here the layout is read from the keys themselves, renamed tensors are the very same
objects (a multi-GB checkpoint is not duplicated in memory), and a key that cannot be placed
raises ``ValueError`` naming it, so a checkpoint of an unexpected architecture fails loudly
instead of loading with random weights.

Conversion is at module granularity: a table maps each LDM module prefix (``input_blocks.1.0``)
to a diffusers one (``down_blocks.0.resnets.0``), and each row says how the names *inside* that
module change (resnets rename their layers, spatial transformers keep them, VAE attention turns
1x1 convs into linear weights).

Keys deliberately dropped, because no diffusers/transformers module holds them:

* LDM U-Net and VAE: ``model_ema.*`` (EMA bookkeeping, e.g. ``model_ema.decay``); LDM VAE:
  ``loss.*`` (the training loss's LPIPS and discriminator weights in unpruned VAE files).
* OpenCLIP: ``logit_scale`` (the contrastive temperature; only the image-text loss uses it).
* HF CLIP: ``text_model.embeddings.position_ids`` (a constant ``arange`` buffer that older
  transformers versions saved).

Results are views of their inputs wherever possible; a caller that serialises them (safetensors
refuses shared or non-contiguous tensors) should make them contiguous copies first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "hf_to_openclip",
    "openclip_to_hf",
    "unet_diffusers_prefix_map",
    "unet_ldm_prefix_map",
    "unet_to_diffusers",
    "unet_to_ldm",
    "vae_to_diffusers",
    "vae_to_ldm",
]

IGNORED_LDM_UNET_PREFIXES: tuple[str, ...] = ("model_ema.",)
IGNORED_LDM_VAE_PREFIXES: tuple[str, ...] = ("model_ema.", "loss.")
IGNORED_OPENCLIP_KEYS: frozenset[str] = frozenset({"logit_scale"})
IGNORED_HF_CLIP_KEYS: frozenset[str] = frozenset({"text_model.embeddings.position_ids"})


# ---------------------------------------------------------------------------------------------
# Renaming inside one module


@dataclass(frozen=True)
class _Inner:
    """How the keys inside one module are renamed, LDM name -> diffusers name.

    ``renames`` maps inner module paths ("" is the module itself, for a plain conv or linear).
    ``kept`` lists first names that are identical in both layouts, with everything below them.
    ``conv1x1`` lists inner LDM modules whose weight is a 1x1 conv in LDM and a Linear weight in
    diffusers, so their weights are reshaped (as views) on the way.
    """

    renames: Mapping[str, str] = field(default_factory=dict)
    kept: frozenset[str] = frozenset()
    conv1x1: frozenset[str] = frozenset()

    @cached_property
    def inverse(self) -> dict[str, str]:
        """diffusers name -> LDM name, for the diffusers-to-LDM direction."""
        return {new: old for old, new in self.renames.items()}


_LEAF = _Inner(renames={"": ""})
_UNET_RESNET = _Inner(
    renames={
        "in_layers.0": "norm1",
        "in_layers.2": "conv1",
        "emb_layers.1": "time_emb_proj",
        "out_layers.0": "norm2",
        "out_layers.3": "conv2",
        "skip_connection": "conv_shortcut",
    }
)
# Spatial transformers have the same names in both layouts (``transformer_blocks.N.attn1.to_q``...).
_SPATIAL_TRANSFORMER = _Inner(kept=frozenset({"norm", "proj_in", "transformer_blocks", "proj_out"}))
_VAE_RESNET = _Inner(
    renames={
        "norm1": "norm1",
        "conv1": "conv1",
        "norm2": "norm2",
        "conv2": "conv2",
        "nin_shortcut": "conv_shortcut",
    }
)
_VAE_ATTENTION = _Inner(
    renames={"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"},
    conv1x1=frozenset({"q", "k", "v", "proj_out"}),
)


def _conv1x1_to_linear(key: str, tensor: Tensor) -> Tensor:
    """[C, C, 1, 1] -> [C, C] as a view; LDM's VAE attention uses 1x1 convs, diffusers Linear."""
    if tensor.ndim == 2:
        return tensor
    if tensor.ndim == 4 and tuple(tensor.shape[2:]) == (1, 1):
        return tensor[:, :, 0, 0]
    raise ValueError(f"{key!r}: expected a 1x1 conv weight, got shape {tuple(tensor.shape)}")


def _linear_to_conv1x1(key: str, tensor: Tensor) -> Tensor:
    """[C, C] -> [C, C, 1, 1] as a view, the inverse of `_conv1x1_to_linear`."""
    if tensor.ndim == 4:
        return tensor
    if tensor.ndim == 2:
        return tensor[:, :, None, None]
    raise ValueError(f"{key!r}: expected a linear weight, got shape {tuple(tensor.shape)}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _rename_inner(
    key: str, inner: str, tensor: Tensor, spec: _Inner, *, to_diffusers: bool
) -> tuple[str, Tensor]:
    """The new name (below the module) and tensor of one key, or ValueError naming the key."""
    if inner.split(".", 1)[0] in spec.kept and "." in inner:
        return inner, tensor
    module, _, param = inner.rpartition(".")
    renames = spec.renames if to_diffusers else spec.inverse
    if module not in renames:
        raise ValueError(f"cannot place key {key!r}: unknown parameter {inner!r} in its module")
    new_module = renames[module]
    ldm_module = module if to_diffusers else new_module
    if param == "weight" and ldm_module in spec.conv1x1:
        reshape = _conv1x1_to_linear if to_diffusers else _linear_to_conv1x1
        tensor = reshape(key, tensor)
    return _join(new_module, param), tensor


# ---------------------------------------------------------------------------------------------
# Renaming whole state dicts through a module table

_Row = tuple[str, str, _Inner]  # (LDM module prefix, diffusers module prefix, inner renames)
_Table = dict[str, tuple[str, _Inner]]  # source module prefix -> (target prefix, inner renames)


def _table(rows: Iterable[_Row], *, to_diffusers: bool) -> _Table:
    if to_diffusers:
        return {ldm: (diffusers, inner) for ldm, diffusers, inner in rows}
    return {diffusers: (ldm, inner) for ldm, diffusers, inner in rows}


def _find_module(key: str, table: _Table) -> str | None:
    """The longest module prefix of ``key`` that the table knows, if any."""
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in table:
            return prefix
    return None


def _convert(
    state: Mapping[str, Tensor],
    table: _Table,
    *,
    to_diffusers: bool,
    ignored: tuple[str, ...] = (),
    what: str,
) -> dict[str, Tensor]:
    """Rename every key through the table; a key it cannot place is an error, never dropped."""
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        if key.startswith(ignored):
            continue
        module = _find_module(key, table)
        if module is None:
            raise ValueError(f"cannot place {what} key {key!r}: no module of the layout holds it")
        target, inner = table[module]
        name, value = _rename_inner(
            key, key[len(module) + 1 :], tensor, inner, to_diffusers=to_diffusers
        )
        out[_join(target, name)] = value
    return out


# ---------------------------------------------------------------------------------------------
# U-Net layout


@dataclass(frozen=True)
class _Level:
    """One resolution level: its resnets, which of them carry attention, whether it resamples."""

    resnets: int
    attentions: frozenset[int]
    sampler: bool


@dataclass(frozen=True)
class _UNetLayout:
    """What the LDM numbering depends on; the diffusers numbering follows from it."""

    down: tuple[_Level, ...]
    up: tuple[_Level, ...]
    mid_resnets: int
    mid_attentions: int
    add_embedding: bool


def _down_rows(levels: tuple[_Level, ...]) -> list[_Row]:
    """input_blocks: one entry per resnet (with its attention at .1), then one per downsampler."""
    rows: list[_Row] = [("input_blocks.0.0", "conv_in", _LEAF)]
    k = 1
    for i, level in enumerate(levels):
        for j in range(level.resnets):
            rows.append((f"input_blocks.{k}.0", f"down_blocks.{i}.resnets.{j}", _UNET_RESNET))
            if j in level.attentions:
                attention = f"down_blocks.{i}.attentions.{j}"
                rows.append((f"input_blocks.{k}.1", attention, _SPATIAL_TRANSFORMER))
            k += 1
        if level.sampler:
            rows.append((f"input_blocks.{k}.0.op", f"down_blocks.{i}.downsamplers.0.conv", _LEAF))
            k += 1
    return rows


def _mid_rows(resnets: int, attentions: int) -> list[_Row]:
    """middle_block: resnet, attention, resnet... numbered in sequence."""
    rows: list[_Row] = []
    m = 0
    for j in range(resnets):
        rows.append((f"middle_block.{m}", f"mid_block.resnets.{j}", _UNET_RESNET))
        m += 1
        if j < attentions:
            rows.append((f"middle_block.{m}", f"mid_block.attentions.{j}", _SPATIAL_TRANSFORMER))
            m += 1
    return rows


def _up_rows(levels: tuple[_Level, ...]) -> list[_Row]:
    """output_blocks: one entry per resnet; a level's last entry also holds its upsampler."""
    rows: list[_Row] = []
    k = 0
    for i, level in enumerate(levels):
        for j in range(level.resnets):
            rows.append((f"output_blocks.{k}.0", f"up_blocks.{i}.resnets.{j}", _UNET_RESNET))
            m = 1
            if j in level.attentions:
                attention = f"up_blocks.{i}.attentions.{j}"
                rows.append((f"output_blocks.{k}.1", attention, _SPATIAL_TRANSFORMER))
                m = 2
            if level.sampler and j == level.resnets - 1:
                upsampler = f"up_blocks.{i}.upsamplers.0.conv"
                rows.append((f"output_blocks.{k}.{m}.conv", upsampler, _LEAF))
            k += 1
    return rows


def _unet_rows(layout: _UNetLayout) -> list[_Row]:
    rows: list[_Row] = [
        ("time_embed.0", "time_embedding.linear_1", _LEAF),
        ("time_embed.2", "time_embedding.linear_2", _LEAF),
    ]
    if layout.add_embedding:
        rows.append(("label_emb.0.0", "add_embedding.linear_1", _LEAF))
        rows.append(("label_emb.0.2", "add_embedding.linear_2", _LEAF))
    rows += _down_rows(layout.down)
    rows += _mid_rows(layout.mid_resnets, layout.mid_attentions)
    rows += _up_rows(layout.up)
    rows += [("out.0", "conv_norm_out", _LEAF), ("out.2", "conv_out", _LEAF)]
    return rows


# Layout from diffusers keys: the counts are right there in the names.

_DIFFUSERS_LEVEL_KEY = re.compile(
    r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\."
)
_DIFFUSERS_MID_KEY = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)\.")


@dataclass
class _LevelSeen:
    resnets: set[int] = field(default_factory=set)
    attentions: set[int] = field(default_factory=set)
    sampler: bool = False

    def level(self) -> _Level:
        count = max(self.resnets, default=-1) + 1
        return _Level(count, frozenset(self.attentions), self.sampler)


def _levels(seen: dict[int, _LevelSeen]) -> tuple[_Level, ...]:
    count = max(seen, default=-1) + 1
    return tuple(seen.get(i, _LevelSeen()).level() for i in range(count))


def _layout_from_diffusers(keys: Iterable[str]) -> _UNetLayout:
    seen: dict[str, dict[int, _LevelSeen]] = {"down": {}, "up": {}}
    mid: dict[str, set[int]] = {"resnets": set(), "attentions": set()}
    add_embedding = False
    for key in keys:
        add_embedding = add_embedding or key.startswith("add_embedding.")
        if match := _DIFFUSERS_LEVEL_KEY.match(key):
            side, level, kind, index = match.groups()
            entry = seen[side].setdefault(int(level), _LevelSeen())
            if kind == "resnets":
                entry.resnets.add(int(index))
            elif kind == "attentions":
                entry.attentions.add(int(index))
            else:
                entry.sampler = True
        elif match := _DIFFUSERS_MID_KEY.match(key):
            mid[match.group(1)].add(int(match.group(2)))
    return _UNetLayout(
        down=_levels(seen["down"]),
        up=_levels(seen["up"]),
        mid_resnets=max(mid["resnets"], default=-1) + 1,
        mid_attentions=max(mid["attentions"], default=-1) + 1,
        add_embedding=add_embedding,
    )


# Layout from LDM keys: classify what each numbered entry holds, then walk the entries in order.

_LDM_ENTRY_KEY = re.compile(r"(input_blocks|output_blocks)\.(\d+)\.(\d+)\.([^.]+)")
_LDM_MID_KEY = re.compile(r"middle_block\.(\d+)\.([^.]+)")
_RESNET, _ATTENTION, _DOWNSAMPLER, _UPSAMPLER = "resnet", "attention", "downsampler", "upsampler"
_LDM_KIND_OF_NAME: dict[str, str] = {
    "in_layers": _RESNET,
    "emb_layers": _RESNET,
    "out_layers": _RESNET,
    "skip_connection": _RESNET,
    "norm": _ATTENTION,
    "proj_in": _ATTENTION,
    "proj_out": _ATTENTION,
    "transformer_blocks": _ATTENTION,
    "op": _DOWNSAMPLER,
    "conv": _UPSAMPLER,
}


@dataclass
class _Entry:
    """What one numbered LDM block (``input_blocks.4``) holds: kind per sub-index, a sample key."""

    kinds: dict[int, str] = field(default_factory=dict)
    key: str = ""

    def add(self, sub: int, name: str, key: str) -> None:
        kind = _LDM_KIND_OF_NAME.get(name)
        if kind is None:
            raise ValueError(f"cannot place LDM U-Net key {key!r}: unknown module {name!r}")
        if self.kinds.setdefault(sub, kind) != kind:
            raise ValueError(
                f"cannot place LDM U-Net key {key!r}: {kind} weights among {self.kinds[sub]} ones"
            )
        self.key = self.key or key

    def pattern(self) -> tuple[str, ...]:
        """The kinds in sub-index order, or () when the sub-indices are not 0, 1, ..."""
        if sorted(self.kinds) != list(range(len(self.kinds))):
            return ()
        return tuple(self.kinds[m] for m in range(len(self.kinds)))


def _ldm_entries(keys: Iterable[str]) -> tuple[dict[str, dict[int, _Entry]], list[str]]:
    """input/output block entries by number, and the middle block's kinds in order."""
    entries: dict[str, dict[int, _Entry]] = {"input_blocks": {}, "output_blocks": {}}
    middle = _Entry()
    for key in keys:
        if match := _LDM_ENTRY_KEY.match(key):
            blocks, number, sub, name = match.groups()
            if blocks == "input_blocks" and number == "0":
                continue  # conv_in, a plain leaf
            entries[blocks].setdefault(int(number), _Entry()).add(int(sub), name, key)
        elif match := _LDM_MID_KEY.match(key):
            middle.add(int(match.group(1)), match.group(2), key)
    return entries, [middle.kinds[m] for m in sorted(middle.kinds)]


def _walk_levels(
    entries: dict[int, _Entry], first: int, closing: Mapping[tuple[str, ...], bool]
) -> tuple[_Level, ...]:
    """Group numbered entries into levels; a resampler closes a level, the end closes the last.

    ``closing`` maps each allowed entry content to whether it ends a level. A down level's
    downsampler is an entry of its own, an up level's upsampler shares its last resnet's entry.
    """
    levels: list[_Level] = []
    resnets = 0
    attentions: set[int] = set()
    for number in range(first, max(entries, default=first - 1) + 1):
        entry = entries.get(number)
        if entry is None:
            raise ValueError(f"LDM U-Net keys skip block number {number}")
        pattern = entry.pattern()
        if pattern not in closing:
            raise ValueError(
                f"cannot place LDM U-Net key {entry.key!r}: unexpected block {pattern}"
            )
        if _RESNET in pattern:
            if _ATTENTION in pattern:
                attentions.add(resnets)
            resnets += 1
        if closing[pattern]:
            levels.append(_Level(resnets, frozenset(attentions), True))
            resnets, attentions = 0, set()
    if resnets or not levels:
        levels.append(_Level(resnets, frozenset(attentions), False))
    return tuple(levels)


_INPUT_CLOSING: dict[tuple[str, ...], bool] = {
    (_RESNET,): False,
    (_RESNET, _ATTENTION): False,
    (_DOWNSAMPLER,): True,
}
_OUTPUT_CLOSING: dict[tuple[str, ...], bool] = {
    (_RESNET,): False,
    (_RESNET, _ATTENTION): False,
    (_RESNET, _UPSAMPLER): True,
    (_RESNET, _ATTENTION, _UPSAMPLER): True,
}


def _layout_from_ldm(keys: Iterable[str]) -> _UNetLayout:
    keys = list(keys)
    entries, middle = _ldm_entries(keys)
    return _UNetLayout(
        down=_walk_levels(entries["input_blocks"], 1, _INPUT_CLOSING),
        up=_walk_levels(entries["output_blocks"], 0, _OUTPUT_CLOSING),
        mid_resnets=middle.count(_RESNET),
        mid_attentions=middle.count(_ATTENTION),
        add_embedding=any(key.startswith("label_emb.0.") for key in keys),
    )


def unet_ldm_prefix_map(diffusers_keys: Iterable[str]) -> dict[str, str]:
    """LDM module prefix -> diffusers module prefix, at block granularity, for the U-Net whose
    diffusers state-dict keys are given (layout inferred from them: number of levels, layers per
    block, which levels have attentions, where up/downsamplers are, whether add_embedding exists).

    Useful beyond state dicts, e.g. to rename LoRA or patch targets between the two layouts.
    """
    return {
        ldm: diffusers for ldm, diffusers, _ in _unet_rows(_layout_from_diffusers(diffusers_keys))
    }


def unet_diffusers_prefix_map(ldm_keys: Iterable[str]) -> dict[str, str]:
    """Diffusers module prefix -> LDM module prefix for the U-Net whose LDM keys are given.

    The inverse of `unet_ldm_prefix_map`, for when the LDM weights are what is at hand (e.g. to
    apply a diffusers-format LoRA to a single-file model).
    """
    return {diffusers: ldm for ldm, diffusers, _ in _unet_rows(_layout_from_ldm(ldm_keys))}


def unet_to_diffusers(ldm: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an LDM U-Net state dict (``model.diffusion_model.`` stripped) to diffusers keys.

    The layout (levels, resnets per level, attentions, resamplers, SDXL's ``label_emb``) is read
    from the keys. Tensors are the input's own objects; ``model_ema.*`` keys are dropped.
    """
    table = _table(_unet_rows(_layout_from_ldm(ldm)), to_diffusers=True)
    return _convert(
        ldm, table, to_diffusers=True, ignored=IGNORED_LDM_UNET_PREFIXES, what="LDM U-Net"
    )


def unet_to_ldm(diffusers: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a diffusers ``UNet2DConditionModel`` state dict to LDM keys (no prefix added)."""
    table = _table(_unet_rows(_layout_from_diffusers(diffusers)), to_diffusers=False)
    return _convert(diffusers, table, to_diffusers=False, what="diffusers U-Net")


# ---------------------------------------------------------------------------------------------
# VAE


@dataclass(frozen=True)
class _VAELayout:
    """Level counts; only the decoder's matters for numbering (LDM counts its levels upwards)."""

    encoder_levels: int
    decoder_levels: int
    resnets: int


_VAE_LDM_PATTERNS = tuple(
    re.compile(p) for p in (r"encoder\.down\.(\d+)\.", r"decoder\.up\.(\d+)\.", r"\.block\.(\d+)\.")
)
_VAE_DIFFUSERS_PATTERNS = tuple(
    re.compile(p)
    for p in (
        r"encoder\.down_blocks\.(\d+)\.",
        r"decoder\.up_blocks\.(\d+)\.",
        r"\.resnets\.(\d+)\.",
    )
)


def _vae_layout(keys: Iterable[str], *, ldm: bool) -> _VAELayout:
    """Counts from the highest index seen; extra rows for absent modules do no harm."""
    patterns = _VAE_LDM_PATTERNS if ldm else _VAE_DIFFUSERS_PATTERNS
    counts = [0, 0, 0]
    for key in keys:
        for slot, pattern in enumerate(patterns):
            if match := pattern.search(key):
                counts[slot] = max(counts[slot], int(match.group(1)) + 1)
    return _VAELayout(*counts)


def _vae_rows(layout: _VAELayout) -> list[_Row]:
    rows: list[_Row] = [(name, name, _LEAF) for name in ("quant_conv", "post_quant_conv")]
    for part in ("encoder", "decoder"):
        rows += [
            (f"{part}.conv_in", f"{part}.conv_in", _LEAF),
            (f"{part}.norm_out", f"{part}.conv_norm_out", _LEAF),
            (f"{part}.conv_out", f"{part}.conv_out", _LEAF),
            (f"{part}.mid.block_1", f"{part}.mid_block.resnets.0", _VAE_RESNET),
            (f"{part}.mid.block_2", f"{part}.mid_block.resnets.1", _VAE_RESNET),
            (f"{part}.mid.attn_1", f"{part}.mid_block.attentions.0", _VAE_ATTENTION),
        ]
    for i in range(layout.encoder_levels):
        ldm, diffusers = f"encoder.down.{i}", f"encoder.down_blocks.{i}"
        rows.append((f"{ldm}.downsample.conv", f"{diffusers}.downsamplers.0.conv", _LEAF))
        rows += [
            (f"{ldm}.block.{j}", f"{diffusers}.resnets.{j}", _VAE_RESNET)
            for j in range(layout.resnets)
        ]
    for i in range(layout.decoder_levels):
        ldm, diffusers = f"decoder.up.{layout.decoder_levels - 1 - i}", f"decoder.up_blocks.{i}"
        rows.append((f"{ldm}.upsample.conv", f"{diffusers}.upsamplers.0.conv", _LEAF))
        rows += [
            (f"{ldm}.block.{j}", f"{diffusers}.resnets.{j}", _VAE_RESNET)
            for j in range(layout.resnets)
        ]
    return rows


def vae_to_diffusers(ldm: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an LDM VAE state dict (``first_stage_model.`` stripped) to ``AutoencoderKL`` keys.

    The mid-block attention's q/k/v/proj_out 1x1-conv weights become Linear weights as views.
    ``model_ema.*`` and ``loss.*`` keys are dropped.
    """
    table = _table(_vae_rows(_vae_layout(ldm, ldm=True)), to_diffusers=True)
    return _convert(ldm, table, to_diffusers=True, ignored=IGNORED_LDM_VAE_PREFIXES, what="LDM VAE")


def vae_to_ldm(diffusers: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an ``AutoencoderKL`` state dict to LDM VAE keys (attention weights as 1x1 convs)."""
    table = _table(_vae_rows(_vae_layout(diffusers, ldm=False)), to_diffusers=False)
    return _convert(diffusers, table, to_diffusers=False, what="diffusers VAE")


# ---------------------------------------------------------------------------------------------
# OpenCLIP text encoder <-> transformers CLIPTextModel(WithProjection)

_OPENCLIP_TOP: dict[str, str] = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
_OPENCLIP_LAYER: dict[str, str] = {
    "attn.out_proj": "self_attn.out_proj",
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_OPENCLIP_BLOCK_KEY = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
_HF_LAYER_KEY = re.compile(r"text_model\.encoder\.layers\.(\d+)\.(.+)")
_HF_QKV_KEY = re.compile(r"self_attn\.([qkv])_proj\.(weight|bias)")
_OPENCLIP_IN_PROJ = {"attn.in_proj_weight": "weight", "attn.in_proj_bias": "bias"}
_OPENCLIP_PROJECTION, _HF_PROJECTION = "text_projection", "text_projection.weight"
_HF_TOP = {hf_key: key for key, hf_key in _OPENCLIP_TOP.items()}
_HF_LAYER = {hf_name: name for name, hf_name in _OPENCLIP_LAYER.items()}
_HF_TEXT_MODEL = "text_model."
_HF_BARE_MODULES = ("embeddings.", "encoder.", "final_layer_norm.")


def _transposed(key: str, tensor: Tensor) -> Tensor:
    """OpenCLIP applies ``x @ P``, a Linear ``x @ W.T``: the same matrix, transposed (a view)."""
    if tensor.ndim != 2:
        raise ValueError(f"{key!r}: expected a 2-D projection, got shape {tuple(tensor.shape)}")
    return tensor.t()


def _split_in_proj(key: str, tensor: Tensor) -> tuple[Tensor, ...]:
    """q, k, v as row slices (views) of OpenCLIP's fused in_proj weight or bias."""
    if tensor.shape[0] % 3:
        raise ValueError(f"{key!r}: fused q/k/v of {tensor.shape[0]} rows is not divisible by 3")
    return tensor.chunk(3, dim=0)


def _openclip_block_key(key: str, tensor: Tensor, out: dict[str, Tensor]) -> bool:
    """Place one ``transformer.resblocks.N.*`` key into ``out``; False if it is not one."""
    match = _OPENCLIP_BLOCK_KEY.fullmatch(key)
    if match is None:
        return False
    layer, inner = f"text_model.encoder.layers.{match.group(1)}", match.group(2)
    if inner in _OPENCLIP_IN_PROJ:
        param = _OPENCLIP_IN_PROJ[inner]
        for name, part in zip("qkv", _split_in_proj(key, tensor), strict=True):
            out[f"{layer}.self_attn.{name}_proj.{param}"] = part
        return True
    module, _, param = inner.rpartition(".")
    if module not in _OPENCLIP_LAYER:
        return False
    out[f"{layer}.{_OPENCLIP_LAYER[module]}.{param}"] = tensor
    return True


def openclip_to_hf(openclip: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an OpenCLIP text tower (``cond_stage_model.model.`` or
    ``conditioner.embedders.1.model.`` stripped) to ``CLIPTextModel(WithProjection)`` keys.

    Fused q/k/v are split and ``text_projection`` transposed, both as views of the input.
    ``logit_scale`` is dropped. ``text_projection.weight`` only fits the WithProjection model.
    Keys come as files name them, ``text_model.*``; transformers >= 5.6 builds ``CLIPTextModel``
    without that level, so for its ``load_state_dict`` strip the prefix (``removeprefix``).
    """
    out: dict[str, Tensor] = {}
    for key, tensor in openclip.items():
        if key in IGNORED_OPENCLIP_KEYS:
            continue
        if key in _OPENCLIP_TOP:
            out[_OPENCLIP_TOP[key]] = tensor
        elif key == _OPENCLIP_PROJECTION:
            out[_HF_PROJECTION] = _transposed(key, tensor)
        elif not _openclip_block_key(key, tensor, out):
            raise ValueError(f"cannot place OpenCLIP key {key!r}")
    return out


def _fuse_qkv(parts: dict[tuple[str, str], dict[str, Tensor]]) -> dict[str, Tensor]:
    """OpenCLIP's fused ``in_proj_*`` from each layer's q, k, v (the one step that copies)."""
    import torch

    out: dict[str, Tensor] = {}
    for (layer, param), found in parts.items():
        missing = [name for name in "qkv" if name not in found]
        if missing:
            example = (
                f"text_model.encoder.layers.{layer}.self_attn.{next(iter(found))}_proj.{param}"
            )
            raise ValueError(f"cannot place HF CLIP key {example!r}: no {missing} projection")
        fused = torch.cat([found[name] for name in "qkv"], dim=0)
        out[f"transformer.resblocks.{layer}.attn.in_proj_{param}"] = fused
    return out


def _hf_canonical(key: str) -> str:
    """The key with its ``text_model.`` prefix, which transformers >= 5.6 leaves off in memory.

    There ``CLIPTextModel`` holds its modules directly (state-dict keys ``embeddings.*``,
    ``encoder.*``, ``final_layer_norm.*``), while files and ``CLIPTextModelWithProjection`` keep
    ``text_model.*``; both spellings are accepted.
    """
    if key.startswith(_HF_BARE_MODULES):
        return _HF_TEXT_MODEL + key
    return key


def _hf_layer_key(
    key: str, tensor: Tensor, out: dict[str, Tensor], qkv: dict[tuple[str, str], dict[str, Tensor]]
) -> None:
    """Place one ``text_model.encoder.layers.N.*`` key; q/k/v wait in ``qkv`` to be fused."""
    match = _HF_LAYER_KEY.fullmatch(_hf_canonical(key))
    if match is None:
        raise ValueError(f"cannot place HF CLIP key {key!r}")
    layer, inner = match.groups()
    if fused := _HF_QKV_KEY.fullmatch(inner):
        qkv.setdefault((layer, fused.group(2)), {})[fused.group(1)] = tensor
        return
    module, _, param = inner.rpartition(".")
    if module not in _HF_LAYER:
        raise ValueError(f"cannot place HF CLIP key {key!r}")
    out[f"transformer.resblocks.{layer}.{_HF_LAYER[module]}.{param}"] = tensor


def hf_to_openclip(hf: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a ``CLIPTextModel(WithProjection)`` state dict to OpenCLIP text-tower keys.

    The inverse of `openclip_to_hf`; ``text_projection`` is produced only when the input has one.
    Keys may carry ``text_model.`` or not (see `_hf_canonical`), but not both for one weight.
    """
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    seen: set[str] = set()
    for key, tensor in hf.items():
        canonical = _hf_canonical(key)
        if canonical in seen:
            raise ValueError(f"HF CLIP key {key!r} is given both with and without 'text_model.'")
        seen.add(canonical)
        if canonical in IGNORED_HF_CLIP_KEYS:
            continue
        if canonical in _HF_TOP:
            out[_HF_TOP[canonical]] = tensor
        elif canonical == _HF_PROJECTION:
            out[_OPENCLIP_PROJECTION] = _transposed(key, tensor)
        else:
            _hf_layer_key(key, tensor, out, qkv)
    out.update(_fuse_qkv(qkv))
    return out
