"""DALL-E 2's text diffs: edit a picture's CLIP image embedding toward a change of description.

Ramesh et al. 2022, section 3.3 (Figure 5): given the image embedding ``z_i``, the text embedding
``z_t0`` of a caption describing the picture and ``z_t`` of the caption wanted, the text diff is
``z_d = normalize(z_t - z_t0)``; the edited embedding rotates ``z_i`` toward ``z_d`` by
spherical interpolation, ``z_theta = slerp(z_i, z_d, theta)``, theta rising from 0 (the picture
itself) to a maximum typically in [0.25, 0.5]. With ``Omega`` the angle between ``z_i`` and
``z_d``::

    slerp(x, y, theta) = sin((1 - theta) Omega) / sin(Omega) * x + sin(theta Omega) / sin(Omega) * y

The paper works with unit CLIP embeddings. Here the rotation is done on the unit sphere
(``z_i / |z_i|`` toward ``z_d``) and the result is given ``z_i``'s own length, so a decoder that
was trained on unnormalised image embeddings still receives embeddings of the size it knows; for
a unit ``z_i`` this is exactly the paper's formula.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from nodeflow import Context, node
from nodes.embeds import slerp
from nodes.types import ImageEmbeds

IDENTICAL = 1e-6
"""Below this norm of ``z_t - z_t0`` (relative to the text embeddings' size) the two captions
embed alike and there is no direction to move in."""


def text_diff_embeds(image: object, source: object, target: object, theta: float) -> object:
    """``|z_i| * slerp(z_i / |z_i|, normalize(z_t - z_t0), theta)``, row by row (a batch of one
    text pair edits every picture). Raises ValueError when the captions embed alike."""
    import torch

    diff = target - source  # type: ignore[operator]
    size = torch.maximum(target.norm(dim=-1), source.norm(dim=-1))  # type: ignore[attr-defined]
    if bool((diff.norm(dim=-1) <= IDENTICAL * size).any()):
        raise ValueError("the source and target captions embed alike: no direction to move in")
    direction = torch.nn.functional.normalize(diff, dim=-1)
    norm = image.norm(dim=-1, keepdim=True)  # type: ignore[attr-defined]
    unit = image / norm  # type: ignore[operator]
    return slerp(unit, direction.to(unit), theta) * norm


@node("TextDiff", category="conditioning")
def text_diff(
    ctx: Context,
    image_embeds: ImageEmbeds,
    text_source: ImageEmbeds,
    text_target: ImageEmbeds,
    theta: Annotated[float, Field(ge=0, le=1)] = 0.3,
) -> ImageEmbeds:
    """Move an image embedding toward the change from ``text_source`` (a caption of the picture)
    to ``text_target`` (the caption wanted) by angle fraction ``theta``, as DALL-E 2's text
    diffs: slerp toward normalize(target - source). Typical theta: 0.25-0.5."""
    width = image_embeds.embeds.shape[-1]
    batch = image_embeds.batch_size
    for name, value in (("text_source", text_source), ("text_target", text_target)):
        if value.embeds.shape[-1] != width:
            raise ValueError(
                f"TextDiff {ctx.node_id!r}: input {name!r} is {value.embeds.shape[-1]} wide but"
                f" image_embeds is {width}; make all three with the same CLIP"
            )
        if value.batch_size not in (1, batch):
            raise ValueError(
                f"TextDiff {ctx.node_id!r}: input {name!r} has a batch of {value.batch_size},"
                f" image_embeds {batch}; give one caption, or one per picture"
            )
    try:
        edited = text_diff_embeds(
            image_embeds.embeds, text_source.embeds, text_target.embeds, theta
        )
    except ValueError as error:
        raise ValueError(
            f"TextDiff {ctx.node_id!r}: inputs 'text_source' and 'text_target': {error}"
        ) from None
    return ImageEmbeds(edited.to(image_embeds.embeds.dtype))
