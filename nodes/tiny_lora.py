"""Tiny random LoRA files for a tiny model folder, in the layouts real LoRA files come in.

Tests need LoRAs whose effect is visible (``up`` is not zero, as it is right after training
starts) and whose scale is not 1 (alpha != rank), so that a loader that ignores alpha, drops a
layer type or mixes up ``down`` and ``up`` gives a different picture. The same weights are
written in kohya layout (what model sites serve; SDXL U-Net keys in SGM names, as kohya's
trainer writes them) and in diffusers/PEFT layout (what ``save_lora_weights`` writes, with its
``lora_adapter_metadata`` header carrying the alphas).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["write_tiny_loras"]

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
SECOND_UNET_TARGETS = ("to_k", "to_v", "proj_out")
SECOND_TEXT_TARGETS = ("q_proj", "out_proj", "fc2")
"""With ``out_proj``: diffusers recognises kohya text-encoder attention LoRAs only by it
(``convert_state_dict_to_diffusers`` looks for ``to_out_lora``) and silently drops q/k/v without."""
KOHYA_TEXT_PREFIX = {"text_encoder": "lora_te_", "text_encoder_2": "lora_te2_"}


def _weight_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """{module name: weight shape} of a component folder, read from its safetensors header."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - not a dict
                if key.endswith(".weight"):
                    shapes[key.removesuffix(".weight")] = tuple(f.get_slice(key).get_shape())
    return shapes


def _targets(shapes: dict[str, tuple[int, ...]], suffixes: Iterable[str]) -> list[str]:
    ends = tuple("." + s for s in suffixes)
    return sorted(
        name for name, shape in shapes.items() if name.endswith(ends) and len(shape) in (2, 4)
    )


