"""Extra input channels: latents a model takes beside the noisy ones, on the channel axis.

An inpainting U-Net (SD 1.5/2/XL inpainting, ``in_channels`` 9) is called on
``[noisy latents, mask, masked picture's latents]`` at every step, as diffusers'
``StableDiffusionInpaintPipeline`` does. The conditioning carries those channels (a
``ConcatLatents``, made by ``InpaintModelConditioning``); the family adapter puts them into the
model's inputs under ``CONCAT`` and ``Family.predict`` appends them to the model input, so
Denoise and CFG never learn about inpainting.

The masked picture's latents are a sample of the VAE posterior, drawn from Denoise's generator
right after the initial noise: that is where diffusers draws it (``prepare_mask_latents`` after
``prepare_latents``), so a seed gives diffusers' pixels while the conditioning node stays
deterministic and cached (``drawn``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nodes.families.batching import repeat_to

if TYPE_CHECKING:
    from nodes.types import Conditioning, Guider, UNet

CONCAT = "concat"
"""The key of the concatenated channels in a family's model inputs."""


@dataclass(frozen=True, eq=False)
class ConcatLatents:
    """The mask at latent size [batch, 1, h, w] and the masked picture's VAE posterior.

    ``latents`` (already scaled) is set for one run by ``drawn``; the value the conditioning
    node makes holds the posterior only.
    """

    mask: Any
    posterior: tuple[Any, Any]
    """(mean, std) of the VAE posterior of the masked picture, before scaling."""
    scaling_factor: float = 1.0
    latents: Any = None

    @property
    def channels(self) -> int:
        return int(self.mask.shape[1]) + int(self.posterior[0].shape[1])

    def sample(self, generator: Any) -> ConcatLatents:
        """This with ``latents`` drawn from the posterior (diffusers' ``retrieve_latents``)."""
        from diffusers.utils.torch_utils import randn_tensor

        mean, std = self.posterior
        noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return dataclasses.replace(self, latents=self.scaling_factor * (mean + std * noise))


def drawn(guider: Guider, generator: Any) -> Guider:
    """The guider with the concatenated latents of its conditionings drawn from ``generator``.

    A ``ConcatLatents`` shared by the positive and the negative conditioning (as one
    InpaintModelConditioning makes them) is drawn once, positive first, as diffusers draws one
    masked-image sample for both halves of the CFG batch.
    """
    done: dict[int, ConcatLatents] = {}

    def draw(conditioning: Conditioning) -> Conditioning:
        concat = conditioning.concat
        if concat is None:
            return conditioning
        if id(concat) not in done:
            done[id(concat)] = concat.sample(generator)
        return dataclasses.replace(conditioning, concat=done[id(concat)])

    if guider.positive.concat is None and guider.negative.concat is None:
        return guider
    positive = draw(guider.positive)
    return dataclasses.replace(guider, positive=positive, negative=draw(guider.negative))


def extra_channels(unet: UNet) -> int:
    """How many input channels the model takes beyond its latents (5 for inpainting U-Nets)."""
    return int(unet.model.config.in_channels) - unet.latent_channels


def concat_input(unet: UNet, conditionings: list[Conditioning], latents: Any) -> Any:
    """The channels to append for a batch like ``latents``, one block per conditioning in the
    batch's order; ``None`` when the model takes none (a conditioning made for an inpainting
    model then works on an ordinary one too, as in ComfyUI: the channels are left out)."""
    import torch

    if extra_channels(unet) == 0:
        return None
    batch = latents.shape[0]
    blocks = []
    for conditioning in conditionings:
        concat = conditioning.concat
        if concat is None or concat.latents is None:
            raise ValueError("this U-Net takes extra input channels the conditioning lacks")
        block = torch.cat([concat.mask.to(concat.latents.dtype), concat.latents], dim=1)
        blocks.append(repeat_to(block.to(device=latents.device, dtype=latents.dtype), batch))
    return torch.cat(blocks)


def with_concat(model_input: Any, inputs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``model_input`` with the concatenated channels appended, and the other inputs."""
    extra = inputs.get(CONCAT)
    rest = {k: v for k, v in inputs.items() if k != CONCAT}
    if extra is None:
        return model_input, rest
    import torch

    return torch.cat([model_input, extra], dim=1), rest


def check_concat(unet: UNet, conditioning: Conditioning, name: str) -> None:
    """Refuse a model that takes extra channels with a conditioning that has none or others."""
    extra = extra_channels(unet)
    if extra == 0:
        return
    channels = int(unet.model.config.in_channels)
    if conditioning.concat is None:
        raise ValueError(
            f"{name}: this U-Net takes {channels} input channels, {unet.latent_channels} latent "
            f"and {extra} more (an inpainting model: the mask and the masked picture); make its "
            "conditioning with InpaintModelConditioning"
        )
    if conditioning.concat.channels != extra:
        raise ValueError(
            f"{name}: the conditioning brings {conditioning.concat.channels} extra channels but "
            f"this U-Net takes {extra}; encode the picture with this model's VAE"
        )
