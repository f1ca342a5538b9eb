"""The mapped ComfyUI core nodes described as ComfyUI's ``/object_info`` describes them.

So a ComfyUI client that builds its prompts from ``/object_info`` (choices of checkpoints,
samplers, widget ranges) finds the nodes it knows, with the files this server has.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodeflow import Environment
from nodes.comfy.mapping import TRANSLATORS
from nodes.comfy.samplers import COMFY_SCHEDULERS, NEAR_SAMPLERS, SAMPLERS
from nodes.files import FILE_KINDS

INT_MAX = 0xFFFFFFFFFFFFFFFF
Input = tuple[str, Any, dict[str, Any]]

UPSCALE = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
CROP = ["disabled", "center"]
MODEL_EXTENSIONS = {".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft"}


def _files(kind: str, folder_names: tuple[str, ...] = ()) -> Callable[[Environment], list[str]]:
    def names(env: Environment) -> list[str]:
        found: list[str] = []
        file_kind = FILE_KINDS.get(kind)
        folders = list(file_kind.folders(env)) if file_kind else []
        folders += [env.models_dir / name for name in folder_names]
        for folder in folders:
            found += _names_in(folder, images=kind == "input")
        built_in = list(file_kind.built_in) if file_kind else []
        return sorted(set(found)) + [b for b in built_in if b not in found]

    return names


def _names_in(folder: Path, images: bool) -> list[str]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    keep = {".png", ".jpg", ".jpeg", ".webp"} if images else MODEL_EXTENSIONS
    return [e.name for e in entries if e.suffix.lower() in keep or (e.is_dir() and not images)]


def _seed(name: str) -> Input:
    return (name, "INT", {"default": 0, "min": 0, "max": INT_MAX, "control_after_generate": True})


def _sampling() -> list[Input]:
    return [
        ("steps", "INT", {"default": 20, "min": 1, "max": 1000}),
        ("cfg", "FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
        ("sampler_name", sorted({*SAMPLERS, *NEAR_SAMPLERS}), {}),
        ("scheduler", list(COMFY_SCHEDULERS), {}),
        ("positive", "CONDITIONING", {}),
        ("negative", "CONDITIONING", {}),
        ("latent_image", "LATENT", {}),
    ]


def _size(name: str, default: int) -> Input:
    return (name, "INT", {"default": default, "min": 16, "max": 16384, "step": 8})


def _core() -> dict[str, tuple[str, list[Input], list[str], list[str]]]:
    """class type -> (category, inputs, output types, output names); file choices are kinds."""
    text = ("text", "STRING", {"multiline": True, "dynamicPrompts": True})
    strength = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}
    checkpoint = [("ckpt_name", "files:checkpoints", {})]
    loader_out = ["MODEL", "CLIP", "VAE"]
    return {
        "CheckpointLoaderSimple": ("loaders", checkpoint, loader_out, loader_out),
        "unCLIPCheckpointLoader": (
            "loaders",
            checkpoint,
            [*loader_out, "CLIP_VISION"],
            [*loader_out, "CLIP_VISION"],
        ),
        "CLIPTextEncode": ("conditioning", [text, ("clip", "CLIP", {})], ["CONDITIONING"], []),
        "CLIPTextEncodeSDXL": (
            "advanced/conditioning",
            [
                ("clip", "CLIP", {}),
                _size("width", 1024),
                _size("height", 1024),
                ("crop_w", "INT", {"default": 0, "min": 0, "max": 16384}),
                ("crop_h", "INT", {"default": 0, "min": 0, "max": 16384}),
                _size("target_width", 1024),
                _size("target_height", 1024),
                ("text_g", "STRING", {"multiline": True}),
                ("text_l", "STRING", {"multiline": True}),
            ],
            ["CONDITIONING"],
            [],
        ),
        "KSampler": (
            "sampling",
            [
                ("model", "MODEL", {}),
                _seed("seed"),
                *_sampling(),
                ("denoise", "FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            ],
            ["LATENT"],
            [],
        ),
        "KSamplerAdvanced": (
            "sampling",
            [
                ("model", "MODEL", {}),
                ("add_noise", ["enable", "disable"], {}),
                _seed("noise_seed"),
                *_sampling(),
                ("start_at_step", "INT", {"default": 0, "min": 0, "max": 10000}),
                ("end_at_step", "INT", {"default": 10000, "min": 0, "max": 10000}),
                ("return_with_leftover_noise", ["disable", "enable"], {}),
            ],
            ["LATENT"],
            [],
        ),
        "EmptyLatentImage": (
            "latent",
            [
                _size("width", 512),
                _size("height", 512),
                ("batch_size", "INT", {"default": 1, "min": 1, "max": 64}),
            ],
            ["LATENT"],
            [],
        ),
        "VAEDecode": ("latent", [("samples", "LATENT", {}), ("vae", "VAE", {})], ["IMAGE"], []),
        "VAEEncode": ("latent", [("pixels", "IMAGE", {}), ("vae", "VAE", {})], ["LATENT"], []),
        "VAELoader": ("loaders", [("vae_name", "files:vae", {})], ["VAE"], []),
        "SaveImage": (
            "image",
            [("images", "IMAGE", {}), ("filename_prefix", "STRING", {"default": "ComfyUI"})],
            [],
            [],
        ),
        "PreviewImage": ("image", [("images", "IMAGE", {})], [], []),
        "LoadImage": (
            "image",
            [("image", "files:input", {"image_upload": True})],
            ["IMAGE", "MASK"],
            [],
        ),
        "LoraLoader": (
            "loaders",
            [
                ("model", "MODEL", {}),
                ("clip", "CLIP", {}),
                ("lora_name", "files:loras", {}),
                ("strength_model", "FLOAT", strength),
                ("strength_clip", "FLOAT", strength),
            ],
            ["MODEL", "CLIP"],
            [],
        ),
        "LoraLoaderModelOnly": (
            "loaders",
            [
                ("model", "MODEL", {}),
                ("lora_name", "files:loras", {}),
                ("strength_model", "FLOAT", strength),
            ],
            ["MODEL"],
            [],
        ),
        "CLIPSetLastLayer": (
            "conditioning",
            [
                ("clip", "CLIP", {}),
                ("stop_at_clip_layer", "INT", {"default": -1, "min": -1, "max": -1}),
            ],
            ["CLIP"],
            [],
        ),
        "LatentUpscale": (
            "latent",
            [
                ("samples", "LATENT", {}),
                ("upscale_method", UPSCALE, {}),
                _size("width", 512),
                _size("height", 512),
                ("crop", CROP, {}),
            ],
            ["LATENT"],
            [],
        ),
        "LatentUpscaleBy": (
            "latent",
            [
                ("samples", "LATENT", {}),
                ("upscale_method", UPSCALE, {}),
                ("scale_by", "FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01}),
            ],
            ["LATENT"],
            [],
        ),
        "ImageScale": (
            "image/upscaling",
            [
                ("image", "IMAGE", {}),
                ("upscale_method", UPSCALE, {}),
                _size("width", 512),
                _size("height", 512),
                ("crop", CROP, {}),
            ],
            ["IMAGE"],
            [],
        ),
        "ImageScaleBy": (
            "image/upscaling",
            [
                ("image", "IMAGE", {}),
                ("upscale_method", UPSCALE, {}),
                ("scale_by", "FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}),
            ],
            ["IMAGE"],
            [],
        ),
        "unCLIPConditioning": (
            "conditioning",
            [
                ("conditioning", "CONDITIONING", {}),
                ("clip_vision_output", "CLIP_VISION_OUTPUT", {}),
                ("strength", "FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}),
                (
                    "noise_augmentation",
                    "FLOAT",
                    {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01},
                ),
            ],
            ["CONDITIONING"],
            [],
        ),
        "CLIPVisionLoader": (
            "loaders",
            [("clip_name", "files:checkpoints", {})],
            ["CLIP_VISION"],
            [],
        ),
        "CLIPVisionEncode": (
            "conditioning",
            [
                ("clip_vision", "CLIP_VISION", {}),
                ("image", "IMAGE", {}),
                ("crop", ["center", "none"], {}),
            ],
            ["CLIP_VISION_OUTPUT"],
            [],
        ),
    }


def core_object_info(env: Environment) -> dict[str, Any]:
    """``/object_info`` entries of every mapped ComfyUI core node, with this server's files."""
    info: dict[str, Any] = {}
    lists: dict[str, list[str]] = {}
    for class_type, (category, inputs, outputs, names) in _core().items():
        assert class_type in TRANSLATORS, class_type
        required: dict[str, Any] = {}
        for name, kind, options in inputs:
            if isinstance(kind, str) and kind.startswith("files:"):
                what = kind.removeprefix("files:")
                if what not in lists:
                    lists[what] = _files(what)(env)
                kind = lists[what]
            required[name] = [kind, options] if options else [kind]
        info[class_type] = {
            "input": {"required": required, "optional": {}, "hidden": {}},
            "input_order": {"required": list(required)},
            "output": outputs,
            "output_is_list": [False] * len(outputs),
            "output_name": names or outputs,
            "name": class_type,
            "display_name": class_type,
            "description": "ComfyUI core node, translated to nodeflow's nodes",
            "python_module": "nodes",
            "category": category,
            "output_node": class_type in ("SaveImage", "PreviewImage"),
            "deprecated": False,
            "experimental": False,
        }
    return info