def _random_pair(
    shape: tuple[int, ...], rank: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """down [rank, in, k...] and up [out, rank, 1...] sized so the delta is clearly visible."""
    out_features, in_features, *kernel = shape
    fan_in = in_features * (kernel[0] * kernel[1] if kernel else 1)
    down = torch.randn(rank, in_features, *kernel, generator=gen) / fan_in**0.5
    up = torch.randn(out_features, rank, *([1, 1] if kernel else []), generator=gen) / rank**0.5
    return down, up


def _layer_sets(
    folder: Path, unet_targets: Iterable[str], text_targets: Iterable[str]
) -> dict[str, dict[str, tuple[int, ...]]]:
    """{component: {module name as LoRA files write it: weight shape}} for the targets."""
    layers: dict[str, dict[str, tuple[int, ...]]] = {}
    unet = _weight_shapes(folder / "unet")
    layers["unet"] = {name: unet[name] for name in _targets(unet, unet_targets)}
    for component in ("text_encoder", "text_encoder_2"):
        if not (folder / component).is_dir():
            continue
        shapes = _weight_shapes(folder / component)
        # Real files name CLIP modules with transformers' ``text_model.`` prefix.
        layers[component] = {
            "text_model." + name.removeprefix("text_model."): shapes[name]
            for name in _targets(shapes, text_targets)
        }
    return layers


def _kohya_unet_names(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """{diffusers name: name in a kohya file}: SGM names for SDXL, as kohya's trainer writes."""
    names = list(names)
    if not (folder / "text_encoder_2").is_dir():
        return {name: name for name in names}
    from nodes.lora import sgm_names

    keys = [f"{name}.weight" for name in _weight_shapes(folder / "unet")]
    inverse = {diffusers: sgm for sgm, diffusers in sgm_names(keys, names).items()}
    missing = [name for name in names if name not in inverse]
    if missing:
        raise ValueError(f"no SGM names for {missing[:3]}")
    return inverse


def _write(
    folder: Path,
    out_dir: Path,
    stem: str,
    *,
    seed: int,
    rank: int,
    alphas: dict[str, float | None],
    unet_targets: Iterable[str],
    text_targets: Iterable[str],
    peft_metadata: bool,
) -> dict[str, Path]:
    """One random LoRA, written in kohya layout and in diffusers/PEFT layout."""
    gen = torch.Generator().manual_seed(seed)
    layers = _layer_sets(folder, unet_targets, text_targets)
    kohya_unet = _kohya_unet_names(folder, layers["unet"])
    kohya: dict[str, torch.Tensor] = {}
    peft: dict[str, torch.Tensor] = {}
    metadata: dict[str, object] = {}
    for component, modules in layers.items():
        alpha = alphas.get(component)
        for name, shape in modules.items():
            down, up = _random_pair(shape, rank, gen)
            if component == "unet":
                kohya_name = "lora_unet_" + kohya_unet[name].replace(".", "_")
            else:
                kohya_name = KOHYA_TEXT_PREFIX[component] + name.replace(".", "_")
            if component == "text_encoder" and "text_encoder_2" in layers:
                kohya_name = kohya_name.replace("lora_te_", "lora_te1_", 1)
            kohya[f"{kohya_name}.lora_down.weight"] = down
            kohya[f"{kohya_name}.lora_up.weight"] = up
            if alpha is not None:
                kohya[f"{kohya_name}.alpha"] = torch.tensor(alpha)
            peft[f"{component}.{name}.lora_A.weight"] = down
            peft[f"{component}.{name}.lora_B.weight"] = up
        targets = unet_targets if component == "unet" else text_targets
        if peft_metadata and alpha is not None:
            metadata |= {
                f"{component}.r": rank,
                f"{component}.lora_alpha": alpha,
                f"{component}.target_modules": sorted(targets),
            }
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        stem: out_dir / f"{stem}_kohya.safetensors",
        f"{stem}_peft": out_dir / f"{stem}_peft.safetensors",
    }
    save_file(kohya, paths[stem], metadata={"format": "pt"})
    header = {"format": "pt"}
    if metadata:
        header["lora_adapter_metadata"] = json.dumps(metadata, indent=2, sort_keys=True)
    save_file(peft, paths[f"{stem}_peft"], metadata=header)
    return paths


def write_tiny_loras(
    model_folder: str | Path, out_dir: str | Path, *, seed: int = 0, rank: int = 4
) -> dict[str, Path]:
    """Write tiny random LoRAs for the diffusers model at ``model_folder`` into ``out_dir``.

    Returns {name: path}:

    * ``kohya`` / ``peft``: the same weights in kohya layout and in diffusers/PEFT layout (with
      the alphas in its header), targeting the U-Net's attention projections, ``proj_in`` and
      ``proj_out``, and the text encoders' attention and MLP layers; alpha != rank, and the
      U-Net and the text encoders have different alphas.
    * ``second`` / ``second_peft``: a different LoRA (other seed, half the rank, fewer layers) for
      stacking tests; its text encoder layers carry no alpha (scale 1), and its PEFT file has no
      metadata at all, so there every scale is 1, as diffusers reads such files.

    The same arguments always give byte-identical files.
    """
    folder, out = Path(model_folder), Path(out_dir)
    text_parts = ("text_encoder", "text_encoder_2")
    paths = _write(
        folder,
        out,
        "first",
        seed=seed,
        rank=rank,
        alphas={"unet": rank / 2, **{part: rank * 0.75 for part in text_parts}},
        unet_targets=UNET_TARGETS,
        text_targets=TEXT_TARGETS,
        peft_metadata=True,
    )
    second_rank = max(1, rank // 2)
    paths |= _write(
        folder,
        out,
        "second",
        seed=seed + 1,
        rank=second_rank,
        alphas={"unet": second_rank * 1.5},
        unet_targets=SECOND_UNET_TARGETS,
        text_targets=SECOND_TEXT_TARGETS,
        peft_metadata=False,
    )
    return {
        "kohya": paths["first"],
        "peft": paths["first_peft"],
        "second": paths["second"],
        "second_peft": paths["second_peft"],
    }
