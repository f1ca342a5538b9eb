"""LoRA: low-rank weight deltas applied at run time, never merged into the model's weights.

A LoRA adds ``up(down(x)) * (strength * alpha / rank)`` to the output of each module it targets.
Merging that into the base weights would be faster per step, but it would modify weights the
model manager shares between every node and run, and unmerging in floating point does not give
back the same bits. Instead, for the duration of a node, linear layers compute with a fused copy
of their weight (``nodes.lora_fuse``, up to a memory cap) and other layers get forward hooks; the
base parameters are never touched: a run without a LoRA after a run with one is bit-identical to
a run before it, and switching LoRAs or strengths costs nothing.

The hooks' delta is computed as PEFT's ``LoraLayer`` computes it (``peft/tuners/lora/layer.py``:
``Linear.forward`` and ``_ConvNd.forward`` do ``result = result + lora_B(lora_A(x)) * scaling``
with ``x`` cast to the LoRA weights' dtype, which are the base layer's dtype, and
``scaling = weight * lora_alpha / r`` from ``set_scale``), so pictures match diffusers, whose
``load_lora_weights`` goes through PEFT.

Two file layouts are read (safetensors only; pickled ``.ckpt``/``.pt`` files can run code):

* kohya / A1111: ``lora_unet_<module>``, ``lora_te_<module>`` (SD 1.x/2.x text encoder),
  ``lora_te1_``/``lora_te2_`` (SDXL), each with ``.lora_down.weight``, ``.lora_up.weight`` and
  an optional ``.alpha``. Module names have their dots replaced by underscores, so they are
  resolved against the model's real module names. SD 1.x U-Net names are diffusers names; SDXL
  U-Net names are the original SGM names (``input_blocks_4_1_...``), mapped with
  ``nodes.ldm_layout``. Flux U-Net names are BFL's (``double_blocks_0_img_attn_qkv``), mapped
  with ``nodes.flux_layout``; a fused layer (``qkv``, a single block's ``linear1``) becomes one
  LoRA per diffusers module, sharing ``down`` and cutting ``up``'s rows. Without ``.alpha``,
  alpha = rank (scale 1), as diffusers does: its ``get_peft_kwargs`` sets ``lora_alpha = r``
  when the file brings no alphas.
* diffusers / PEFT: ``unet.<module>.lora_A.weight`` / ``.lora_B.weight`` (and ``text_encoder.``,
  ``text_encoder_2.``; ``transformer.`` for SD3/Flux, whose transformer is the ``UNet`` model),
  plus the older diffusers forms ``<module>.lora.down.weight`` and
  ``<attn>.processor.to_q_lora.down.weight``. The scale comes from the ``lora_adapter_metadata``
  diffusers writes into the safetensors header (``r``, ``lora_alpha``, ``alpha_pattern``,
  ``use_rslora`` per component); without it the scale is 1, diffusers' convention for such files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

from pydantic import Field

from nodeflow import Context, Environment, Widget, node
from nodeflow.runtime.models import file_identity
from nodes.flux_layout import FluxModule, flux_linear_modules, is_flux_name
from nodes.loaders import BUILT_IN_LORAS, demo_lora
from nodes.lora_fuse import FUSE_BYTES, fuse, fuse_cost, unfuse
from nodes.paths import contained
from nodes.types import TextEncoder, UNet

if TYPE_CHECKING:
    import torch

Target = Literal["unet", "text_encoder", "text_encoder_2"]

KOHYA_PREFIXES: dict[str, Target] = {
    "lora_unet_": "unet",
    "lora_te_": "text_encoder",
    "lora_te1_": "text_encoder",
    "lora_te2_": "text_encoder_2",
}
PEFT_PREFIXES: dict[str, Target] = {
    "unet.": "unet",
    "transformer.": "unet",  # SD3 / Flux: the denoiser behind the UNet socket is a transformer
    "text_encoder_2.": "text_encoder_2",  # before "text_encoder.", which is not its prefix anyway
    "text_encoder.": "text_encoder",
}
METADATA_KEY = "lora_adapter_metadata"
"""Where diffusers' ``save_lora_weights`` keeps the PEFT ``LoraConfig`` (``lora_base.py``)."""
OBJECTIVE_KEY = "nodeflow_objective"
"""Header metadata in which nodeflow's LoRA trainers (``nodes.demo.train_lora``, ``train_lcm``)
name the objective their base predicts, so a LoRA is not put on a model that predicts another."""
OBJECTIVES: dict[str, tuple[str, bool]] = {
    "epsilon": ("epsilon", False),
    "v-zero-snr": ("v_prediction", True),
}
"""A named objective -> the (``prediction_type``, ``rescale_betas_zero_snr``) of its base."""
SGM_BLOCKS = ("input_blocks_", "middle_block_", "output_blocks_")
UNMATCHED_SHOWN = 5


