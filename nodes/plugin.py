"""The built-in diffusion pack, registered through the ``nodeflow`` entry point like any plugin."""

from __future__ import annotations

import argparse
import sys

from nodeflow import FileKind, hookimpl
from nodes import (
    attention_maps,
    attention_record,
    clip_skip,
    clip_vision,
    denoise,
    embeds,
    guidance,
    image,
    latent,
    loaders,
    lora,
    p2p,
    primitives,
    prior,
    scale,
    schedulers,
    text,
    unclip,
    vae,
)
from nodes.files import FILE_KINDS
from nodes.ksampling import recipe as ksampling
from nodes.types import SOCKET_TYPES

NODEFLOW_API = 1
"""The plugin API version this pack targets, declared like any third-party plugin's."""

UNCLIP_FAMILIES = ("kandinsky-prior", "kandinsky-decoder", "stable-unclip")


@hookimpl
def nodeflow_types() -> list[type]:
    return SOCKET_TYPES


@hookimpl
def nodeflow_nodes() -> list[object]:
    return [
        loaders.load_checkpoint,
        loaders.load_unet,
        loaders.load_vae,
        loaders.load_text_encoder,
        lora.load_lora,
        text.text_encode,
        clip_skip.set_last_layer,
        text.size_conditioning,
        latent.empty_latent,
        schedulers.scheduler,
        ksampling.comfy_scheduler,
        guidance.cfg,
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
        prior.load_prior,
        prior.prior_sample,
        clip_vision.load_clip_vision,
        clip_vision.clip_vision_encode,
        embeds.blend_embeds,
        unclip.unclip_conditioning,
        scale.scale_latent,
        scale.scale_image,
        primitives.int_value,
        primitives.float_value,
        primitives.string_value,
        primitives.boolean_value,
        primitives.seed_value,
        primitives.combo_value,
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
        choices=("sd1", "sd2", "sdxl", *UNCLIP_FAMILIES),
        default="sd1",
        help="kandinsky-prior, kandinsky-decoder and stable-unclip are diffusers folders only",
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

    if args.family in UNCLIP_FAMILIES:
        from nodes import tiny_unclip

        if args.single_file or args.loras:
            print(f"--single-file and --loras are not available for {args.family}", file=sys.stderr)
            return 2
        name = args.family.replace("-", "_")
        print(getattr(tiny_unclip, f"make_tiny_{name}")(args.path, seed=args.seed))
        return 0
    maker = {"sd1": make_tiny_sd, "sd2": make_tiny_sd2, "sdxl": make_tiny_sdxl}[args.family]
    with tempfile.TemporaryDirectory() as scratch:
        folder = maker(Path(scratch) / "model" if args.single_file else args.path, seed=args.seed)
        print(write_single_file(folder, args.path, seed=args.seed) if args.single_file else folder)
        if args.loras:
            for path in write_tiny_loras(folder, args.loras, seed=args.seed).values():
                print(path)
    return 0
