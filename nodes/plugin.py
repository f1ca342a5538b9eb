"""The built-in diffusion pack, registered through the ``nodeflow`` entry point like any plugin."""

from __future__ import annotations

import argparse

from nodeflow import hookimpl
from nodes import denoise, guidance, image, latent, loaders, schedulers, text, vae
from nodes.types import SOCKET_TYPES


@hookimpl
def nodeflow_types() -> list[type]:
    return SOCKET_TYPES


@hookimpl
def nodeflow_nodes() -> list[object]:
    return [
        loaders.load_checkpoint,
        text.text_encode,
        latent.empty_latent,
        schedulers.scheduler,
        guidance.cfg,
        denoise.denoise,
        vae.vae_decode,
        vae.vae_encode,
        image.load_image,
        image.save_image,
        image.preview_image,
    ]


@hookimpl
def nodeflow_cli(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="model files: make the tiny test model")
    actions = models.add_subparsers(metavar="ACTION")
    make = actions.add_parser("make-tiny", help="write a tiny random SD model (a diffusers folder)")
    make.add_argument("dir", help="the folder to create")
    make.add_argument("--seed", type=int, default=0)
    make.set_defaults(func=_make_tiny)


def _make_tiny(args: argparse.Namespace) -> int:
    from nodes.tiny import make_tiny_sd

    print(make_tiny_sd(args.dir, seed=args.seed))
    return 0
