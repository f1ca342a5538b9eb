"""ControlNet nodes: load a ControlNet, and steer a prompt with it and a control image.

The control rides on the conditioning (``nodes.control``); the denoiser's family adapter adds its
residuals while sampling, so CFG, Denoise and img2img work unchanged and several ControlNets chain
by applying them one after another. T2I-Adapters load and apply through the same two nodes
(``nodes.t2i_adapter``), as in ComfyUI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from pydantic import Field

from nodeflow import Context, Environment, Widget, node
from nodeflow.runtime.models import file_identity
from nodes.control import ControlApplication, ControlNet
from nodes.controlnet_loader import load_controlnet_at
from nodes.loaders import Dtype, resolve_model
from nodes.paths import nodeflow_home
from nodes.types import Conditioning, Image

CONTROLNET_DIRS = ("controlnet", "diffusers")
DEMO_CONTROLNET = "demo-controlnet"
BUILT_IN_CONTROLNETS = {
    DEMO_CONTROLNET: "the demo model's encoder as an untrained ControlNet (made on first use; "
    "its zero convolutions leave the picture as it is until trained)",
}


def demo_controlnet() -> Path:
    """The built-in ControlNet folder, made once in nodeflow's home on first use."""
    from nodes.tiny_controlnet import make_demo_controlnet

    return make_demo_controlnet(nodeflow_home() / "models" / "demo-controlnet-1")


def resolve_controlnet(name: str, env: Environment) -> Path:
    """A ControlNet under controlnet/ (or diffusers/), an absolute path, or the built-in one."""
    try:
        return resolve_model(name, env, *CONTROLNET_DIRS, what="ControlNet")
    except FileNotFoundError:
        if name == DEMO_CONTROLNET:
            return demo_controlnet()
        raise


def _fingerprint(values: Mapping[str, Any], env: Environment) -> Any:
    name = values.get("path") or ""
    return file_identity(resolve_controlnet(name, env)) if name else None


@node(
    "LoadControlNet",
    category="loaders",
    fingerprint=_fingerprint,
    aliases=("ControlNetLoader", "DiffControlNetLoader"),
)
def load_controlnet(
    ctx: Context,
    path: Annotated[str, Widget(files="controlnet")] = DEMO_CONTROLNET,
    dtype: Dtype = "auto",
) -> ControlNet:
    """Load a ControlNet or a T2I-Adapter (SD 1.x, 2.x or XL): a diffusers folder, or one file
    in the original or the diffusers layout."""
    location = resolve_controlnet(path, ctx.env)
    torch_dtype = ctx.runtime.dtype(dtype)
    key = ("controlnet", file_identity(location), str(torch_dtype))
    allow_pickle = ctx.env.allow_pickle

    def load() -> ControlNet:
        net = load_controlnet_at(location, torch_dtype, allow_pickle)
        ctx.models.register(net.model, label=f"ControlNet {location.name}")
        return net

    return ctx.models.get(key, load)


class ControlOutputs(NamedTuple):
    positive: Conditioning
    negative: Conditioning


Fraction = Annotated[float, Field(ge=0, le=1)]


@node("ApplyControlNet", category="conditioning", aliases=("ControlNetApplyAdvanced",))
def apply_controlnet(
    positive: Conditioning,
    negative: Conditioning,
    control_net: ControlNet,
    image: Image,
    strength: Annotated[float, Field(ge=0, le=10)] = 1.0,
    start: Fraction = 0.0,
    end: Fraction = 1.0,
) -> ControlOutputs:
    """Steer both prompts with a ControlNet or T2I-Adapter and its control image (edges, depth,
    pose...) over the share of the schedule from ``start`` to ``end``; chain nodes for several.

    The image should be the picture's size; another size is resized (bilinear) to it.
    """
    if start >= end:
        raise ValueError(f"start ({start}) must be below end ({end}): the control would never act")
    pixels = image.pixels.permute(0, 3, 1, 2).contiguous()
    control = ControlApplication(control_net, pixels, strength, start, end)
    return ControlOutputs(
        positive=dataclasses.replace(positive, controls=(*positive.controls, control)),
        negative=dataclasses.replace(negative, controls=(*negative.controls, control)),
    )
