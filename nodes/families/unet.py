"""Stable Diffusion's U-Net family: SD 1.x/2.x/XL, Stable unCLIP and Kandinsky 2.2 decoders.

All are ``UNet2DConditionModel``; what tells them apart is in the model config (SDXL's
``text_time`` added conditions, unCLIP's class embedding, Kandinsky's image-only conditioning), so
one adapter reads the config rather than one adapter per checkpoint kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodes.control import CONTROL, check_control_fits
from nodes.families.base import Family
from nodes.families.batching import cat, repeat_to, same_length
from nodes.families.concat import CONCAT, check_concat, concat_input

if TYPE_CHECKING:
    from nodes.types import Conditioning, Guider, UNet


def takes_class_labels(unet: UNet) -> bool:
    """A U-Net with a class embedding (Stable unCLIP: the noised image embedding)."""
    return getattr(unet.model.config, "class_embed_type", None) is not None


class StableDiffusionUNet(Family):
    """``UNet2DConditionModel`` conditioned by cross-attention over prompt embeddings."""

    name = "sd-unet"
    takes_control = True

    def predict(self, unet: UNet, model_input: Any, timestep: Any, inputs: dict[str, Any]) -> Any:
        """The U-Net's output, with the residuals of any active ControlNet added to its skip
        connections and middle block (diffusers' ``down_block_additional_residuals``), and any
        T2I-Adapter's features inside its down blocks (``down_intrablock_additional_residuals``).

        A ControlNet sees the noisy latents only, never the channels an inpainting model or an
        upscaler appends (as in diffusers' ControlNet inpaint pipeline)."""
        control = inputs.get(CONTROL)
        if control is not None:
            inputs = {key: value for key, value in inputs.items() if key != CONTROL}
            own = {key: value for key, value in inputs.items() if key != CONCAT}
            residuals = control.residuals(model_input, timestep, own)
            if residuals is not None and residuals.down is not None:
                inputs["down_block_additional_residuals"] = residuals.down
                inputs["mid_block_additional_residual"] = residuals.mid
            if residuals is not None and residuals.intrablock is not None:
                # the U-Net pops from this list: a fresh one (of copies) for every call
                inputs["down_intrablock_additional_residuals"] = [
                    feature.clone() for feature in residuals.intrablock
                ]
        return super().predict(unet, model_input, timestep, inputs)

    def model_inputs(
        self, guider: Guider, conditionings: list[Conditioning], latents: Any
    ) -> dict[str, Any]:
        batch = latents.shape[0]
        embeds = [c.embeds for c in conditionings]
        inputs: dict[str, Any] = {
            "encoder_hidden_states": None if embeds[0] is None else cat(same_length(embeds), batch),
            "added_cond_kwargs": self._added_conditions(guider, conditionings, latents),
        }
        if takes_class_labels(guider.unet):
            inputs["class_labels"] = cat([c.class_labels for c in conditionings], batch)
        extra = self.extra_channels(guider, conditionings, latents)
        if extra is not None:
            inputs[CONCAT] = extra
        return inputs

    def extra_channels(
        self, guider: Guider, conditionings: list[Conditioning], latents: Any
    ) -> Any:
        """What is appended to the latents on the channel axis at every step (an inpainting
        model's mask and masked picture), or None."""
        return concat_input(guider.unet, conditionings, latents)

    def check_extra_channels(self, unet: UNet, conditioning: Conditioning, name: str) -> None:
        check_concat(unet, conditioning, name)

    def latent_channels(self, unet: UNet) -> int:
        """The latents' channels: what the model predicts, less a learned variance (Kandinsky
        2.2: 8 out of 4 in); an inpainting U-Net takes 9 channels in but its latents have 4."""
        config = unet.model.config
        return min(int(config.in_channels), int(config.out_channels))

    def _added_conditions(
        self, guider: Guider, conditionings: list[Conditioning], latents: Any
    ) -> dict[str, Any] | None:
        """SDXL's pooled prompt embeddings and size/crop "time ids", or a Kandinsky 2.2 decoder's
        image embeddings."""
        kind = getattr(guider.unet.model.config, "addition_embed_type", None)
        if kind == "text_time":
            return _size_conditions(guider, conditionings, latents)
        if kind == "image":
            batch = latents.shape[0]
            return {"image_embeds": cat([c.image_embeds for c in conditionings], batch)}
        return None

    def check_conditioning(self, unet: UNet, conditioning: Conditioning, name: str) -> None:
        for control in conditioning.controls:
            check_control_fits(unet, control.net, name)
        if conditioning.low_res is not None:
            raise ValueError(f"{name}: UpscaleConditioning is for x4 upscalers; this U-Net is none")
        self.check_extra_channels(unet, conditioning, name)
        config = unet.model.config
        image_only = getattr(config, "encoder_hid_dim_type", None) == "image_proj"
        if conditioning.image_embeds is not None:
            _check_image_embeds(unet, conditioning, name)
        elif image_only:
            raise ValueError(
                f"{name}: this U-Net (an unCLIP decoder such as Kandinsky 2.2) is conditioned on "
                "image embeddings; make its conditioning with UnCLIPConditioning"
            )
        if conditioning.embeds is None:
            if not image_only:
                raise ValueError(f"{name}: this U-Net needs a prompt; give UnCLIPConditioning one")
            return
        if image_only:
            raise ValueError(f"{name}: this U-Net takes no prompt, only image embeddings")
        width = int(conditioning.embeds.shape[-1])
        expected = getattr(config, "cross_attention_dim", width)
        if width != expected:
            raise ValueError(
                f"{name}: the conditioning is {width} wide but this U-Net attends to {expected}; "
                "encode the prompt with the text encoder of the same model"
            )
        sdxl = getattr(config, "addition_embed_type", None) == "text_time"
        if sdxl and conditioning.pooled is None:
            raise ValueError(
                f"{name}: this U-Net (SDXL) needs pooled embeddings from SDXL's encoders"
            )


def _size_conditions(
    guider: Guider, conditionings: list[Conditioning], latents: Any
) -> dict[str, Any]:
    import torch

    from nodes.types import SizeConditioning

    unet = guider.unet
    batch = latents.shape[0]
    height = latents.shape[-2] * unet.latent_scale
    width = latents.shape[-1] * unet.latent_scale
    default = SizeConditioning(original=(height, width), crop=(0, 0), target=(height, width))
    pooled, time_ids = [], []
    for conditioning in conditionings:
        if conditioning.pooled is None:
            raise ValueError("this U-Net (SDXL) needs pooled embeddings from an SDXL text encoder")
        size = conditioning.size or default
        ids = torch.tensor([size.time_ids()], dtype=conditioning.pooled.dtype)
        pooled.append(repeat_to(conditioning.pooled, batch))
        time_ids.append(ids.to(latents.device).repeat(batch, 1))
    return {"text_embeds": torch.cat(pooled), "time_ids": torch.cat(time_ids)}


def _check_image_embeds(unet: UNet, conditioning: Conditioning, name: str) -> None:
    config = unet.model.config
    width = int(conditioning.image_embeds.shape[-1])
    if getattr(config, "addition_embed_type", None) == "image":
        expected = int(config.encoder_hid_dim)
    elif unet.noise_augmentor is not None and takes_class_labels(unet):
        expected = int(config.projection_class_embeddings_input_dim) // 2
    else:
        raise ValueError(f"{name}: this U-Net takes no image embeddings (it is no unCLIP decoder)")
    if width != expected:
        raise ValueError(
            f"{name}: the image embeddings are {width} wide but this U-Net takes {expected}; "
            "use the prior or image encoder made for this decoder"
        )
    if conditioning.noise_level and unet.noise_augmentor is None:
        raise ValueError(f"{name}: noise_level applies to Stable unCLIP decoders only; set it to 0")
