"""FluxGuidance: the distilled guidance value a guidance-embedded model is told, on its prompt."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from pydantic import Field

from nodeflow import node
from nodes.types import Conditioning


@node("FluxGuidance", category="conditioning")
def flux_guidance(
    conditioning: Conditioning,
    guidance: Annotated[float, Field(ge=0, le=100)] = 3.5,
) -> Conditioning:
    """Set the guidance value a guidance-distilled model (Flux dev) takes as an input.

    Such a model was trained to imitate classifier-free guidance at the scale it is given, so it
    needs one pass per step instead of a CFG pair; higher values follow the prompt more closely.
    As in ComfyUI the value rides on the conditioning (the positive prompt's is used); models
    without a guidance input ignore it. Without this node Flux gets 3.5.
    """
    return dataclasses.replace(conditioning, guidance=guidance)