@dataclass(frozen=True, eq=False)
class LoraWeights:
    """One module's low-rank pair: ``down`` [rank, in, ...] and ``up`` [out, rank, ...].

    ``alpha`` None means the file gave none: scale 1 (alpha = rank), as diffusers reads such files.
    """

    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None = None
    _cast: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return self.scaling(1.0)

    def scaling(self, strength: float) -> float:
        """``strength * alpha / rank``, in PEFT's ``set_scale`` order, so the float is the same."""
        alpha = self.alpha if self.alpha is not None else self.rank
        return strength * alpha / self.rank

    def on(self, device: Any, dtype: Any, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The pair on ``device`` in ``dtype``, shaped for a module of weight rank ``ndim``.

        Cached, so a LoRA is copied to the GPU once, not once per run or per strength. The
        copies are made outside inference mode so they stay usable in any later context.
        """
        key = (str(device), dtype, ndim)
        cached = self._cast.get(key)
        if cached is None:
            import torch

            with torch.inference_mode(False):
                down, up = self.down, self.up
                if ndim == 4 and down.ndim == 2:  # a linear LoRA on a 1x1 convolution
                    down, up = down[:, :, None, None], up[:, :, None, None]
                elif ndim == 2 and down.ndim == 4:  # a 1x1 convolution LoRA on a linear layer
                    down, up = down.flatten(1), up.flatten(1)
                cached = (
                    down.to(device=device, dtype=dtype).contiguous(),
                    up.to(device=device, dtype=dtype).contiguous(),
                )
            self._cast[key] = cached
        return cached


@dataclass(frozen=True, eq=False)
class LoraPatch:
    """A LoRA file's weights for one model, resolved to that model's module names."""

    target: Target
    weights: Mapping[str, LoraWeights]
    strength: float
    source: str


@dataclass(frozen=True)
class LoraEntry:
    """One module's weights as the file names them, before resolving against a model."""

    target: Target
    name: str
    """kohya: the underscored name after the prefix; PEFT: the dotted module name."""
    kohya: bool
    key: str
    """The file's key for the down weight, for error messages."""
    weights: LoraWeights


@dataclass(frozen=True, eq=False)
class LoraFile:
    """A parsed LoRA file, independent of any model (cached per file by the model manager)."""

    source: str
    entries: tuple[LoraEntry, ...]
    objective: str | None = None
    """The base's objective the file names (``OBJECTIVE_KEY``); None for files that name none,
    which is every file not written by nodeflow's trainers."""


# --- reading ---------------------------------------------------------------------------------


def read_lora_file(path: str | Path) -> LoraFile:
    """Parse a ``.safetensors`` LoRA file; anything else is refused (pickles can run code)."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(
            f"{path.name}: only .safetensors LoRA files are supported "
            "(.ckpt/.pt/.bin files are pickles, which can run code when loaded)"
        )
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - not a dict
    return parse_lora_state(state, metadata, source=str(path))


_KOHYA_SUFFIXES = {".lora_down.weight": "down", ".lora_up.weight": "up", ".alpha": "alpha"}
_PEFT_SUFFIXES = {
    ".lora_A.weight": "down",
    ".lora_B.weight": "up",
    ".lora.down.weight": "down",
    ".lora.up.weight": "up",
    ".lora_linear_layer.down.weight": "down",
    ".lora_linear_layer.up.weight": "up",
    "_lora.down.weight": "down",
    "_lora.up.weight": "up",
    ".alpha": "alpha",
}
# The oldest diffusers layout named attention LoRAs after the attention processor's slots.
_OLD_UNET_NAMES = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}
_OLD_TEXT_NAMES = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}


def _listing(keys: Sequence[str]) -> str:
    """The first few keys, and how many more: enough to recognise a file's layout."""
    shown = ", ".join(keys[:UNMATCHED_SHOWN])
    more = len(keys) - UNMATCHED_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _split_suffix(key: str, suffixes: Mapping[str, str]) -> tuple[str, str, str] | None:
    for suffix, part in suffixes.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], part, suffix
    return None


