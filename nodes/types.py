"""The diffusion pack's socket types: what flows between Stable Diffusion nodes.

Model-holding types (UNet, TextEncoder, VAE) report ~0 bytes to the output cache: the weights
belong to the model manager, and a cached LoadCheckpoint result is only a handle to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nodeflow import socket_type
from nodes.families import Family, StableDiffusionUNet

if TYPE_CHECKING:
    import torch

    from nodes.families.concat import ConcatLatents


class _ModelHandle:
    def __nodeflow_nbytes__(self) -> int:
        return 0


@socket_type(color="#7e57c2")
@dataclass(frozen=True, eq=False)
class UNet(_ModelHandle):
    """A denoiser with its model config, its default scheduler config and any patches.

    ``family`` is the adapter that knows how this model is called and what it is conditioned on
    (``nodes.families``); the loader that built the model chooses it.
    """

    model: Any
    scheduler_config: dict[str, Any]
    latent_scale: int = 8
    """The pixel-to-latent downsampling factor of the VAE this denoiser was trained with."""
    patches: tuple[Any, ...] = ()
    source: str = ""
    noise_augmentor: Any = None
    """Stable unCLIP only: what noises image embeddings before they become class labels
    (``nodes.unclip.NoiseAugmentor``)."""
    family: Family = field(default_factory=StableDiffusionUNet)
    sampling_shift: float | None = None
    """A flow model's sigma shift set on the model (``FlowShift``, ComfyUI's ModelSamplingSD3 /
    ModelSamplingFlux); ComfyScheduler samples with it. None: the family's default."""

    @property
    def latent_channels(self) -> int:
        return self.family.latent_channels(self)


@socket_type(color="#fdd835")
@dataclass(frozen=True, eq=False)
class TextEncoder(_ModelHandle):
    """A CLIP tokenizer and text encoder, or SDXL's pair of them.

    With one encoder (SD 1.x, 2.x) the prompt is its last hidden state. With two (SDXL) it is both
    encoders' penultimate hidden states side by side, and the second one's projected pooled output
    goes along as the pooled embedding.
    """

    tokenizer: Any
    model: Any
    tokenizer_2: Any = None
    model_2: Any = None
    patches: tuple[Any, ...] = ()
    source: str = ""
    tokenizer_3: Any = None
    model_3: Any = None
    """A T5 encoder (SD3's third, Flux's per-token one) and its tokenizer, where there is one."""
    prompt_format: Any = None
    """How a prompt becomes conditioning when it is not SD's CLIP recipe (SD3, Flux: a
    ``nodes.flow_text`` format the loader chooses); ``None`` means SD 1.x/2.x/XL."""
    stop_at_layer: int = -1
    """Which layer's output is the prompt, counted from the end as ComfyUI's CLIPSetLastLayer
    counts (-1: the last; -2: the one before it, then the final layer norm: "clip skip")."""

    @property
    def models(self) -> tuple[Any, ...]:
        if self.model is None:
            return ()
        found = (self.model, self.model_2, self.model_3)
        return tuple(model for model in found if model is not None)


@socket_type(color="#ef5350")
@dataclass(frozen=True, eq=False)
class VAE(_ModelHandle):
    """An autoencoder between pixels and latents: a KL autoencoder (Stable Diffusion) or a VQ
    autoencoder (Kandinsky's MoVQ), which VAEEncode/VAEDecode tell apart by the model."""

    model: Any
    source: str = ""

    @property
    def is_vq(self) -> bool:
        """A VQ autoencoder: decoded without latent scaling, its latents not quantized."""
        return hasattr(self.model, "quantize")

    @property
    def scale_factor(self) -> int:
        """Pixels per latent cell, read from the model (2 for the tiny test VAE, 8 for SD)."""
        return 2 ** (len(self.model.config.block_out_channels) - 1)


