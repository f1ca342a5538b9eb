"""The built-in diffusion pack, registered through the ``nodeflow`` entry point like any plugin."""

from __future__ import annotations

import argparse
import sys

from nodeflow import FileKind, hookimpl
from nodes import (
    attention_maps,
    attention_record,
    canny,
    caption_rank,
    classifier_guidance,
    clip_guidance,
    clip_nodes,
    clip_skip,
    clip_vision,
    controlnet,
    denoise,
    embeds,
    flux_guidance,
    guidance,
    image,
    inpaint,
    latent,
    loaders,
    lora,
    mask_crop,
    masks,
    noise_mask,
    p2p,
    pixel_loader,
    pixel_space,
    primitives,
    prior,
    scale,
    schedulers,
    text,
    text_diff,
    unclip,
    upscale,
    vae,
)
from nodes.clip_model import CLIP
from nodes.control import ControlNet
from nodes.files import FILE_KINDS
from nodes.ksampling import model_sampling
from nodes.ksampling import recipe as ksampling
from nodes.training import nodes as training
from nodes.types import SOCKET_TYPES

NODEFLOW_API = 1
"""The plugin API version this pack targets, declared like any third-party plugin's."""

FOLDER_FAMILIES = {
    "kandinsky-prior": ("nodes.tiny_unclip", "make_tiny_kandinsky_prior"),
    "kandinsky-decoder": ("nodes.tiny_unclip", "make_tiny_kandinsky_decoder"),
    "stable-unclip": ("nodes.tiny_unclip", "make_tiny_stable_unclip"),
    "sd-x4-upscaler": ("nodes.tiny_upscale", "make_tiny_x4_upscaler"),
    "lcm": ("nodes.tiny_lcm", "make_tiny_lcm"),
    "ddpm": ("nodes.tiny_pixel", "make_tiny_ddpm"),
    "ddim": ("nodes.tiny_pixel", "make_tiny_ddim"),
    "consistency": ("nodes.tiny_pixel", "make_tiny_consistency"),
}
"""Tiny models ``make-tiny`` writes as diffusers folders only (no single-file layout): unCLIP,
the x4 upscaler, an LCM, and pixel-space ones (for LoadPixelModel); each the module and function
that makes it."""
FLOW_FAMILIES = ("sd3", "sd3-no-t5", "sd35", "flux")


@hookimpl
def nodeflow_types() -> list[type]:
    return [*SOCKET_TYPES, ControlNet, CLIP, classifier_guidance.Classifier, *training.TYPES]


@hookimpl
def nodeflow_nodes() -> list[object]:
    return [
        loaders.load_checkpoint,
        loaders.load_unet,
        loaders.load_vae,
        loaders.load_text_encoder,
        pixel_loader.load_pixel_model,
        lora.load_lora,
        text.text_encode,
        text.text_encode_each,
        clip_skip.set_last_layer,
        text.size_conditioning,
        flux_guidance.flux_guidance,
        latent.empty_latent,
        schedulers.scheduler,
        ksampling.comfy_scheduler,
        model_sampling.flow_shift,
        model_sampling.model_sampling_discrete,
        guidance.cfg,
        classifier_guidance.load_classifier_node,
        classifier_guidance.classifier_guidance,
        clip_guidance.clip_guidance,
        denoise.denoise,
        attention_record.record_attention,
        attention_maps.attention_maps,
        attention_maps.attention_mask,
        p2p.prompt_to_prompt,
        vae.vae_decode,
        vae.vae_encode,
        image.load_image,
        image.save_image,
        image.preview_image,
        masks.image_to_mask,
        masks.mask_to_image,
        masks.color_to_mask,
        masks.threshold_mask,
        masks.invert_mask,
        masks.solid_mask,
        masks.grow_mask,
        masks.blur_mask,
        masks.feather_mask,
        masks.mask_composite,
        masks.scale_mask,
        masks.mask_preview,
        mask_crop.crop_to_mask,
        mask_crop.image_composite_masked,
        noise_mask.set_latent_noise_mask,
        inpaint.inpaint_model_conditioning,
        prior.load_prior,
        prior.prior_sample,
        clip_vision.load_clip_vision,
        clip_vision.clip_vision_encode,
        embeds.blend_embeds,
        text_diff.text_diff,
        clip_nodes.load_clip,
        clip_nodes.clip_text_features,
        caption_rank.rank_captions,
        unclip.unclip_conditioning,
        controlnet.load_controlnet,
        controlnet.apply_controlnet,
        canny.canny,
        upscale.upscale_conditioning,
        scale.scale_latent,
        scale.scale_image,
        pixel_space.class_label,
        pixel_space.unconditional,
        pixel_space.latent_to_image,
        pixel_space.image_to_latent,
        primitives.int_value,
        primitives.float_value,
        primitives.string_value,
        primitives.boolean_value,
        primitives.seed_value,
        primitives.combo_value,
        *training.NODES,
    ]