def _old_diffusers_name(target: Target, name: str, suffix: str) -> str:
    """``...attn1.processor.to_q`` (from ``to_q_lora.down``) -> ``...attn1.to_q``."""
    if not suffix.startswith("_lora."):
        return name
    head, _, slot = name.rpartition(".")
    names = _OLD_UNET_NAMES if target == "unet" else _OLD_TEXT_NAMES
    head = head.removesuffix(".processor")
    return f"{head}.{names.get(slot, slot)}" if head else names.get(slot, slot)


def _peft_configs(metadata: Mapping[str, str], source: str) -> dict[Target, dict[str, Any]]:
    """Per-component LoraConfig fields from diffusers' header metadata (keys ``unet.r`` etc.)."""
    raw = metadata.get(METADATA_KEY)
    if not raw:
        return {}
    try:
        flat = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{Path(source).name}: unreadable {METADATA_KEY}: {exc}") from exc
    configs: dict[Target, dict[str, Any]] = {}
    for key, value in flat.items():
        for prefix, target in PEFT_PREFIXES.items():
            if key.startswith(prefix):
                configs.setdefault(target, {})[key[len(prefix) :]] = value
                break
    return configs


def _pattern_value(patterns: Mapping[str, Any], name: str) -> Any:
    """PEFT's ``get_pattern_key`` rule: a pattern matches a module name's dotted suffix."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", name):
            return value
    return None


def _metadata_alpha(config: Mapping[str, Any], name: str, rank: int) -> float:
    """The alpha PEFT would use for module ``name`` under ``config`` (LoraConfig defaults 8).

    rsLoRA scales by alpha/sqrt(rank); it is expressed as an equivalent alpha over rank.
    """
    alpha = _pattern_value(config.get("alpha_pattern") or {}, name)
    if alpha is None:
        alpha = config.get("lora_alpha", 8)
    if config.get("use_rslora"):
        return float(alpha) * rank / math.sqrt(rank)
    return float(alpha)


def parse_lora_state(
    state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None, source: str
) -> LoraFile:
    """Group a LoRA state dict into per-module entries (kohya and diffusers/PEFT layouts)."""
    name = Path(source).name
    configs = _peft_configs(metadata or {}, source)
    parts: dict[tuple[Target, str, bool], dict[str, Any]] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        kohya_prefix = next((p for p in KOHYA_PREFIXES if key.startswith(p)), None)
        if kohya_prefix is not None:
            split = _split_suffix(key, _KOHYA_SUFFIXES)
            if split is None:
                unknown.append(key)
                continue
            stem, part, _ = split
            ident = (KOHYA_PREFIXES[kohya_prefix], stem[len(kohya_prefix) :], True)
        else:
            peft_prefix = next((p for p in PEFT_PREFIXES if key.startswith(p)), None)
            split = _split_suffix(key, _PEFT_SUFFIXES) if peft_prefix else None
            if peft_prefix is None or split is None:
                unknown.append(key)
                continue
            stem, part, suffix = split
            target = PEFT_PREFIXES[peft_prefix]
            module = _old_diffusers_name(target, stem[len(peft_prefix) :], suffix)
            ident = (target, module, False)
        group = parts.setdefault(ident, {})
        group[part] = tensor
        if part == "down":
            group["key"] = key
    if unknown:
        raise ValueError(
            f"{name}: not a LoRA this loader reads (LoRA layers in kohya or diffusers/PEFT layout);"
            f" unsupported keys: {_listing(unknown)}"
        )
    entries = []
    for (target, module, kohya), group in parts.items():
        if "down" not in group or "up" not in group:
            raise ValueError(
                f"{name}: {module!r} has no {'up' if 'down' in group else 'down'} weight"
            )
        down, up = group["down"], group["up"]
        if down.ndim not in (2, 4) or up.ndim != down.ndim or up.shape[1] != down.shape[0]:
            raise ValueError(
                f"{name}: {group['key']}: down {tuple(down.shape)} and up {tuple(up.shape)} "
                "are not a LoRA pair"
            )
        alpha = float(group["alpha"].item()) if "alpha" in group else None
        if alpha is None and not kohya and target in configs:
            alpha = _metadata_alpha(configs[target], module, int(down.shape[0]))
        entries.append(LoraEntry(target, module, kohya, group["key"], LoraWeights(down, up, alpha)))
    if not entries:
        raise ValueError(f"{name}: has no LoRA weights")
    objective = (metadata or {}).get(OBJECTIVE_KEY)
    if objective is not None and objective not in OBJECTIVES:
        raise ValueError(
            f"{name}: {OBJECTIVE_KEY} {objective!r} is not one this loader knows "
            f"({', '.join(OBJECTIVES)})"
        )
    return LoraFile(source=source, entries=tuple(entries), objective=objective)


def config_objective(scheduler_config: Mapping[str, Any]) -> str | None:
    """The named objective (``OBJECTIVES``) a scheduler config's prediction type and zero-SNR
    flag make, or None for a pair no name stands for."""
    pair = (
        scheduler_config.get("prediction_type", "epsilon"),
        bool(scheduler_config.get("rescale_betas_zero_snr", False)),
    )
    return next((name for name, named in OBJECTIVES.items() if named == pair), None)


def check_objective(lora: LoraFile, scheduler_config: Mapping[str, Any]) -> None:
    """Refuse a U-Net LoRA trained on a base of another objective: an epsilon LoRA on a
    v-prediction model (or the reverse) shifts its output in the wrong units, which samples
    without error into a wrong picture."""
    if lora.objective is None or config_objective(scheduler_config) == lora.objective:
        return
    prediction, zero_snr = OBJECTIVES[lora.objective]
    raise ValueError(
        f"{Path(lora.source).name}: trained on a {lora.objective!r} base (prediction_type "
        f"{prediction!r}, rescale_betas_zero_snr {zero_snr}); this model has prediction_type "
        f"{scheduler_config.get('prediction_type', 'epsilon')!r}, rescale_betas_zero_snr "
        f"{bool(scheduler_config.get('rescale_betas_zero_snr', False))}"
    )


# --- resolving against a model -------------------------------------------------------------

_RESNET_INNER = {
    ".conv1": ".in_layers.2",
    ".conv2": ".out_layers.3",
    ".time_emb_proj": ".emb_layers.1",
    ".conv_shortcut": ".skip_connection",
}
"""Inside a U-Net resnet, diffusers name -> SGM name (``nodes.ldm_layout`` maps whole blocks)."""


def _lora_modules(model: Any) -> dict[str, Any]:
    """The modules a LoRA can patch: linear layers and 2D convolutions."""
    from torch import nn

    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def sgm_names(state_keys: Iterable[str], names: Iterable[str]) -> dict[str, str]:
    """{SGM (original SDXL) module name: diffusers module name} for U-Net modules ``names``.

    ``state_keys`` are the U-Net's diffusers state-dict keys, from which ``nodes.ldm_layout``
    derives the block correspondence (it depends on the number of blocks and layers).
    """
    from nodes.ldm_layout import unet_ldm_prefix_map

    names = list(names)
    prefix_map = unet_ldm_prefix_map(list(state_keys))
    aliases: dict[str, str] = {}
    for ldm, diffusers in prefix_map.items():
        for name in names:
            if name != diffusers and not name.startswith(diffusers + "."):
                continue
            inner = name[len(diffusers) :]
            if ".resnets." in diffusers:
                inner = _RESNET_INNER.get(inner, inner)
            aliases[ldm + inner] = name
    return aliases


def _lookup_table(target: Target, model: Any, kohya: bool, sgm: bool) -> dict[str, str]:
    """{name as a file writes it: the model's module name} for one model and layout."""
    names = list(_lora_modules(model))
    aliases = {name: name for name in names}
    if target != "unet":
        # transformers 5 flattens CLIPTextModel (no ``text_model.``); files usually keep it.
        for name in names:
            bare = name.removeprefix("text_model.")
            aliases.setdefault(bare, name)
            aliases.setdefault("text_model." + bare, name)
    elif sgm:
        for alias, name in sgm_names(model.state_dict().keys(), names).items():
            aliases.setdefault(alias, name)
    if kohya:
        return {alias.replace(".", "_"): name for alias, name in aliases.items()}
    return aliases


def _shape_problem(module: Any, weights: LoraWeights) -> str | None:
    """Why ``weights`` cannot patch ``module`` (None if they can)."""
    from torch import nn

    down, up = weights.down, weights.up
    if isinstance(module, nn.Linear):
        ins, outs, kernel = module.in_features, module.out_features, (1, 1)
    else:
        ins, outs, kernel = module.in_channels, module.out_channels, tuple(module.kernel_size)
    down_kernel = tuple(down.shape[2:]) if down.ndim == 4 else (1, 1)
    up_kernel = tuple(up.shape[2:]) if up.ndim == 4 else (1, 1)
    if isinstance(module, nn.Linear) and (down_kernel != (1, 1) or up_kernel != (1, 1)):
        return f"a {down_kernel} convolution LoRA on a linear layer"
    if down.shape[1] != ins or up.shape[0] != outs or down_kernel != kernel or up_kernel != (1, 1):
        return (
            f"down {tuple(down.shape)} / up {tuple(up.shape)} do not fit "
            f"{type(module).__name__}({ins} -> {outs}, kernel {kernel})"
        )
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        return "grouped convolutions are not supported"
    return None


def _flux_kohya_table(model: Any) -> dict[str, FluxModule]:
    """{kohya name (BFL module name, dots as underscores): its diffusers modules} of a Flux
    transformer; empty for any other model, so a Flux LoRA on it fails as unmatched."""
    return {m.bfl.replace(".", "_"): m for m in flux_linear_modules(_lora_modules(model))}


def _split_fused(
    model: Any, module: FluxModule, weights: LoraWeights
) -> tuple[dict[str, LoraWeights], str | None]:
    """A BFL layer's LoRA as LoRAs on its diffusers modules, or why it does not fit.

    The fused layer's delta is ``up @ down`` with rows stacked as the parts' outputs, so each
    part gets the shared ``down`` and its own rows of ``up``; the alpha and rank, hence the
    scale, stay those of the whole pair. The sizes are the model's own ``out_features``.
    """
    import torch

    parts = [model.get_submodule(name) for name in module.parts]
    sizes = [part.out_features for part in parts]
    up = weights.up
    if up.shape[0] != sum(sizes):
        return {}, f"up has {up.shape[0]} rows where the layer has {sum(sizes)} outputs"
    if module.swapped:
        up = torch.cat(list(reversed(up.chunk(2, dim=0))), dim=0)
    out: dict[str, LoraWeights] = {}
    for name, part, rows in zip(module.parts, parts, torch.split(up, sizes, dim=0), strict=True):
        piece = LoraWeights(weights.down, rows.contiguous(), weights.alpha)
        problem = _shape_problem(part, piece)
        if problem:
            return {}, problem
        out[name] = piece
    return out, None


def resolve_lora(
    lora: LoraFile, models: Mapping[Target, Any]
) -> dict[Target, dict[str, LoraWeights]]:
    """Map every entry of ``lora`` onto a module of ``models``; any miss is an error.

    A LoRA for another architecture must fail clearly rather than silently patch nothing.
    """
    name = Path(lora.source).name
    resolved: dict[Target, dict[str, LoraWeights]] = {}
    tables: dict[tuple[Target, bool], dict[str, str]] = {}
    sgm = any(
        e.kohya and e.target == "unet" and e.name.startswith(SGM_BLOCKS) for e in lora.entries
    )
    flux = any(e.kohya and e.target == "unet" and is_flux_name(e.name) for e in lora.entries)
    flux_table: dict[str, FluxModule] | None = None
    unmatched: list[str] = []
    misfits: list[str] = []
    for entry in lora.entries:
        model = models.get(entry.target)
        if model is None:
            unmatched.append(entry.key)
            continue
        if flux and entry.kohya and entry.target == "unet":
            if flux_table is None:
                flux_table = _flux_kohya_table(model)
            module = flux_table.get(entry.name)
            if module is None:
                unmatched.append(entry.key)
                continue
            split, problem = _split_fused(model, module, entry.weights)
            if problem:
                misfits.append(f"{entry.key} on {' + '.join(module.parts)}: {problem}")
                continue
            resolved.setdefault(entry.target, {}).update(split)
            continue
        table_key = (entry.target, entry.kohya)
        if table_key not in tables:
            tables[table_key] = _lookup_table(entry.target, model, entry.kohya, sgm)
        module_name = tables[table_key].get(entry.name)
        if module_name is None:
            unmatched.append(entry.key)
            continue
        problem = _shape_problem(model.get_submodule(module_name), entry.weights)
        if problem:
            misfits.append(f"{entry.key} on {module_name}: {problem}")
            continue
        resolved.setdefault(entry.target, {})[module_name] = entry.weights
    if unmatched or misfits:
        total = len(lora.entries)
        reasons = []
        if unmatched:
            reasons.append(f"{len(unmatched)} of {total} match no module: {_listing(unmatched)}")
        if misfits:
            reasons.append(f"{len(misfits)} of {total} have the wrong shape: {_listing(misfits)}")
        raise ValueError(
            f"{name} does not fit this model (a LoRA for another architecture?); its layers: "
            + "; ".join(reasons)
        )
    return resolved


# --- applying --------------------------------------------------------------------------------


def _hook(module: Any, pairs: list[tuple[Any, Any, float]]) -> Any:
    """A forward hook adding each LoRA's ``up(down(x)) * scaling`` in order, as PEFT does."""
    import torch.nn.functional as F
    from torch import nn

    if isinstance(module, nn.Linear):

        def branch(x: Any, down: Any, up: Any) -> Any:
            return F.linear(F.linear(x, down), up)

    else:
        stride, padding = module.stride, module.padding

        def branch(x: Any, down: Any, up: Any) -> Any:
            return F.conv2d(F.conv2d(x, down, None, stride, padding), up)

    def hook(mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        x = args[0] if args else kwargs["input"]
        result = output
        for down, up, scaling in pairs:
            if x.dtype != down.dtype:
                x = x.to(down.dtype)
            result = result + branch(x, down, up) * scaling
        return result.to(output.dtype)

    return hook


@contextmanager
def patched(
    model: Any, patches: Sequence[Any], target: Target = "unet", sampling: Any = None
) -> Iterator[None]:
    """Apply the ``patches`` aimed at ``target`` to ``model`` for the duration of the block.

    Two kinds of patch ride on a model socket: LoRA weights (forward hooks) and attention
    controllers (``nodes.attention``: swapped attention processors, told the step through
    ``sampling``, a ``nodes.attention.Sampling``). Both are added on entry and removed on exit
    (also on exceptions); the model's parameters are never modified, copied or reassigned.
    """
    from nodes.attention import installed, is_attention_patch

    aimed = [p for p in patches if p.target == target]
    controllers = [p for p in aimed if is_attention_patch(p)]
    loras = [p for p in aimed if not is_attention_patch(p)]
    with installed(model, controllers, sampling), _lora_hooks(model, loras, target):
        yield


def _submodule(model: Any, name: str) -> Any:
    """``model.get_submodule(name)`` or None, walking ``_modules`` directly: a diffusers model's
    ``__getattr__`` looks in its config first, which made finding a 70-layer LoRA's modules
    cost a few milliseconds per sampling run."""
    module = model
    for part in name.split("."):
        children = getattr(module, "_modules", None)
        module = None if children is None else children.get(part)
        if module is None:
            return None
    return module


@contextmanager
def _lora_hooks(model: Any, patches: Sequence[Any], target: Target) -> Iterator[None]:
    active = [p for p in patches if p.strength != 0 and p.weights]
    if not active:
        yield
        return
    per_module: dict[str, list[tuple[Any, Any, float]]] = {}
    modules: dict[str, Any] = {}
    for patch in active:
        for name, weights in patch.weights.items():
            module = modules.get(name)
            if module is None:
                module = modules[name] = _submodule(model, name)
                if module is None:
                    raise ValueError(f"{patch.source}: {target} has no module {name!r}")
            weight = module.weight
            down, up = weights.on(weight.device, weight.dtype, weight.ndim)
            per_module.setdefault(name, []).append((down, up, weights.scaling(patch.strength)))
    handles, fused, room = [], [], FUSE_BYTES
    try:
        for name, pairs in per_module.items():
            module = modules[name]
            cost = fuse_cost(module, pairs)
            if cost is not None and cost <= room:  # no per-call work (nodes.lora_fuse)
                fuse(module, pairs)
                fused.append(module)
                room -= cost
                continue
            handles.append(module.register_forward_hook(_hook(module, pairs), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module in fused:
            unfuse(module)


# --- the node --------------------------------------------------------------------------------


class LoraOutputs(NamedTuple):
    unet: UNet
    text_encoder: TextEncoder


Strength = Annotated[float, Field(ge=-10, le=10)]


def resolve_lora_path(name: str, env: Environment) -> Path:
    """A LoRA file under the models dir's loras/ (or an absolute path); ``demo-style`` and
    ``demo-lcm`` are the built-in LoRAs for the demo model when loras/ has no file by that name."""
    folders = env.model_dirs("loras")
    for folder in folders:
        path = contained(folder, name)
        if path.is_file():
            return path
    if name in BUILT_IN_LORAS:
        return demo_lora(name)
    searched = " or ".join(str(folder) for folder in folders)
    raise FileNotFoundError(f"no LoRA file {name!r} (looked in {searched})")


def lora_fingerprint(values: Mapping[str, Any], env: Environment) -> Any:
    return file_identity(resolve_lora_path(values["path"], env))


@node(
    "LoadLoRA",
    category="loaders",
    fingerprint=lora_fingerprint,
    aliases=("LoraLoader", "LoraLoaderModelOnly"),
)
def load_lora(
    ctx: Context,
    unet: UNet,
    text_encoder: TextEncoder,
    path: Annotated[str, Widget(files="loras")],
    strength_unet: Strength = 1.0,
    strength_text_encoder: Strength = 1.0,
) -> LoraOutputs:
    """Add a LoRA to the U-Net and text encoder; applied while they run, weights untouched."""
    file = resolve_lora_path(path, ctx.env)
    lora = ctx.models.get(("lora", file_identity(file)), lambda: read_lora_file(file))
    return apply_lora(unet, text_encoder, lora, strength_unet, strength_text_encoder)


def apply_lora(
    unet: UNet,
    text_encoder: TextEncoder,
    lora: LoraFile,
    strength_unet: float = 1.0,
    strength_text_encoder: float = 1.0,
) -> LoraOutputs:
    """``unet`` and ``text_encoder`` with ``lora`` added to their patches: what LoadLoRA does
    with a file, and what a training node does with the file it wrote, so both apply alike."""
    models: dict[Target, Any] = {"unet": unet.model, "text_encoder": text_encoder.model}
    model_2 = getattr(text_encoder, "model_2", None)
    if model_2 is not None:
        models["text_encoder_2"] = model_2
    resolved = resolve_lora(lora, models)
    if resolved.get("unet") and strength_unet != 0:
        check_objective(lora, unet.scheduler_config)

    def add(patches: tuple[Any, ...], target: Target, strength: float) -> tuple[Any, ...]:
        weights = resolved.get(target)
        if not weights or strength == 0:
            return patches
        return (*patches, LoraPatch(target, weights, strength, lora.source))

    unet_patches = add(unet.patches, "unet", strength_unet)
    text_patches = add(text_encoder.patches, "text_encoder", strength_text_encoder)
    text_patches = add(text_patches, "text_encoder_2", strength_text_encoder)
    return LoraOutputs(
        unet=dataclasses.replace(unet, patches=unet_patches),
        text_encoder=dataclasses.replace(text_encoder, patches=text_patches),
    )
