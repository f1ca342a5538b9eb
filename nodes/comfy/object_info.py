"""The mapped ComfyUI core nodes described as ComfyUI's ``/object_info`` describes them.

So a ComfyUI client that builds its prompts from ``/object_info`` (choices of checkpoints,
samplers, widget ranges) finds the nodes it knows, with the files this server has.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

from nodeflow import Environment
from nodes.comfy.mapping import DUAL_CLIP_TYPES, TRANSLATORS, WEIGHT_DTYPES
from nodes.comfy.samplers import COMFY_SCHEDULERS, NEAR_SAMPLERS, SAMPLERS
from nodes.files import FILE_KINDS
from nodes.ksampling.model_sampling import DiscreteSampling

INT_MAX = 0xFFFFFFFFFFFFFFFF
Input = tuple[str, Any, dict[str, Any]]

UPSCALE = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
MAX_RESOLUTION = 16384
"""ComfyUI's ``nodes.MAX_RESOLUTION``, the bound of its size and offset widgets."""
DEPRECATED = {"ControlNetApply"}
"""Classes ComfyUI marks ``DEPRECATED`` (its editor hides them from search)."""
OPTIONAL = "optional"
"""A key of an input's options here, not ComfyUI's: the input goes under ``optional``."""
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
        **_controlnet(),
        **_masks(),
        **_sd3_flux(),
    }


