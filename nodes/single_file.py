"""Single-file checkpoints: what a file holds, told from its keys and shapes, loaded offline.

Files from model sites carry weights only. Which architecture they are (SD 1.x, SD 2.x, SDXL) is
told from the key layout; every size the weights fix (channels, layers, vocabulary, context width)
is read from tensor shapes; what weights cannot tell (attention heads, activations, noise schedule,
latent scaling) comes from the family's real config shipped in ``nodes/configs/``, following the
rules each family was built with. Nothing is fetched: the CLIP tokenizer ships too.

A file may also say what its weights cannot: nodeflow writes a model that departs from its
family's unseen choices (norm groups, heads, latent scaling) with each component's config in the
safetensors metadata key ``nodeflow.architecture`` (see ``stored_architecture``); those values
override the family's, so such a file loads as the model it was made from.

Loading reads each tensor once from the file, converts its dtype if asked, renames it (views, no
copies), and assigns it straight into a model built on the meta device, so a checkpoint costs its
own size in memory, not twice that (see ``BENCHMARKS.md``).
"""

from __future__ import annotations

import json
import logging
import mmap
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from nodes import hf
from nodes.clip_vocab import EOS_TOKEN, clip_tokenizer

log = logging.getLogger(__name__)

Family = Literal["sd1", "sd2", "sdxl"]
FAMILIES: tuple[Family, ...] = ("sd1", "sd2", "sdxl")
FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sd3": "SD3"}
CONFIGS = Path(__file__).parent / "configs"

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_TEXT_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TEXT_2_PREFIX = "conditioner.embedders.1.model."

