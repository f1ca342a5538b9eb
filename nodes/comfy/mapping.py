"""ComfyUI's core nodes, each as the pack's nodes that do the same (``TRANSLATORS``).

A translator reads one ComfyUI node's inputs and adds nodeflow nodes; it returns what each of
the ComfyUI node's outputs became, by index (None: an output with no equivalent here, reported
only if something uses it). ``WIDGETS`` lists each class type's widget values in the order the
UI format's ``widgets_values`` holds them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodes.comfy.build import ComfyNode, Link, link
from nodes.comfy.samplers import map_sampler
from nodes.ksampling.flow_sigmas import flux_resolution_shift
from nodes.ksampling.model_sampling import COMFY_ONLY_SAMPLING

Translator = Callable[[ComfyNode], list[Link | None]]

SEED_CONTROL = "control_after_generate"
"""The editor's extra widget after a seed ("fixed", "randomize", ...): not a node input."""

WIDGETS: dict[str, tuple[str, ...]] = {
    "CheckpointLoaderSimple": ("ckpt_name",),
    "unCLIPCheckpointLoader": ("ckpt_name",),
    "CLIPTextEncode": ("text",),
    "CLIPTextEncodeSDXL": (
        "width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g", "text_l",
    ),
    "KSampler": ("seed", SEED_CONTROL, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": (
        "add_noise", "noise_seed", SEED_CONTROL, "steps", "cfg", "sampler_name", "scheduler",
        "start_at_step", "end_at_step", "return_with_leftover_noise",
    ),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "VAEDecode": (),
    "VAEEncode": (),
    "VAELoader": ("vae_name",),
    "SaveImage": ("filename_prefix",),
    "PreviewImage": (),
    "LoadImage": ("image", "upload"),
    "LoraLoader": ("lora_name", "strength_model", "strength_clip"),
    "LoraLoaderModelOnly": ("lora_name", "strength_model"),
    "CLIPSetLastLayer": ("stop_at_clip_layer",),
    "LatentUpscale": ("upscale_method", "width", "height", "crop"),
    "LatentUpscaleBy": ("upscale_method", "scale_by"),
    "ImageScale": ("upscale_method", "width", "height", "crop"),
    "ImageScaleBy": ("upscale_method", "scale_by"),
    "unCLIPConditioning": ("strength", "noise_augmentation"),
    "CLIPVisionLoader": ("clip_name",),
    "CLIPVisionEncode": ("crop",),
    "ControlNetLoader": ("control_net_name",),
    "ControlNetApply": ("strength",),
    "ControlNetApplyAdvanced": ("strength", "start_percent", "end_percent"),
    "SetLatentNoiseMask": (),
    "InpaintModelConditioning": ("noise_mask",),
    "InvertMask": (),
    "GrowMask": ("expand", "tapered_corners"),
    "FeatherMask": ("left", "top", "right", "bottom"),
    "ThresholdMask": ("value",),
    "SolidMask": ("value", "width", "height"),
    "MaskComposite": ("x", "y", "operation"),
    "ImageToMask": ("channel",),
    "MaskToImage": (),
    "ImageCompositeMasked": ("x", "y", "resize_source"),
    "UNETLoader": ("unet_name", "weight_dtype"),
    "DualCLIPLoader": ("clip_name1", "clip_name2", "type", "device"),
    "TripleCLIPLoader": ("clip_name1", "clip_name2", "clip_name3"),
    "CLIPTextEncodeSD3": ("clip_l", "clip_g", "t5xxl", "empty_padding"),
    "FluxGuidance": ("guidance",),
    "ModelSamplingSD3": ("shift",),
    "CLIPTextEncodeFlux": ("clip_l", "t5xxl", "guidance"),
    "ModelSamplingFlux": ("max_shift", "base_shift", "width", "height"),
    "ModelSamplingDiscrete": ("sampling", "zsnr"),
    "EmptySD3LatentImage": ("width", "height", "batch_size"),
}  # fmt: skip

UPSCALE_METHODS = {"nearest-exact": "nearest-exact", "bilinear": "bilinear", "area": "area",
                   "bicubic": "bicubic", "bislerp": "bilinear", "lanczos": "bicubic"}  # fmt: skip


def checkpoint_loader(n: ComfyNode) -> list[Link | None]:
    main = n.add("LoadCheckpoint", {"path": n.value("ckpt_name")})
    n.build.companions[link(main, "unet")["from"]] = link(main, "text_encoder")
    return [link(main, "unet"), link(main, "text_encoder"), link(main, "vae")]