@socket_type(color="#ffa726")
@dataclass(frozen=True, eq=False)
class Conditioning:
    """What a denoiser is conditioned on: prompt embeddings (and pooled embeddings where a model
    has them), and for unCLIP decoders a CLIP image embedding.

    ``size`` is SDXL's micro-conditioning: the original size, crop offset and target size the
    U-Net is told about, each as (height, width) or (top, left). ``None`` means what diffusers does
    by default: original and target size are the picture's size, and no crop.

    ``image_embeds`` is how the U-Net decides: a Kandinsky 2.2 decoder takes it as its only
    condition (``embeds`` is then ``None``); a Stable unCLIP decoder takes it, noised to
    ``noise_level``, as its class embedding beside the prompt. The noise is drawn by Denoise from
    its seed (as diffusers draws it from the pipeline's generator), so this stays deterministic and
    cacheable; ``class_labels`` holds the result during sampling only. A class-conditional
    pixel-space model's class indices (ClassLabel) are also ``class_labels``, with no ``embeds``.
    """

    embeds: torch.Tensor | None
    pooled: torch.Tensor | None = None
    size: SizeConditioning | None = None
    image_embeds: torch.Tensor | None = None
    noise_level: int = 0
    class_labels: torch.Tensor | None = None
    controls: tuple[Any, ...] = ()
    """ControlNets steering this prompt (``nodes.control.ControlApplication``), in the order
    ApplyControlNet added them."""
    low_res: torch.Tensor | None = None
    """An x4 upscaler's low-resolution picture [batch, 3, h, w] in [-1, 1] (UpscaleConditioning),
    noised to ``noise_level`` while sampling into ``low_res_noised`` (sampling only)."""
    low_res_noised: torch.Tensor | None = None
    concat: ConcatLatents | None = None
    """Channels appended to the model input (an inpainting model's mask and masked picture,
    from InpaintModelConditioning); see ``nodes.families.concat``."""
    guidance: float | None = None
    """The distilled guidance value a guidance-embedded model (Flux dev) is told (FluxGuidance);
    ``None``: the model family's default."""


@dataclass(frozen=True)
class SizeConditioning:
    original: tuple[int, int]
    crop: tuple[int, int]
    target: tuple[int, int]

    def time_ids(self) -> list[int]:
        return [*self.original, *self.crop, *self.target]


@socket_type(color="#ec407a")
@dataclass(frozen=True, eq=False)
class Latent:
    """Latents as the denoiser sees them (already multiplied by the VAE's scaling factor).

    An empty latent (``samples is None``) only fixes the picture size and batch: the denoiser
    makes its noise in the shape its own model needs. A latent from VAEEncode also carries the
    encoder's posterior, so that Denoise can sample it with the run's seed exactly as diffusers'
    img2img does; everything else uses ``samples`` (the posterior mean).
    """

    samples: torch.Tensor | None
    width: int
    height: int
    batch_size: int = 1
    posterior: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    """(mean, std) of the VAE posterior, before scaling."""
    scaling_factor: float = 1.0
    noise_mask: torch.Tensor | None = field(default=None, repr=False)
    """[batch, height, width] in [0, 1] at picture size, or None: where Denoise may change the
    picture (1); elsewhere this latent's content is put back after every step
    (SetLatentNoiseMask, ``nodes.noise_mask``)."""
    shift_factor: float = 0.0
    """Subtracted from the VAE's latents before scaling (SD3 and Flux VAEs; 0 for SD)."""


@socket_type(color="#42a5f5")
@dataclass(frozen=True, eq=False)
class Image:
    """A batch of RGB pictures: a float tensor [batch, height, width, 3] in [0, 1] on the CPU."""

    pixels: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.pixels.shape[0])


@socket_type(color="#9ccc65")
@dataclass(frozen=True, eq=False)
class Mask:
    """A batch of masks: a float tensor [batch, height, width] in [0, 1] on the CPU.

    1 marks what is selected (what inpainting repaints), 0 what is kept; values between are a
    soft edge. This is ComfyUI's MASK convention, so a picture's alpha becomes ``1 - alpha``: the
    transparent part of a picture is the part to repaint.
    """

    values: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.values.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.values.shape[2]), int(self.values.shape[1])


