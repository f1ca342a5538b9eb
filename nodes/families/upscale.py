"""The Stable Diffusion x4 upscaler behind the ``UNet`` socket.

Its U-Net is an SD U-Net whose input is the latents plus the low-resolution picture (3 more
channels, at the latent size: its VAE decodes 4x larger), noised to a chosen level by the model's
own DDPM schedule and told that level as its class label. The picture and level ride on the
conditioning (``UpscaleConditioning``); this adapter noises the picture with Denoise's generator
before the initial latents are drawn (where ``StableDiffusionUpscalePipeline`` draws that noise,
so a seed gives its pixels), concatenates it to every model input and passes the level.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from nodes.families.batching import cat
from nodes.families.unet import StableDiffusionUNet

if TYPE_CHECKING:
    from nodes.types import Conditioning, Guider, UNet

IMAGE_CHANNELS = 3
"""The key of the noised low-resolution picture in the model inputs; ``predict`` pops it."""


class UpscalerUNet(StableDiffusionUNet):
    """An x4 upscaler's U-Net; ``noise_scheduler`` noises the low-resolution picture and
    ``max_noise_level`` is the highest level the model was trained with (from its folder)."""

    name = "sd-x4-upscaler"
    takes_control = False

    def __init__(self, noise_scheduler: Any, max_noise_level: int) -> None:
        self.noise_scheduler = noise_scheduler
        self.max_noise_level = max_noise_level

    def latent_channels(self, unet: UNet) -> int:
        return int(unet.model.config.in_channels) - IMAGE_CHANNELS

    def check_conditioning(self, unet: UNet, conditioning: Conditioning, name: str) -> None:
        if conditioning.low_res is None:
            raise ValueError(
                f"{name}: this U-Net is an x4 upscaler; make its conditioning with "
                "UpscaleConditioning (the low-resolution picture and its noise level)"
            )
        super().check_conditioning(unet, dataclasses.replace(conditioning, low_res=None), name)

    def before_sampling(self, guider: Guider, generator: Any) -> Guider:
        """Each conditioning's picture noised to its level, each distinct picture once (the
        positive first), from the run's generator, as the diffusers pipeline draws it."""
        from diffusers.utils.torch_utils import randn_tensor

        model = guider.unet.model
        conditionings = [guider.positive] + ([] if guider.scale == 1.0 else [guider.negative])
        noised: dict[int, Any] = {}
        for conditioning in conditionings:
            key = id(conditioning.low_res)
            if key in noised:
                continue
            picture = conditioning.low_res.to(model.device, model.dtype)
            noise = randn_tensor(
                picture.shape, generator=generator, device=model.device, dtype=model.dtype
            )
            level = self._level(conditioning, model.device)
            noised[key] = self.noise_scheduler.add_noise(picture, noise, level)

        def with_noised(conditioning: Conditioning) -> Conditioning:
            found = noised.get(id(conditioning.low_res))
            return conditioning if found is None else dataclasses.replace(
                conditioning, low_res_noised=found
            )  # fmt: skip

        positive, negative = with_noised(guider.positive), with_noised(guider.negative)
        return dataclasses.replace(guider, positive=positive, negative=negative)

    def _level(self, conditioning: Conditioning, device: Any) -> Any:
        import torch

        if not 0 <= conditioning.noise_level <= self.max_noise_level:
            raise ValueError(
                f"noise_level {conditioning.noise_level} is outside 0..{self.max_noise_level}, "
                "the levels this upscaler was trained with"
            )
        return torch.tensor([conditioning.noise_level], dtype=torch.long, device=device)

    def model_inputs(
        self, guider: Guider, conditionings: list[Conditioning], latents: Any
    ) -> dict[str, Any]:
        import torch

        inputs = super().model_inputs(guider, conditionings, latents)
        levels = [torch.tensor([c.noise_level], device=latents.device) for c in conditionings]
        inputs["class_labels"] = cat(levels, latents.shape[0])
        return inputs

    def extra_channels(
        self, guider: Guider, conditionings: list[Conditioning], latents: Any
    ) -> Any:
        """The noised low-resolution pictures, appended to the latents at every step."""
        pictures = [c.low_res_noised for c in conditionings]
        if any(p is None for p in pictures):
            raise ValueError("the low-resolution picture was not noised before sampling")
        joined = cat(pictures, latents.shape[0]).to(latents.dtype)
        if tuple(joined.shape[-2:]) != tuple(latents.shape[-2:]):
            raise ValueError(
                f"the low-resolution picture is {tuple(joined.shape[-2:])} but the "
                f"latents are {tuple(latents.shape[-2:])}; use UpscaleConditioning's latent"
            )
        return joined

    def check_extra_channels(self, unet: UNet, conditioning: Conditioning, name: str) -> None:
        """The low-resolution picture is checked above; it is this model's extra channels."""


def folder_family(folder: Any) -> Any:
    """The family adapter for a diffusers model folder: the upscaler's when it has a
    ``low_res_scheduler``, else None (the default SD U-Net adapter)."""
    import json

    from nodes import hf

    config_file = folder / "low_res_scheduler" / "scheduler_config.json"
    if not config_file.is_file():
        return None
    scheduler = hf.diffusers().DDPMScheduler.from_config(json.loads(config_file.read_text()))
    index = json.loads((folder / "model_index.json").read_text())
    return UpscalerUNet(scheduler, int(index.get("max_noise_level", 350)))