def unclip_checkpoint_loader(n: ComfyNode) -> list[Link | None]:
    outputs = checkpoint_loader(n)
    vision = n.add("LoadCLIPVision", {"path": n.value("ckpt_name")}, role="vision")
    return [*outputs, link(vision, "clip_vision")]


def clip_text_encode(n: ComfyNode) -> list[Link | None]:
    main = n.add("TextEncode", {"text_encoder": n.link("clip"), "text": n.value("text", "")})
    return [link(main, "conditioning")]


def clip_text_encode_sdxl(n: ComfyNode) -> list[Link | None]:
    text_g, text_l = n.value("text_g", ""), n.value("text_l", "")
    if text_l not in ("", text_g):
        n.warn("text_l", "both SDXL text encoders get text_g here; text_l is not used")
    encode = n.add("TextEncode", {"text_encoder": n.link("clip"), "text": text_g}, role="text")
    main = n.add(
        "SizeConditioning",
        {
            "conditioning": link(encode, "conditioning"),
            "original_width": n.value("width", 1024),
            "original_height": n.value("height", 1024),
            "crop_left": n.value("crop_w", 0),
            "crop_top": n.value("crop_h", 0),
            "target_width": n.value("target_width", 1024),
            "target_height": n.value("target_height", 1024),
        },
    )
    return [link(main, "conditioning")]


def _sampling(
    n: ComfyNode, seed: Any, steps: Any, strength: Any, **advanced: Any
) -> list[Link | None]:
    """A scheduler node + CFG + Denoise. ``strength`` is Denoise's (the share of the schedule's
    steps that run); ``advanced``: ComfyScheduler's KSamplerAdvanced inputs."""
    model = n.link("model")
    choice = map_sampler(n.value("sampler_name", "euler"), n.value("scheduler", "normal"))
    for name, warning in choice.warnings:
        n.warn(name, warning)
    if choice.error:
        n.issue(choice.error[0], "unsupported_value", choice.error[1])
    extra = advanced if choice.node == "ComfyScheduler" else {}
    sched = n.add(
        choice.node, {"unet": model, **choice.inputs, "steps": steps, **extra}, role="sched"
    )
    cfg = n.add(
        "CFG",
        {
            "unet": model,
            "positive": n.link("positive"),
            "negative": n.link("negative"),
            "scale": n.value("cfg", 8.0),
        },
        role="cfg",
    )
    main = n.add(
        "Denoise",
        {
            "guider": link(cfg, "guider"),
            "scheduler": link(sched, "scheduler"),
            "latent": n.link("latent_image"),
            "seed": seed,
            "strength": strength,
        },
    )
    return [link(main, "latent")]


def _last_steps(run: int, total: int) -> float:
    """Denoise's strength that runs exactly the last ``run`` of ``total`` steps (Denoise runs
    ``int(total * strength)``; the half step keeps float rounding from losing one)."""
    return 1.0 if run >= total else (run + 0.5) / total


def ksampler(n: ComfyNode) -> list[Link | None]:
    """KSampler's ``denoise`` d: ComfyUI runs ``steps`` steps, the last of a schedule of
    ``int(steps / d)`` steps; so does this, as steps and Denoise's strength."""
    steps, denoise = n.value("steps", 20), n.value("denoise", 1.0)
    strength: Any = denoise
    if type(steps) is int and isinstance(denoise, int | float) and not isinstance(denoise, bool):
        if denoise <= 0:
            n.issue("denoise", "unsupported_value", "denoise must be above 0")
        elif denoise <= 0.9999:
            total = int(steps / denoise)
            if total == steps:
                n.warn(
                    "denoise",
                    f"denoise {denoise} with {steps} steps runs the whole schedule, from noise "
                    "alone (ComfyUI also adds the input latent to that noise)",
                )
            steps, strength = total, _last_steps(steps, total)
        else:
            strength = 1.0
    return _sampling(n, n.value("seed", 0), steps, strength)