@socket_type(color="#26a69a")
@dataclass(frozen=True, eq=False)
class Scheduler:
    """A diffusers scheduler class and its config, and the number of steps to take.

    Schedulers keep per-run state, so this holds the recipe, and every Denoise makes a fresh one.
    """

    name: str
    cls: type
    config: dict[str, Any]
    steps: int
    eta: float = 0.0
    """The stochasticity of schedulers whose step takes it (DDIM's eta, TCD's gamma)."""
    timesteps: tuple[int, ...] = ()
    """Chosen timesteps to run instead of ``steps`` evenly spaced ones (empty: evenly spaced)."""
    patch_size: int = 1
    """Latent cells per side of one image token of the model, for the resolution-dependent shift
    (Flux's ``mu`` grows with the image's token count)."""
    sigmas: tuple[float, ...] | None = None
    """The sigma schedule the model's own pipeline passes instead of the scheduler's default
    spacing (Flux's ``linspace(1, 1/steps, steps)``); ``None``: the scheduler's own."""

    def create(self) -> Any:
        return self.cls.from_config(self.config)


@socket_type(color="#8d6e63")
@dataclass(frozen=True, eq=False)
class Guider:
    """What CFG makes: a noise predictor combining the positive and negative conditioning."""

    unet: UNet
    positive: Conditioning
    negative: Conditioning
    scale: float = 7.5
    rescale: float = 0.0
    terms: tuple[Any, ...] = ()
    """Gradient guidance terms (``nodes.gradient_guidance.GradientTerm``: classifier or CLIP
    guidance) folded into the prediction after CFG; empty for plain CFG."""

    @property
    def models(self) -> tuple[Any, ...]:
        """Every module sampling with this guider computes with: the denoiser and any model
        its conditionings or gradient terms bring (ControlNets, classifiers), so a sampler puts
        all of them on the device."""
        extra: list[Any] = [model for term in self.terms for model in term.models]
        for conditioning in (self.positive, self.negative):
            for control in conditioning.controls:
                if control.net.model not in extra:
                    extra.append(control.net.model)
        return (self.unet.model, *extra)


@socket_type(color="#ab47bc")
@dataclass(frozen=True, eq=False)
class Prior(_ModelHandle):
    """An unCLIP prior: turns a CLIP text embedding into a CLIP image embedding.

    It brings what it needs to read a prompt (its CLIP tokenizer and text encoder with
    projection) and its own scheduler config. ``image_encoder`` (Kandinsky priors have one) gives
    the negative image embedding of "no prompt": its embedding of an all-zero input.
    """

    model: Any
    tokenizer: Any
    text_encoder: Any
    scheduler_class: type
    scheduler_config: dict[str, Any]
    image_encoder: Any = None
    source: str = ""

    @property
    def models(self) -> tuple[Any, ...]:
        extra = () if self.image_encoder is None else (self.image_encoder,)
        return (self.model, self.text_encoder, *extra)


@socket_type(color="#5c6bc0")
@dataclass(frozen=True, eq=False)
class ImageEmbeds:
    """A batch of CLIP image embeddings [batch, width], as a prior or an image encoder makes
    them; they condition an unCLIP decoder through UnCLIPConditioning."""

    embeds: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.embeds.shape[0])


@socket_type(color="#78909c")
@dataclass(frozen=True, eq=False)
class CLIPVision(_ModelHandle):
    """A CLIP image encoder with projection and the preprocessing it was trained with."""

    model: Any
    processor: Any
    source: str = ""


@socket_type(color="#ff7043")
@dataclass(frozen=True, eq=False)
class AttentionStore:
    """Cross-attention probabilities recorded while denoising, averaged over heads, over the
    recorded steps and over the layers of each feature-map size.

    ``maps`` is keyed by (height, width) of the feature map; each value is a float tensor
    [pictures, height, width, tokens] on the CPU whose last axis sums to 1 (a softmax over the
    prompt's tokens). Pictures are the positive prompts' rows only, in batch order. Empty when
    nothing was recorded (Denoise without RecordAttention).
    """

    maps: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    steps: tuple[int, ...] = ()
    """The step indices that were recorded."""

    @property
    def pictures(self) -> int:
        return int(next(iter(self.maps.values())).shape[0]) if self.maps else 0


SOCKET_TYPES = [
    UNet,
    TextEncoder,
    VAE,
    Conditioning,
    Latent,
    Image,
    Mask,
    Scheduler,
    Guider,
    Prior,
    ImageEmbeds,
    CLIPVision,
    AttentionStore,
]
