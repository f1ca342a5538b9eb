"""The ``Dataset`` socket: pictures with captions, ready for a training node.

A dataset is a value, not a stream: ``len`` examples, each a square RGB picture of ``size``
pixels and its caption, addressable by index. A trainer asks for the examples of a step by index
(``examples``), so the order of a whole run is a function of its seed and the step alone: a run
resumed at step k draws exactly the batches a straight run draws from step k on.

``identity`` names the content (a folder's file fingerprints, or a generator's settings); a
trainer records it with its saved state, so a state is only resumed on the data it was made on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nodeflow import socket_type

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage


@socket_type(color="#26a69a")
@dataclass(frozen=True, eq=False)
class Dataset:
    """Pictures (``size`` x ``size`` RGB) with their captions, in a fixed order."""

    pictures: tuple[PILImage.Image, ...] = field(repr=False)
    captions: tuple[str, ...]
    size: int
    identity: str
    """What the content is (folder fingerprints or generator settings), for saved states."""

    def __post_init__(self) -> None:
        if len(self.pictures) != len(self.captions):
            raise ValueError("a dataset needs one caption per picture")
        if not self.pictures:
            raise ValueError("a dataset needs at least one picture")

    def __len__(self) -> int:
        return len(self.captions)

    def __nodeflow_nbytes__(self) -> int:
        return len(self.pictures) * self.size * self.size * 3

    def examples(self, indices: Sequence[int]) -> tuple[torch.Tensor, list[str]]:
        """``(pixels [B, 3, size, size] in -1..1, captions)`` of the examples at ``indices``."""
        import numpy as np
        import torch

        arrays = [np.asarray(self.pictures[i], dtype=np.float32) for i in indices]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1
        return pixels.contiguous(), [self.captions[i] for i in indices]


def square(picture: PILImage.Image, size: int) -> PILImage.Image:
    """``picture`` as RGB, centre-cropped to a square and resized to ``size`` (as diffusers'
    training scripts prepare images: resize the short side, centre crop)."""
    from PIL import Image as PILImage

    picture = picture.convert("RGB")
    width, height = picture.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    picture = picture.crop((left, top, left + side, top + side))
    if side != size:
        picture = picture.resize((size, size), PILImage.Resampling.BICUBIC)
    return picture