def ksampler_advanced(n: ComfyNode) -> list[Link | None]:
    steps, start = n.value("steps", 20), n.value("start_at_step", 0)
    end = n.value("end_at_step", 10000)
    add_noise = n.value("add_noise", "enable")
    leftover = n.value("return_with_leftover_noise", "disable")
    numbers = all(type(v) is int for v in (steps, start, end))
    comfy = map_sampler(n.value("sampler_name", "euler"), n.value("scheduler", "normal"))
    if comfy.node != "ComfyScheduler":
        _diffusers_advanced_limits(n, numbers, steps, end, add_noise, leftover)
    elif add_noise == "disable" and numbers and start == 0:
        n.issue(
            "add_noise",
            "unsupported_value",
            "sampling from step 0 without noise is not expressible (Denoise starts from noise)",
        )
    strength: Any = 1.0
    if numbers and 0 < start < steps:
        strength = _last_steps(steps - start, steps)
    elif numbers and start >= steps > 0:
        n.issue("start_at_step", "unsupported_value", f"start_at_step {start} leaves no steps")
    advanced = {
        "end_at_step": min(end, 10000) if type(end) is int else end,
        "return_with_leftover_noise": leftover == "enable",
        "add_noise": add_noise != "disable",
    }
    return _sampling(n, n.value("noise_seed", 0), steps, strength, **advanced)


def _diffusers_advanced_limits(
    n: ComfyNode, numbers: bool, steps: Any, end: Any, add_noise: Any, leftover: Any
) -> None:
    """What diffusers' schedulers (the fallback for samplers ComfyScheduler lacks) cannot do."""
    if numbers and end < steps:
        n.issue(
            "end_at_step",
            "unsupported_value",
            f"stopping at step {end} of {steps} needs a sampler that ComfyScheduler has",
        )
    if leftover != "disable" and not (numbers and end >= steps):
        n.issue("return_with_leftover_noise", "unsupported_value", "must be 'disable' here")
    if add_noise != "enable":
        n.issue("add_noise", "unsupported_value", "continuing without new noise is not expressible")


def empty_latent(n: ComfyNode) -> list[Link | None]:
    return _sized_latent(n, 512)


def _sized_latent(n: ComfyNode, size: int) -> list[Link | None]:
    """EmptyLatent: a size only; its channels follow the model (EmptySD3LatentImage too)."""
    main = n.add(
        "EmptyLatent",
        {
            "width": n.value("width", size),
            "height": n.value("height", size),
            "batch_size": n.value("batch_size", 1),
        },
    )
    return [link(main, "latent")]


def vae_decode(n: ComfyNode) -> list[Link | None]:
    main = n.add("VAEDecode", {"vae": n.link("vae"), "latent": n.link("samples")})
    return [link(main, "image")]


def vae_encode(n: ComfyNode) -> list[Link | None]:
    # ComfyUI encodes to the posterior's mean and draws no sample from it
    inputs = {"vae": n.link("vae"), "image": n.link("pixels"), "posterior": "mean"}
    main = n.add("VAEEncode", inputs)
    return [link(main, "latent")]


def vae_loader(n: ComfyNode) -> list[Link | None]:
    return [link(n.add("LoadVAE", {"path": n.value("vae_name")}), "vae")]


def save_image(n: ComfyNode) -> list[Link | None]:
    prefix = n.value("filename_prefix", "ComfyUI")
    n.add("SaveImage", {"image": n.link("images"), "prefix": prefix, "rounding": "truncate"})
    return []


def preview_image(n: ComfyNode) -> list[Link | None]:
    n.add("PreviewImage", {"image": n.link("images")})
    return []


def load_image(n: ComfyNode) -> list[Link | None]:
    main = n.add("LoadImage", {"path": n.value("image")})
    return [link(main, "image"), link(main, "mask")]


def lora_loader(n: ComfyNode) -> list[Link | None]:
    main = n.add(
        "LoadLoRA",
        {
            "unet": n.link("model"),
            "text_encoder": n.link("clip"),
            "path": n.value("lora_name"),
            "strength_unet": n.value("strength_model", 1.0),
            "strength_text_encoder": n.value("strength_clip", 1.0),
        },
    )
    n.build.companions[link(main, "unet")["from"]] = link(main, "text_encoder")
    return [link(main, "unet"), link(main, "text_encoder")]


def lora_loader_model_only(n: ComfyNode) -> list[Link | None]:
    model = n.link("model")
    text_encoder = n.build.companions.get(model["from"]) if model else None
    if model is not None and text_encoder is None:
        n.issue("model", "unsupported", "the model must come from a checkpoint or LoRA loader")
    main = n.add(
        "LoadLoRA",
        {
            "unet": model,
            "text_encoder": text_encoder,
            "path": n.value("lora_name"),
            "strength_unet": n.value("strength_model", 1.0),
            "strength_text_encoder": 0.0,
        },
    )
    n.build.companions[link(main, "unet")["from"]] = link(main, "text_encoder")
    return [link(main, "unet")]


