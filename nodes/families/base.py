"""What every model family adapter answers; ``predict_noise`` and Denoise ask nothing else."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nodes.types import Conditioning, Guider, UNet


class Family:
    """A family adapter: stateless, so one instance serves every model of its family.

    Subclasses override what differs; the defaults describe a model called as
    ``model(sample, timestep, **inputs)`` whose latents have ``config.in_channels`` channels.
    """

    name = "base"

    guidance_embedded = False
    """True when the model takes the guidance scale as an input (guidance-distilled models such as
    LCM U-Nets or Flux): ``predict_noise`` then runs one pass, never a CFG pair."""

    takes_control = False
    """True when the adapter adds ControlNet residuals (``nodes.control``) to its model call."""

    def latent_channels(self, unet: UNet) -> int:
        return int(unet.model.config.in_channels)

    def before_sampling(self, guider: Guider, generator: Any) -> Guider:
        """The guider a run samples with, given the run's generator before the initial latents
        are drawn: where a family draws noise for its conditioning (the x4 upscaler noises its
        low-resolution picture), so the draws come in its diffusers pipeline's order."""
        return guider

    def token_size(self, unet: UNet) -> int:
        """Latent cells per side of one image token: what a resolution-dependent timestep shift
        counts tokens by (1 for U-Nets, which have no tokens)."""
        return 1

    def sigmas(self, unet: UNet, steps: int) -> tuple[float, ...] | None:
        """The sigma schedule this family's diffusers pipeline hands its scheduler for ``steps``
        steps, or ``None`` to let the scheduler space them itself."""
        return None

    def comfy_flow_sampling(self, unet: UNet) -> tuple[str, float] | None:
        """For a rectified-flow model: how ComfyUI's KSampler shifts its sigmas (``snr``, SD3's
        ``ModelSamplingDiscreteFlow``, or ``exponential``, Flux's ``ModelSamplingFlux``) and
        the shift it uses when no ModelSampling node sets one; None for diffusion models."""
        return None

    def check_conditioning(self, unet: UNet, conditioning: Conditioning, name: str) -> None:
        """Refuse ``conditioning`` (named ``name`` in the message) when this model cannot use it,
        with a message that says why, rather than as a shape error deep inside the model."""

    def model_inputs(
        self, guider: Guider, conditionings: list[Conditioning], latents: Any
    ) -> dict[str, Any]:
        """The keyword inputs of one batched model call over ``latents``, the conditionings in
        the batch's order; the same at every step, so a sampling loop makes them once."""
        raise NotImplementedError

    def predict(self, unet: UNet, model_input: Any, timestep: Any, inputs: dict[str, Any]) -> Any:
        """The model's raw output (noise, v or velocity, as its scheduler config says).

        Channels the inputs carry under ``concat.CONCAT`` (an inpainting model's mask and masked
        picture) are appended to ``model_input`` first."""
        from nodes.families.concat import with_concat

        model_input, inputs = with_concat(model_input, inputs)
        return unet.model(model_input, timestep, **inputs, return_dict=False)[0]