def _controlnet() -> dict[str, tuple[str, list[Input], list[str], list[str]]]:
    """ComfyUI's ``nodes.py`` ControlNetLoader, ControlNetApply, ControlNetApplyAdvanced."""
    strength = ("strength", "FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})
    percent = {"min": 0.0, "max": 1.0, "step": 0.001}
    control = [("control_net", "CONTROL_NET", {}), ("image", "IMAGE", {}), strength]
    return {
        "ControlNetLoader": (
            "loaders",
            [("control_net_name", "files:controlnet", {})],
            ["CONTROL_NET"],
            [],
        ),
        "ControlNetApply": (
            "conditioning/controlnet",
            [("conditioning", "CONDITIONING", {}), *control],
            ["CONDITIONING"],
            [],
        ),
        "ControlNetApplyAdvanced": (
            "conditioning/controlnet",
            [
                ("positive", "CONDITIONING", {}),
                ("negative", "CONDITIONING", {}),
                *control,
                ("start_percent", "FLOAT", {"default": 0.0, **percent}),
                ("end_percent", "FLOAT", {"default": 1.0, **percent}),
                ("vae", "VAE", {OPTIONAL: True}),
            ],
            ["CONDITIONING", "CONDITIONING"],
            ["positive", "negative"],
        ),
    }


def _offset(name: str) -> Input:
    return (name, "INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1})


def _masks() -> dict[str, tuple[str, list[Input], list[str], list[str]]]:
    """Inpainting (``nodes.py``) and ComfyUI's ``comfy_extras/nodes_mask.py`` mask nodes.

    ImageToMask offers red, green and blue only: the importer refuses "alpha" (an alpha
    channel is LoadImage's MASK output here), and a client should not be offered what fails.
    """
    mask = ("mask", "MASK", {})
    unit = {"min": 0.0, "max": 1.0, "step": 0.01}
    side = {"min": 1, "max": MAX_RESOLUTION, "step": 1}
    return {
        "SetLatentNoiseMask": (
            "latent/inpaint",
            [("samples", "LATENT", {}), mask],
            ["LATENT"],
            [],
        ),
        "InpaintModelConditioning": (
            "conditioning/inpaint",
            [
                ("positive", "CONDITIONING", {}),
                ("negative", "CONDITIONING", {}),
                ("vae", "VAE", {}),
                ("pixels", "IMAGE", {}),
                mask,
                ("noise_mask", "BOOLEAN", {"default": True}),
            ],
            ["CONDITIONING", "CONDITIONING", "LATENT"],
            ["positive", "negative", "latent"],
        ),
        "InvertMask": ("mask", [mask], ["MASK"], []),
        "GrowMask": (
            "mask",
            [
                mask,
                (
                    "expand",
                    "INT",
                    {"default": 0, "min": -MAX_RESOLUTION, "max": MAX_RESOLUTION, "step": 1},
                ),
                ("tapered_corners", "BOOLEAN", {"default": True}),
            ],
            ["MASK"],
            [],
        ),
        "FeatherMask": (
            "mask",
            [mask, *(_offset(edge) for edge in ("left", "top", "right", "bottom"))],
            ["MASK"],
            [],
        ),
        "ThresholdMask": (
            "mask",
            [mask, ("value", "FLOAT", {"default": 0.5, **unit})],
            ["MASK"],
            [],
        ),
        "SolidMask": (
            "mask",
            [
                ("value", "FLOAT", {"default": 1.0, **unit}),
                ("width", "INT", {"default": 512, **side}),
                ("height", "INT", {"default": 512, **side}),
            ],
            ["MASK"],
            [],
        ),
        "MaskComposite": (
            "mask",
            [
                ("destination", "MASK", {}),
                ("source", "MASK", {}),
                _offset("x"),
                _offset("y"),
                ("operation", ["multiply", "add", "subtract", "and", "or", "xor"], {}),
            ],
            ["MASK"],
            [],
        ),
        "ImageToMask": (
            "mask",
            [("image", "IMAGE", {}), ("channel", ["red", "green", "blue"], {})],
            ["MASK"],
            [],
        ),
        "MaskToImage": ("mask", [mask], ["IMAGE"], []),
        "ImageCompositeMasked": (
            "image",
            [
                ("destination", "IMAGE", {}),
                ("source", "IMAGE", {}),
                _offset("x"),
                _offset("y"),
                ("resize_source", "BOOLEAN", {"default": False}),
                ("mask", "MASK", {OPTIONAL: True}),
            ],
            ["IMAGE"],
            [],
        ),
    }


def _sd3_flux() -> dict[str, tuple[str, list[Input], list[str], list[str]]]:
    """SD3 and Flux's file loaders and nodes (``nodes.py``, ``comfy_extras/nodes_sd3.py``,
    ``nodes_flux.py``, ``nodes_model_advanced.py``).

    Choices are narrowed to what the importer accepts (UNETLoader without fp8_e5m2,
    DualCLIPLoader's sdxl and flux), so a graph built from this description imports.
    """
    prompt = {"multiline": True, "dynamicPrompts": True}
    guidance = ("guidance", "FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1})
    shift = {"min": 0.0, "max": 100.0, "step": 0.01}
    size = {"default": 1024, "min": 16, "max": MAX_RESOLUTION}
    text_encoder = "files:text_encoders"
    return {
        "UNETLoader": (
            "advanced/loaders",
            [("unet_name", "files:unet", {}), ("weight_dtype", list(WEIGHT_DTYPES), {})],
            ["MODEL"],
            [],
        ),
        "DualCLIPLoader": (
            "advanced/loaders",
            [
                ("clip_name1", text_encoder, {}),
                ("clip_name2", text_encoder, {}),
                ("type", list(DUAL_CLIP_TYPES), {}),
                ("device", ["default", "cpu"], {OPTIONAL: True}),
            ],
            ["CLIP"],
            [],
        ),
        "TripleCLIPLoader": (
            "advanced/loaders",
            [(f"clip_name{i}", text_encoder, {}) for i in (1, 2, 3)],
            ["CLIP"],
            [],
        ),
        "CLIPTextEncodeSD3": (
            "advanced/conditioning",
            [
                ("clip", "CLIP", {}),
                ("clip_l", "STRING", prompt),
                ("clip_g", "STRING", prompt),
                ("t5xxl", "STRING", prompt),
                ("empty_padding", ["none", "empty_prompt"], {}),
            ],
            ["CONDITIONING"],
            [],
        ),
        "FluxGuidance": (
            "advanced/conditioning/flux",
            [("conditioning", "CONDITIONING", {}), guidance],
            ["CONDITIONING"],
            [],
        ),
        "ModelSamplingSD3": (
            "advanced/model",
            [("model", "MODEL", {}), ("shift", "FLOAT", {"default": 3.0, **shift})],
            ["MODEL"],
            [],
        ),
        "CLIPTextEncodeFlux": (
            "advanced/conditioning/flux",
            [
                ("clip", "CLIP", {}),
                ("clip_l", "STRING", prompt),
                ("t5xxl", "STRING", prompt),
                guidance,
            ],
            ["CONDITIONING"],
            [],
        ),
        "ModelSamplingFlux": (
            "advanced/model",
            [
                ("model", "MODEL", {}),
                ("max_shift", "FLOAT", {"default": 1.15, **shift}),
                ("base_shift", "FLOAT", {"default": 0.5, **shift}),
                ("width", "INT", {**size, "step": 8}),
                ("height", "INT", {**size, "step": 8}),
            ],
            ["MODEL"],
            [],
        ),
        "ModelSamplingDiscrete": (
            "advanced/model",
            [
                ("model", "MODEL", {}),
                ("sampling", list(get_args(DiscreteSampling)), {}),
                ("zsnr", "BOOLEAN", {"default": False}),
            ],
            ["MODEL"],
            [],
        ),
        "EmptySD3LatentImage": (
            "latent/sd3",
            [
                ("width", "INT", {**size, "step": 16}),
                ("height", "INT", {**size, "step": 16}),
                ("batch_size", "INT", {"default": 1, "min": 1, "max": 4096}),
            ],
            ["LATENT"],
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
        optional: dict[str, Any] = {}
        for name, kind, given in inputs:
            if isinstance(kind, str) and kind.startswith("files:"):
                what = kind.removeprefix("files:")
                if what not in lists:
                    lists[what] = _files(what)(env)
                kind = lists[what]
            options = {k: v for k, v in given.items() if k != OPTIONAL}
            section = optional if given.get(OPTIONAL) else required
            section[name] = [kind, options] if options else [kind]
        order = {"required": list(required)} | ({"optional": list(optional)} if optional else {})
        info[class_type] = {
            "input": {"required": required, "optional": optional, "hidden": {}},
            "input_order": order,
            "output": outputs,
            "output_is_list": [False] * len(outputs),
            "output_name": names or outputs,
            "name": class_type,
            "display_name": class_type,
            "description": "ComfyUI core node, translated to nodeflow's nodes",
            "python_module": "nodes",
            "category": category,
            "output_node": class_type in ("SaveImage", "PreviewImage"),
            "deprecated": class_type in DEPRECATED,
            "experimental": False,
        }
    return info