def clip_set_last_layer(n: ComfyNode) -> list[Link | None]:
    clip = n.link("clip")
    layer = n.value("stop_at_clip_layer", -1)
    if layer == -1:
        return [clip]
    main = n.add("SetLastLayer", {"text_encoder": clip, "stop_at_clip_layer": layer})
    return [link(main, "text_encoder")]


def _scale(n: ComfyNode, node_type: str, source: str, by: bool) -> list[Link | None]:
    method = n.value("upscale_method", "nearest-exact")
    inputs: dict[str, Any] = {source: n.link("samples" if source == "latent" else "image")}
    inputs["method"] = UPSCALE_METHODS.get(method, method) if isinstance(method, str) else method
    if method == "lanczos" and source == "image":  # ScaleImage's lanczos is ComfyUI's (PIL, 8-bit)
        inputs["method"] = "lanczos"
    elif isinstance(method, str) and method in ("bislerp", "lanczos"):
        n.warn("upscale_method", f"{method!r} runs as {UPSCALE_METHODS[method]!r}")
    if by:
        inputs["factor"] = n.value("scale_by", 1.5)
    else:
        inputs.update(width=n.value("width", 0), height=n.value("height", 0))
        inputs["crop"] = n.value("crop", "disabled")
    return [link(n.add(node_type, inputs), source)]


def unclip_conditioning(n: ComfyNode) -> list[Link | None]:
    strength, augmentation = n.value("strength", 1.0), n.value("noise_augmentation", 0.0)
    if strength != 1:
        n.warn("strength", "the image embedding is used at strength 1 here")
    level = round(999 * augmentation) if isinstance(augmentation, int | float) else augmentation
    main = n.add(
        "UnCLIPConditioning",
        {
            "conditioning": n.link("conditioning"),
            "image_embeds": n.link("clip_vision_output"),
            "noise_level": level,
        },
    )
    return [link(main, "conditioning")]


def clip_vision_loader(n: ComfyNode) -> list[Link | None]:
    return [link(n.add("LoadCLIPVision", {"path": n.value("clip_name")}), "clip_vision")]


def clip_vision_encode(n: ComfyNode) -> list[Link | None]:
    n.value("crop", "center")
    main = n.add(
        "CLIPVisionEncode", {"clip_vision": n.link("clip_vision"), "image": n.link("image")}
    )
    return [link(main, "image_embeds")]


# --- ControlNet ------------------------------------------------------------------------------


def controlnet_loader(n: ComfyNode) -> list[Link | None]:
    return [link(n.add("LoadControlNet", {"path": n.value("control_net_name")}), "control_net")]


def controlnet_apply(n: ComfyNode) -> list[Link | None]:
    """ComfyUI's ControlNetApply steers the one conditioning it is given (usually the positive
    prompt) over the whole schedule: ApplyControlNet with that conditioning on both sides, of
    which only the positive output is used."""
    conditioning = n.link("conditioning")
    main = n.add(
        "ApplyControlNet",
        {
            "positive": conditioning,
            "negative": conditioning,
            "control_net": n.link("control_net"),
            "image": n.link("image"),
            "strength": n.value("strength", 1.0),
        },
    )
    return [link(main, "positive")]


def controlnet_apply_advanced(n: ComfyNode) -> list[Link | None]:
    if n.inputs.get("vae") is not None:
        n.warn("vae", "not needed here: the control image is used as pixels")
    main = n.add(
        "ApplyControlNet",
        {
            "positive": n.link("positive"),
            "negative": n.link("negative"),
            "control_net": n.link("control_net"),
            "image": n.link("image"),
            "strength": n.value("strength", 1.0),
            "start": n.value("start_percent", 0.0),
            "end": n.value("end_percent", 1.0),
        },
    )
    return [link(main, "positive"), link(main, "negative")]


# --- masks and inpainting --------------------------------------------------------------------


def set_latent_noise_mask(n: ComfyNode) -> list[Link | None]:
    main = n.add("SetLatentNoiseMask", {"latent": n.link("samples"), "mask": n.link("mask")})
    return [link(main, "latent")]