ARCHITECTURE_KEY = "nodeflow.architecture"
"""Safetensors metadata key: JSON ``{"unet": {...}, "vae": {...}, "text_encoder": {...}}`` (and
``"text_encoder_2"`` for SDXL), each the component's diffusers / transformers ``config.json``."""
ARCHITECTURE_PARTS = ("unet", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
_NOT_ARCHITECTURE = frozenset({"dtype", "torch_dtype"})
"""Stored config keys ignored on load: the dtype comes from the tensors and the caller's choice."""

SAFE_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class PickleRefused(ValueError):
    """A pickle-based checkpoint was named but the user has not allowed loading pickles."""


def family_config(family: str, part: str) -> dict[str, Any]:
    """A shipped architecture config (``nodes/configs/<family>/<part>.json``)."""
    return json.loads((CONFIGS / family / f"{part}.json").read_text())


class CheckpointFile:
    """Keys, shapes and metadata of a weights file without reading its tensors; tensors on demand.

    safetensors tensors kept in their stored dtype are memory-mapped (no copy: the page cache is
    the model's memory). A tensor that must change dtype is converted straight from the mapped
    file into its own memory, and the mapped pages it came from are released at once, so
    converting a file costs its converted size, not that plus the mapped original, and no time
    goes into copying the stored bytes first. Pickle files (``.ckpt``) run code when unpickled,
    so they are refused unless ``allow_pickle``, and even then read with ``weights_only=True``,
    which only rebuilds tensors and plain containers.
    """

    def __init__(self, path: str | Path, *, allow_pickle: bool = False) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        self._state: dict[str, Any] | None = None
        self._safe: Any = None
        self._map: mmap.mmap | None = None
        if suffix in PICKLE_SUFFIXES:
            if not allow_pickle:
                raise PickleRefused(
                    f"{self.path.name} is a pickle ({suffix}), which can run code when loaded; "
                    "convert it to .safetensors, or pass --allow-pickle to load it "
                    "(tensors only, weights_only=True)"
                )
            import torch

            loaded = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
            state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
            if not isinstance(state, dict):
                raise ValueError(f"{self.path.name} holds no state dict")
            self._state = {k: v for k, v in state.items() if hasattr(v, "shape")}
            self.metadata: dict[str, str] = {}
        elif suffix in SAFE_SUFFIXES:
            from safetensors import safe_open

            self._safe = safe_open(str(self.path), framework="pt", device="cpu")
            self.metadata = self._safe.metadata() or {}
            self._header, self._data_start = _safetensors_header(self.path)
        else:
            raise ValueError(f"{self.path.name}: not a weights file (.safetensors expected)")

    @cached_property
    def keys(self) -> list[str]:
        return list(self._state) if self._state is not None else list(self._safe.keys())

    def shape(self, key: str) -> tuple[int, ...]:
        if self._state is not None:
            return tuple(self._state[key].shape)
        return tuple(self._safe.get_slice(key).get_shape())

    def read(self, prefix: str = "", dtype: Any = None) -> dict[str, Any]:
        """The tensors under ``prefix`` (prefix removed), each cast to ``dtype`` when floating;
        ``dtype`` may also be a function of (key, shape) choosing each tensor's dtype."""
        out: dict[str, Any] = {}
        choose = dtype if callable(dtype) and not hasattr(dtype, "is_floating_point") else None
        for key in self.keys:
            if not key.startswith(prefix):
                continue
            if choose is not None:
                dtype = choose(key, self.shape(key))
            if self._state is not None:
                tensor = self._state[key]
            elif self._needs_conversion(key, dtype):
                tensor = self._read_converted(key, dtype)
            else:
                tensor = self._safe.get_tensor(key)
            if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                tensor = tensor.to(dtype)
            out[key[len(prefix) :]] = tensor
        return out

    def _needs_conversion(self, key: str, dtype: Any) -> bool:
        stored = _SAFETENSORS_FLOATS.get(self._header[key]["dtype"])
        return dtype is not None and stored is not None and stored != str(dtype).split(".")[-1]

    def _read_converted(self, key: str, dtype: Any) -> Any:
        """A tensor stored in another float dtype, converted straight from the mapped file (no
        copy in the stored dtype); the mapped pages it was read from are released right after,
        so the file's pages do not add up in memory next to the converted weights."""
        import torch

        entry = self._header[key]
        begin, end = entry["data_offsets"]
        out = torch.empty(entry["shape"], dtype=dtype)
        if end == begin:
            return out
        stored = getattr(torch, _SAFETENSORS_FLOATS[entry["dtype"]])
        start, size = self._data_start + begin, end - begin
        mapped = self._mapped()
        source = torch.frombuffer(mapped, dtype=stored, count=size // stored.itemsize, offset=start)
        out.copy_(source.view(out.shape))
        del source
        if hasattr(mapped, "madvise"):  # unwritten pages of a file: read again if touched again
            first = start - start % mmap.PAGESIZE
            mapped.madvise(mmap.MADV_DONTNEED, first, start + size - first)
        return out

    def _mapped(self) -> mmap.mmap:
        if self._map is None:
            with open(self.path, "rb") as f:  # copy-on-write: writable for torch, never written
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        return self._map


_SAFETENSORS_FLOATS = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


def _safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """A safetensors file's header (name -> dtype, shape, data offsets) and where data starts."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header, 8 + size


def stored_architecture(file: CheckpointFile) -> dict[str, dict[str, Any]]:
    """The component configs a file declares in its ``nodeflow.architecture`` metadata, if any.

    Weights fix sizes but not e.g. norm groups, heads per channel or the latent scaling, which
    otherwise come from the family's config; a model trained with other choices stores them here
    so that it does not load silently as a different model. Bookkeeping keys (``_class_name``,
    ``_diffusers_version``, the saved dtype) are dropped. A malformed value is an error, not
    ignored: the file says it is not a stock model, so guessing would load the wrong one.
    """
    raw = file.metadata.get(ARCHITECTURE_KEY)
    if raw is None:
        return {}
    where = f"{file.path.name}: safetensors metadata {ARCHITECTURE_KEY!r}"
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where} is not valid JSON ({error})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{where} must be a JSON object of component configs")
    unknown = sorted(set(parsed) - set(ARCHITECTURE_PARTS))
    if unknown:
        raise ValueError(f"{where} names unknown components {unknown} ({ARCHITECTURE_PARTS})")
    for part, config in parsed.items():
        if not isinstance(config, dict):
            raise ValueError(f"{where}: {part!r} must be a JSON object (a config.json)")
    return {
        part: {
            key: value
            for key, value in config.items()
            if not key.startswith("_") and key not in _NOT_ARCHITECTURE
        }
        for part, config in parsed.items()
    }


# ----- what a file is ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Detected:
    """What a weights file holds, as far as its keys tell."""

    kind: Literal["checkpoint", "unet", "vae", "text_encoder", "lora", "unknown"]
    family: Family | None = None
    layout: str = ""
    """"ldm" (original), "diffusers", "hf" (transformers CLIP), "openclip", "kohya" or "peft"."""
    prediction_type: str | None = None
    zero_snr: bool = False
    """Trained with zero terminal SNR: the file has a ``ztsnr`` key (the marker ComfyUI reads,
    beside ``v_pred``, in zero-SNR v-prediction checkpoints)."""

    def describe(self) -> str:
        family = FAMILY_NAMES.get(self.family or "", "")
        words = {
            "checkpoint": f"{family} checkpoint",
            "unet": f"{family} U-Net",
            "vae": "VAE",
            "text_encoder": "CLIP text encoder",
            "lora": f"LoRA ({self.layout})",
            "unknown": "unrecognised weights",
        }[self.kind].strip()
        if self.prediction_type == "v_prediction":
            words += ", v-prediction"
        if self.zero_snr:
            words += ", zero terminal SNR"
        if self.layout and self.kind not in ("lora", "unknown"):
            words += f" [{self.layout} layout]"
        return words


def _has(keys: Iterable[str], prefix: str) -> bool:
    return any(key.startswith(prefix) for key in keys)


def unet_family(
    keys: Iterable[str], shape: Callable[[str], tuple[int, ...]], prefix: str
) -> Family:
    """SDXL has the size/pooled embedding; SD 2.x linear attention projections; SD 1.x neither."""
    keys = list(keys)
    if f"{prefix}label_emb.0.0.weight" in keys or f"{prefix}add_embedding.linear_1.weight" in keys:
        return "sdxl"
    proj = next((k for k in keys if k.startswith(prefix) and k.endswith("proj_in.weight")), None)
    if proj is not None and len(shape(proj)) == 2:
        return "sd2"
    return "sd1"


def detect(file: CheckpointFile) -> Detected:
    keys = file.keys
    if any(re.search(r"lora_(down|up|A|B)\.weight$|\.lora\.(down|up)\.weight$", k) for k in keys):
        layout = "peft" if any(".lora_A." in k or ".lora.down." in k for k in keys) else "kohya"
        return Detected("lora", layout=layout)
    if _has(keys, UNET_PREFIX + "joint_blocks."):  # SD3's MMDiT (nodes.sd3_single_file)
        kind = "checkpoint" if _has(keys, VAE_PREFIX) else "unet"
        return Detected(kind, "sd3", "mmdit")  # type: ignore[arg-type]
    if _has(keys, UNET_PREFIX):
        if _has(keys, SDXL_TEXT_2_PREFIX) or _has(keys, SDXL_TEXT_PREFIX):
            family: Family = "sdxl"
        elif _has(keys, SD2_TEXT_PREFIX):
            family = "sd2"
        elif _has(keys, SD1_TEXT_PREFIX):
            family = "sd1"
        else:
            family = unet_family(keys, file.shape, UNET_PREFIX)
        kind = "checkpoint" if _has(keys, VAE_PREFIX) else "unet"
        return _unet_detected(file, kind, family, "ldm")
    if "input_blocks.0.0.weight" in keys:
        return _unet_detected(file, "unet", unet_family(keys, file.shape, ""), "ldm")
    if "conv_in.weight" in keys and _has(keys, "down_blocks."):
        return _unet_detected(file, "unet", unet_family(keys, file.shape, ""), "diffusers")
    if _has(keys, "encoder.down.") or _has(keys, VAE_PREFIX):
        return Detected("vae", layout="ldm")
    if _has(keys, "encoder.down_blocks."):
        return Detected("vae", layout="diffusers")
    if _has(keys, "text_model.") or _has(keys, "embeddings.token_embedding"):
        return Detected("text_encoder", layout="hf")
    if "token_embedding.weight" in keys and _has(keys, "transformer.resblocks."):
        return Detected("text_encoder", layout="openclip")
    return Detected("unknown")


def _unet_detected(file: CheckpointFile, kind: Any, family: Family, layout: str) -> Detected:
    prediction = prediction_type(file, family)
    # ComfyUI reads ``ztsnr`` only beside a v-prediction marker: epsilon at SNR 0 predicts nothing
    zero_snr = "ztsnr" in file.keys and prediction == "v_prediction"
    return Detected(kind, family, layout, prediction, zero_snr)


ZERO_SNR_SAMPLING = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
"""Scheduler config keys of a model trained with zero terminal SNR (Lin et al. 2024): the
rescaled betas, and timesteps from the last one (pure noise), as diffusers recommends."""


def unet_scheduler_config(family: Family, prediction: str, zero_snr: bool) -> dict[str, Any]:
    """The scheduler config of a single-file U-Net: its family's, with what the file says."""
    config = family_config(family, "scheduler") | {"prediction_type": prediction}
    return (config | ZERO_SNR_SAMPLING) if zero_snr else config


def prediction_type(file: CheckpointFile, family: Family) -> str:
    """What the U-Net predicts, from the markers people use, else the family's default.

    In order: safetensors metadata ``modelspec.prediction_type``; a ``v_pred`` key (the marker
    ComfyUI and kohya write); an A1111-style ``<name>.yaml`` beside the file
    (``parameterization: "v"``); else SD 2.x means v-prediction (as diffusers assumes, since the
    768 px SD 2.x models people use are v models) and everything else epsilon.
    """
    declared = file.metadata.get("modelspec.prediction_type", "").lower()
    if declared in ("v", "v_prediction", "v-prediction"):
        return "v_prediction"
    if declared in ("epsilon", "eps"):
        return "epsilon"
    if "v_pred" in file.keys:
        return "v_prediction"
    sidecar = file.path.with_suffix(".yaml")
    if sidecar.is_file():
        text = sidecar.read_text(errors="replace")
        return "v_prediction" if re.search(r"parameterization:\s*['\"]?v\b", text) else "epsilon"
    return "v_prediction" if family == "sd2" else "epsilon"


# ----- configs from shapes ----------------------------------------------------------------------


def _count(state: Mapping[str, Any], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for key in state if (m := regex.match(key))})


def unet_config(
    state: Mapping[str, Any],
    family: Family,
    pooled_dim: int | None = None,
    stored: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A diffusers U-Net config for a diffusers-layout state dict of ``family``; ``stored``
    (a config the file declares, see ``stored_architecture``) overrides what is derived."""
    config = family_config(family, "unet")
    levels = _count(state, r"down_blocks\.(\d+)\.")
    channels = [
        int(state[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(levels)
    ]
    attention = [_has(state, f"down_blocks.{i}.attentions.") for i in range(levels)]
    up_attention = [_has(state, f"up_blocks.{i}.attentions.") for i in range(levels)]
    depth = [
        _count(state, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.") or 1
        for i in range(levels)
    ]
    proj = next(v for k, v in state.items() if k.endswith("proj_in.weight"))
    to_k = next(v for k, v in state.items() if k.endswith("attn2.to_k.weight"))
    config |= {
        "block_out_channels": channels,
        "layers_per_block": _count(state, r"down_blocks\.0\.resnets\.(\d+)\."),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attention],
        "in_channels": int(state["conv_in.weight"].shape[1]),
        "out_channels": int(state["conv_out.weight"].shape[0]),
        "cross_attention_dim": int(to_k.shape[1]),
        "use_linear_projection": proj.ndim == 2,
        "attention_head_dim": 8 if family == "sd1" else [max(1, c // 64) for c in channels],
        "transformer_layers_per_block": depth if any(d != 1 for d in depth) else 1,
    }
    if "add_embedding.linear_1.weight" in state:
        embedding_in = int(state["add_embedding.linear_1.weight"].shape[1])
        if pooled_dim is None:  # a U-Net on its own: SDXL's 256, or half the context for others
            real = 6 * family_config("sdxl", "unet")["addition_time_embed_dim"]
            pooled_dim = (
                embedding_in - real if embedding_in > real else config["cross_attention_dim"] // 2
            )
        config |= {
            "addition_embed_type": "text_time",
            "projection_class_embeddings_input_dim": embedding_in,
            "addition_time_embed_dim": (embedding_in - pooled_dim) // 6,
        }
    else:
        for key in (
            "addition_embed_type",
            "addition_time_embed_dim",
            "projection_class_embeddings_input_dim",
            "addition_embed_type_num_heads",
        ):
            config.pop(key, None)  # fmt: skip
    return config | dict(stored or {})


def vae_config(
    state: Mapping[str, Any], family: Family, stored: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A diffusers VAE config: sizes from shapes, the rest (latent scaling included) from the
    family's config, both overridden by a ``stored`` config the file declares."""
    config = family_config(family, "vae")
    levels = _count(state, r"encoder\.down_blocks\.(\d+)\.")
    derived = config | {
        "block_out_channels": [
            int(state[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0])
            for i in range(levels)
        ],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": _count(state, r"encoder\.down_blocks\.0\.resnets\.(\d+)\."),
        "latent_channels": int(state["decoder.conv_in.weight"].shape[1]),
        "in_channels": int(state["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(state["decoder.conv_out.weight"].shape[0]),
    }
    return derived | dict(stored or {})


def text_config(
    state: Mapping[str, Any], base: Mapping[str, Any], stored: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A CLIP text config for a transformers-layout state dict; one head per 64 channels unless
    a ``stored`` config the file declares says otherwise (it overrides everything derived)."""
    tokens = state["text_model.embeddings.token_embedding.weight"]
    hidden = int(tokens.shape[1])
    config = dict(base) | {
        "vocab_size": int(tokens.shape[0]),
        "hidden_size": hidden,
        "num_attention_heads": max(1, hidden // 64),
        "intermediate_size": int(state["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
        "num_hidden_layers": _count(state, r"text_model\.encoder\.layers\.(\d+)\."),
        "max_position_embeddings": int(
            state["text_model.embeddings.position_embedding.weight"].shape[0]
        ),
    }
    if "text_projection.weight" in state:
        config["projection_dim"] = int(state["text_projection.weight"].shape[0])
    return config | dict(stored or {})


# ----- building models --------------------------------------------------------------------------


def _materialise(make: Callable[[], Any], state: dict[str, Any], what: str) -> Any:
    """Build a module on the meta device and assign ``state``'s tensors into it, uncopied."""
    import torch

    with torch.device("meta"):
        model = make()
    expected = model.state_dict().keys()
    if "text_model.embeddings.token_embedding.weight" in state and not any(
        key.startswith("text_model.") for key in expected
    ):  # transformers 5's CLIPTextModel has no ``text_model.`` level; files (and 4.x) do
        state = {key.removeprefix("text_model."): value for key, value in state.items()}
    # Transposed views (OpenCLIP's text projection) would take other matmul kernels than the
    # contiguous weights diffusers loads, and round differently; the copies are small.
    state = {key: value.contiguous() for key, value in state.items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as error:  # size mismatches, e.g. a stored config that contradicts shapes
        raise ValueError(
            f"{what}: the weights do not fit the detected architecture ({error})"
        ) from None
    if missing or unexpected:
        raise ValueError(
            f"{what}: the weights do not fit the detected architecture "
            f"(missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]})"
        )
    for module in model.modules():  # non-persistent buffers are not in any file: make them here
        if hasattr(module, "position_ids") and module.position_ids.is_meta:
            count = module.position_ids.shape[-1]
            module.register_buffer(
                "position_ids", torch.arange(count).expand((1, -1)), persistent=False
            )
    leftover = [
        name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta
    ]
    if leftover:
        raise ValueError(f"{what}: no weights for {leftover[:4]}")
    return model.eval().requires_grad_(False)


def build_unet(
    state: dict[str, Any],
    family: Family,
    pooled_dim: int | None = None,
    stored: Mapping[str, Any] | None = None,
) -> Any:
    config = unet_config(state, family, pooled_dim, stored)
    unet_class = hf.diffusers().UNet2DConditionModel
    return _materialise(lambda: unet_class.from_config(config), state, "U-Net")


def build_vae(
    state: dict[str, Any], family: Family, stored: Mapping[str, Any] | None = None
) -> Any:
    config = vae_config(state, family, stored)
    vae_class = hf.diffusers().AutoencoderKL
    return _materialise(lambda: vae_class.from_config(config), state, "VAE")


def build_text_encoder(
    state: dict[str, Any],
    base: Mapping[str, Any],
    *,
    projection: bool = False,
    stored: Mapping[str, Any] | None = None,
) -> Any:
    transformers = hf.transformers()
    state.pop("text_model.embeddings.position_ids", None)
    config = transformers.CLIPTextConfig(**text_config(state, base, stored))
    cls = transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel
    return _materialise(lambda: cls(config), state, "text encoder")


def hf_text_state(state: dict[str, Any]) -> dict[str, Any]:
    """transformers CLIP keys with their ``text_model.`` level, as hub files and SD checkpoints
    have them (transformers 5 saves CLIPTextModel without it, and so do some old files)."""
    if any(key.startswith("text_model.") for key in state):
        return state
    return {f"text_model.{key}": value for key, value in state.items()}


def openclip_text_state(state: dict[str, Any], *, drop_last_layer: bool) -> dict[str, Any]:
    """OpenCLIP weights in transformers layout; SD 2.x uses all layers but the last."""
    from nodes.ldm_layout import openclip_to_hf

    converted = openclip_to_hf(state)
    if drop_last_layer:
        last = _count(converted, r"text_model\.encoder\.layers\.(\d+)\.") - 1
        converted = {
            k: v
            for k, v in converted.items()
            if not k.startswith(f"text_model.encoder.layers.{last}.")
        }
        converted.pop("text_projection.weight", None)
    return converted


def tokenizer_for(family: Family, second: bool = False) -> Any:
    """The real CLIP tokenizer; OpenCLIP's (SD 2.x, SDXL's second) pads with ``!``."""
    return clip_tokenizer("!" if family == "sd2" or second else EOS_TOKEN)


@dataclass
class LoadedCheckpoint:
    family: Family
    prediction_type: str
    unet: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    zero_snr: bool = False

    @property
    def scheduler_config(self) -> dict[str, Any]:
        return unet_scheduler_config(self.family, self.prediction_type, self.zero_snr)


def load_checkpoint_file(
    path: str | Path, dtype: Any, *, allow_pickle: bool = False, prediction: str = "auto"
) -> LoadedCheckpoint:
    """Load an original-layout SD 1.x / 2.x / XL checkpoint file, offline.

    Configs come from shapes and the family's config, overridden by any the file stores under
    ``nodeflow.architecture``; the weights must fit the result either way.
    """
    from nodes.ldm_layout import unet_to_diffusers, vae_to_diffusers

    file = CheckpointFile(path, allow_pickle=allow_pickle)
    found = detect(file)
    if found.kind != "checkpoint" or found.family is None:
        raise ValueError(
            f"{file.path.name} is not a full Stable Diffusion checkpoint: it looks like "
            f"{found.describe()}; load it with the matching loader"
        )
    family = found.family
    stored = stored_architecture(file)
    known = (UNET_PREFIX, VAE_PREFIX, "cond_stage_model.", "conditioner.")
    ignored = [k for k in file.keys if not k.startswith(known)]
    if ignored:
        log.debug(
            "%s: ignoring %d keys outside the model (%s...)", file.path, len(ignored), ignored[0]
        )
    text_encoders, tokenizers = [], []
    pooled_dim = None
    if family == "sd1":
        state = hf_text_state(file.read(SD1_TEXT_PREFIX, dtype))
        text_encoders.append(
            build_text_encoder(
                state, family_config("sd1", "text_encoder"), stored=stored.get("text_encoder")
            )
        )
    elif family == "sd2":
        state = openclip_text_state(file.read(SD2_TEXT_PREFIX, dtype), drop_last_layer=True)
        text_encoders.append(
            build_text_encoder(
                state, family_config("sd2", "text_encoder"), stored=stored.get("text_encoder")
            )
        )
    else:
        state = hf_text_state(file.read(SDXL_TEXT_PREFIX, dtype))
        text_encoders.append(
            build_text_encoder(
                state, family_config("sdxl", "text_encoder"), stored=stored.get("text_encoder")
            )
        )
        state = openclip_text_state(file.read(SDXL_TEXT_2_PREFIX, dtype), drop_last_layer=False)
        encoder_2 = build_text_encoder(
            state,
            family_config("sdxl", "text_encoder_2"),
            projection=True,
            stored=stored.get("text_encoder_2"),
        )
        text_encoders.append(encoder_2)
        pooled_dim = int(encoder_2.config.projection_dim)
    tokenizers = [tokenizer_for(family, second=i > 0) for i in range(len(text_encoders))]
    unet = build_unet(
        unet_to_diffusers(file.read(UNET_PREFIX, dtype)), family, pooled_dim, stored.get("unet")
    )
    vae = build_vae(vae_to_diffusers(file.read(VAE_PREFIX, dtype)), family, stored.get("vae"))
    chosen = found.prediction_type if prediction == "auto" else prediction
    return LoadedCheckpoint(
        family, chosen or "epsilon", unet, vae, text_encoders, tokenizers, found.zero_snr
    )