@hookimpl
def nodeflow_loaders() -> dict[str, FileKind]:
    # where the files the pack's widgets pick are found, so validation can check them; and
    # ComfyUI's workflows, translated into this pack's nodes
    from nodes.comfy.importer import import_comfy
    from nodes.comfy.object_info import core_object_info

    return {
        **FILE_KINDS,
        "workflow_importer.comfyui": import_comfy,
        "comfyui.object_info": core_object_info,
    }


@hookimpl
def nodeflow_cli(subparsers: argparse._SubParsersAction) -> None:
    from nodes.comfy.cli import add_import_command

    add_import_command(subparsers)
    models = subparsers.add_parser(
        "models", help="model files: list what the models dir holds, make tiny test models"
    )
    models.set_defaults(func=_list_models, models_dir="models", json=False)
    actions = models.add_subparsers(metavar="ACTION")
    listing = actions.add_parser(
        "list", help="list models by kind, with detected architecture, and the built-in names"
    )
    listing.add_argument("--models-dir", default="models", help="the models dir (default: models)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_list_models)
    make = actions.add_parser("make-tiny", help="write a tiny random model (for tests and demos)")
    make.add_argument("path", help="the folder (or, with --single-file, the file) to create")
    make.add_argument(
        "--family",
        choices=("sd1", "sd2", "sdxl", *FOLDER_FAMILIES, *FLOW_FAMILIES),
        default="sd1",
        help="all but sd1, sd2 and sdxl are diffusers folders only",
    )
    make.add_argument(
        "--single-file", action="store_true", help="write an original-layout .safetensors file"
    )
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--loras", metavar="DIR", help="also write tiny LoRAs for it into DIR")
    make.set_defaults(func=_make_tiny)


def _list_models(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nodes.inventory import as_json, built_in_models, format_table, list_models

    entries = list_models(Path(args.models_dir)) + built_in_models(Path(args.models_dir))
    print(as_json(entries) if args.json else format_table(entries, Path(args.models_dir)))
    return 0


def _make_tiny(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from nodes.loaders import quiet_hub_libraries
    from nodes.tiny import make_tiny_sd, make_tiny_sd2, make_tiny_sdxl, write_single_file

    quiet_hub_libraries()

    from nodes.tiny_lora import write_tiny_loras

    if args.family in FLOW_FAMILIES:
        return _make_tiny_flow(args)
    if args.family in FOLDER_FAMILIES:
        import importlib

        if args.single_file or args.loras:
            print(f"--single-file and --loras are not available for {args.family}", file=sys.stderr)
            return 2
        module, maker = FOLDER_FAMILIES[args.family]
        print(getattr(importlib.import_module(module), maker)(args.path, seed=args.seed))
        return 0
    maker = {"sd1": make_tiny_sd, "sd2": make_tiny_sd2, "sdxl": make_tiny_sdxl}[args.family]
    with tempfile.TemporaryDirectory() as scratch:
        folder = maker(Path(scratch) / "model" if args.single_file else args.path, seed=args.seed)
        print(write_single_file(folder, args.path, seed=args.seed) if args.single_file else folder)
        if args.loras:
            for path in write_tiny_loras(folder, args.loras, seed=args.seed).values():
                print(path)
    return 0


def _make_tiny_flow(args: argparse.Namespace) -> int:
    from nodes.tiny_flow import make_tiny_flux, make_tiny_sd3

    if args.single_file or args.loras:
        print(f"--single-file and --loras are not available for {args.family}", file=sys.stderr)
        return 2
    if args.family == "flux":
        print(make_tiny_flux(args.path, seed=args.seed))
    else:
        options = {"sd3-no-t5": {"t5": False}, "sd35": {"sd35": True}}.get(args.family, {})
        print(make_tiny_sd3(args.path, seed=args.seed, **options))
    return 0