def inpaint_model_conditioning(n: ComfyNode) -> list[Link | None]:
    main = n.add(
        "InpaintModelConditioning",
        {
            "positive": n.link("positive"),
            "negative": n.link("negative"),
            "vae": n.link("vae"),
            "image": n.link("pixels"),
            "mask": n.link("mask"),
            "noise_mask": n.value("noise_mask", True),  # ComfyUI's default
        },
    )
    return [link(main, "positive"), link(main, "negative"), link(main, "latent")]


def _mask_node(node_type: str, links: dict[str, str], values: dict[str, Any], output: str):
    """A translator for a ComfyUI node whose inputs keep their names (``links``: nodeflow name
    -> ComfyUI name; ``values``: widget -> ComfyUI's default)."""

    def translate(n: ComfyNode) -> list[Link | None]:
        inputs: dict[str, Any] = {ours: n.link(theirs) for ours, theirs in links.items()}
        inputs.update({name: n.value(name, default) for name, default in values.items()})
        return [link(n.add(node_type, inputs), output)]

    return translate


def image_to_mask(n: ComfyNode) -> list[Link | None]:
    channel = n.value("channel", "red")
    if channel == "alpha":
        n.issue("channel", "unsupported_value", "the alpha channel: use LoadImage's MASK output")
    main = n.add("ImageToMask", {"image": n.link("image"), "channel": channel})
    return [link(main, "mask")]


def image_composite_masked(n: ComfyNode) -> list[Link | None]:
    if n.value("resize_source", False) is True:
        n.issue("resize_source", "unsupported_value", "resizing the source is not expressible")
    inputs = {
        "destination": n.link("destination"),
        "source": n.link("source"),
        "x": n.value("x", 0),
        "y": n.value("y", 0),
        "mask": n.link("mask", required=False),
    }
    return [link(n.add("ImageCompositeMasked", inputs), "image")]


# --- SD3 and Flux files ----------------------------------------------------------------------

WEIGHT_DTYPES = {"default": "auto", "fp8_e4m3fn": "fp8_e4m3fn", "fp8_e4m3fn_fast": "fp8_e4m3fn"}


def unet_loader(n: ComfyNode) -> list[Link | None]:
    weight_dtype = n.value("weight_dtype", "default")
    if weight_dtype == "fp8_e4m3fn_fast":
        n.warn("weight_dtype", "runs as fp8_e4m3fn (weights stored in fp8, computed in full)")
    if isinstance(weight_dtype, str) and weight_dtype not in WEIGHT_DTYPES:
        n.issue("weight_dtype", "unsupported_value", f"{weight_dtype!r}: default or fp8_e4m3fn")
    dtype = WEIGHT_DTYPES.get(weight_dtype, weight_dtype) if isinstance(weight_dtype, str) else None
    main = n.add("LoadUNet", {"path": n.value("unet_name"), "dtype": dtype})
    return [link(main, "unet")]


DUAL_CLIP_TYPES = ("sdxl", "flux")
"""DualCLIPLoader's types LoadTextEncoder reads (it tells the pair's family from the files)."""


def dual_clip_loader(n: ComfyNode) -> list[Link | None]:
    kind = n.value("type", "sdxl")
    if kind not in DUAL_CLIP_TYPES:
        n.issue("type", "unsupported_value", f"type {kind!r}: flux (CLIP-L + T5) or sdxl only")
    if n.value("device", "default") != "default":
        n.warn("device", "the text encoders run where the run's device puts them")
    main = n.add(
        "LoadTextEncoder", {"path": n.value("clip_name1"), "path_2": n.value("clip_name2")}
    )
    return [link(main, "text_encoder")]


def triple_clip_loader(n: ComfyNode) -> list[Link | None]:
    """SD3's CLIP-L, CLIP-G and T5-XXL files, in ComfyUI's order (clip_name1..3)."""
    inputs = {"path": n.value("clip_name1"), "path_2": n.value("clip_name2")}
    main = n.add("LoadTextEncoder", inputs | {"path_3": n.value("clip_name3")})
    return [link(main, "text_encoder")]


def clip_text_encode_sd3(n: ComfyNode) -> list[Link | None]:
    """SD3's three encoders' texts: TextEncode when ComfyUI's three agree, else TextEncodeEach,
    each encoder reading its own text (ComfyUI tokenizes clip_l, clip_g and t5xxl separately,
    as diffusers' prompt, prompt_2 and prompt_3; the model's prompt format holds the recipe).

    ``empty_padding`` only matters for an empty text: ComfyUI's "none" gives that encoder no
    tokens at all (its part of the conditioning is zeros), while "empty_prompt" encodes "" as
    diffusers does, which is what TextEncode does; so "none" with an empty text is refused.
    ComfyUI also pads the shorter of clip_l's and clip_g's token chunks with empty chunks;
    that is only visible past 75 tokens, where these CLIPs truncate as diffusers does."""
    texts = {name: n.value(name, "") for name in ("clip_l", "clip_g", "t5xxl")}
    padding = n.value("empty_padding", "none")
    if padding not in ("none", "empty_prompt"):
        n.issue("empty_padding", "unsupported_value", f"{padding!r}: none or empty_prompt")
    empty = [name for name, text in texts.items() if text == ""]
    if padding == "none" and empty:
        n.issue(
            "empty_padding",
            "unsupported_value",
            f"'none' with an empty {', '.join(empty)} zeroes that encoder's part in ComfyUI, "
            "which is not expressible here; choose empty_prompt to encode the empty text",
        )
    if len(set(map(repr, texts.values()))) == 1:
        encode = n.add("TextEncode", {"text_encoder": n.link("clip"), "text": texts["t5xxl"]})
    else:
        encode = n.add("TextEncodeEach", {"text_encoder": n.link("clip"), "texts": texts})
    return [link(encode, "conditioning")]


def model_sampling_sd3(n: ComfyNode) -> list[Link | None]:
    main = n.add("FlowShift", {"unet": n.link("model"), "shift": n.value("shift", 3.0)})
    return [link(main, "unet")]


def model_sampling_flux(n: ComfyNode) -> list[Link | None]:
    """ModelSamplingFlux's mu from the picture size, worked out here (its inputs are values)."""
    defaults = (("max_shift", 1.15), ("base_shift", 0.5), ("width", 1024), ("height", 1024))
    values = [n.value(name, default) for name, default in defaults]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        n.issue(None, "unsupported_value", "max_shift, base_shift, width, height must be numbers")
        return [None]
    max_shift, base_shift, width, height = values
    shift = flux_resolution_shift(width, height, max_shift, base_shift)
    main = n.add("FlowShift", {"unet": n.link("model"), "shift": shift})
    return [link(main, "unet")]


def model_sampling_discrete(n: ComfyNode) -> list[Link | None]:
    """The prediction type and zero terminal SNR set on the model; ComfyUI's lcm, x0 and
    img_to_img samplings have no equivalent and are refused by name."""
    sampling = n.value("sampling", "eps")
    if sampling in COMFY_ONLY_SAMPLING:
        n.issue(
            "sampling",
            "unsupported_value",
            f"sampling {sampling!r} is not supported here (eps and v_prediction are)",
        )
    inputs = {"unet": n.link("model"), "sampling": sampling, "zsnr": n.value("zsnr", False)}
    return [link(n.add("ModelSamplingDiscrete", inputs), "unet")]


def clip_text_encode_flux(n: ComfyNode) -> list[Link | None]:
    """One prompt for both of Flux's encoders, then FluxGuidance: expressible when ComfyUI's two
    texts are the same (the usual case); different texts are refused, not merged."""
    clip_l, t5xxl = n.value("clip_l", ""), n.value("t5xxl", "")
    if clip_l != t5xxl and clip_l != "" and t5xxl != "":
        n.issue(
            "clip_l",
            "unsupported_value",
            "different CLIP-L and T5 texts are not expressible yet; give both the same text",
        )
    text = t5xxl or clip_l
    encode = n.add("TextEncode", {"text_encoder": n.link("clip"), "text": text}, role="text")
    main = n.add(
        "FluxGuidance",
        {"conditioning": link(encode, "conditioning"), "guidance": n.value("guidance", 3.5)},
    )
    return [link(main, "conditioning")]


def flux_guidance(n: ComfyNode) -> list[Link | None]:
    main = n.add(
        "FluxGuidance",
        {"conditioning": n.link("conditioning"), "guidance": n.value("guidance", 3.5)},
    )
    return [link(main, "conditioning")]


TRANSLATORS: dict[str, Translator] = {
    "CheckpointLoaderSimple": checkpoint_loader,
    "unCLIPCheckpointLoader": unclip_checkpoint_loader,
    "CLIPTextEncode": clip_text_encode,
    "CLIPTextEncodeSDXL": clip_text_encode_sdxl,
    "KSampler": ksampler,
    "KSamplerAdvanced": ksampler_advanced,
    "EmptyLatentImage": empty_latent,
    "VAEDecode": vae_decode,
    "VAEEncode": vae_encode,
    "VAELoader": vae_loader,
    "SaveImage": save_image,
    "PreviewImage": preview_image,
    "LoadImage": load_image,
    "LoraLoader": lora_loader,
    "LoraLoaderModelOnly": lora_loader_model_only,
    "CLIPSetLastLayer": clip_set_last_layer,
    "LatentUpscale": lambda n: _scale(n, "ScaleLatent", "latent", by=False),
    "LatentUpscaleBy": lambda n: _scale(n, "ScaleLatent", "latent", by=True),
    "ImageScale": lambda n: _scale(n, "ScaleImage", "image", by=False),
    "ImageScaleBy": lambda n: _scale(n, "ScaleImage", "image", by=True),
    "unCLIPConditioning": unclip_conditioning,
    "CLIPVisionLoader": clip_vision_loader,
    "CLIPVisionEncode": clip_vision_encode,
    "ControlNetLoader": controlnet_loader,
    "ControlNetApply": controlnet_apply,
    "ControlNetApplyAdvanced": controlnet_apply_advanced,
    "SetLatentNoiseMask": set_latent_noise_mask,
    "InpaintModelConditioning": inpaint_model_conditioning,
    "InvertMask": _mask_node("InvertMask", {"mask": "mask"}, {}, "mask"),
    "GrowMask": _mask_node(
        "GrowMask", {"mask": "mask"}, {"expand": 0, "tapered_corners": True}, "mask"
    ),
    "FeatherMask": _mask_node(
        "FeatherMask", {"mask": "mask"}, {"left": 0, "top": 0, "right": 0, "bottom": 0}, "mask"
    ),
    "ThresholdMask": _mask_node("ThresholdMask", {"mask": "mask"}, {"value": 0.5}, "mask"),
    "SolidMask": _mask_node("SolidMask", {}, {"value": 1.0, "width": 512, "height": 512}, "mask"),
    "MaskComposite": _mask_node(
        "MaskComposite",
        {"destination": "destination", "source": "source"},
        {"x": 0, "y": 0, "operation": "multiply"},
        "mask",
    ),
    "ImageToMask": image_to_mask,
    "MaskToImage": _mask_node("MaskToImage", {"mask": "mask"}, {}, "image"),
    "ImageCompositeMasked": image_composite_masked,
    "UNETLoader": unet_loader,
    "DualCLIPLoader": dual_clip_loader,
    "TripleCLIPLoader": triple_clip_loader,
    "CLIPTextEncodeSD3": clip_text_encode_sd3,
    "FluxGuidance": flux_guidance,
    "ModelSamplingSD3": model_sampling_sd3,
    "CLIPTextEncodeFlux": clip_text_encode_flux,
    "ModelSamplingFlux": model_sampling_flux,
    "ModelSamplingDiscrete": model_sampling_discrete,
    "EmptySD3LatentImage": lambda n: _sized_latent(n, 1024),
}

NOT_YET: dict[str, str] = {
    "ConditioningCombine": "combining conditionings is not expressible yet",
    "ConditioningConcat": "concatenating conditionings is not expressible yet",
    "ConditioningSetArea": "area conditioning is not expressible yet",
    "CLIPTextEncodeSDXLRefiner": "the SDXL refiner is not supported yet",
    "CheckpointLoader": "config-file checkpoints: use CheckpointLoaderSimple",
    "VAEEncodeForInpaint": "inpainting is not supported yet",
    "UpscaleModelLoader": "upscale models (ESRGAN and the like) are not supported yet",
    "ImageUpscaleWithModel": "upscale models (ESRGAN and the like) are not supported yet",
    "LatentComposite": "compositing latents is not expressible yet",
    "ConditioningZeroOut": "zeroed conditioning is not expressible yet",
    "ConditioningSetTimestepRange": "timestep ranges are not expressible yet",
    "CLIPLoader": "a text encoder on its own: not mapped yet (nodeflow's LoadTextEncoder)",
    "SamplerCustom": "custom sampling is not mapped yet",
    "SamplerCustomAdvanced": "custom sampling is not mapped yet",
}
"""Known ComfyUI class types without an equivalent yet, with why (said in the import error)."""
