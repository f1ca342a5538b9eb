"""Train the built-in demo model from scratch: a small Stable Diffusion 1.x-architecture model
that draws ``nodes.demo.dataset`` scenes from their captions.

Run from the repository root (not run by CI; see ``nodes/demo/TRAINING.md``)::

    python -m nodes.demo.train_demo --out build/demo-sd --threads 2

Two stages, as latent diffusion was trained: first the ``AutoencoderKL`` alone (reconstruction +
a small KL term), then, with it frozen, the ``CLIPTextModel`` and ``UNet2DConditionModel``
together on the epsilon objective under SD's exact noise schedule (the ``sd1`` scheduler config
nodeflow ships: scaled_linear 0.00085-0.012, 1000 steps). 10% of captions are dropped to the empty
prompt, which is what a workflow's negative prompt "" encodes, so classifier-free guidance works.

Sizes are chosen for about an hour on two CPU cores: the VAE downsamples by 4 (64x64 pictures,
16x16x4 latents), so the U-Net works on 256 positions; the text encoder is narrow (64) but keeps
the real CLIP tokenizer and its 49,408-token table, which then dominates the parameter count (only
the few dozen tokens the captions use are trained; the table ships in fp16).

Everything is seeded: the same arguments on the same device and thread count give the same weights.
The output is a diffusers folder laid out exactly as ``nodes.tiny`` writes one, plus a model card.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from nodes.clip_vocab import (
    BOS_TOKEN,
    EOS_TOKEN,
    MODEL_MAX_LENGTH,
    clip_tokenizer,
    clip_vocab,
    write_clip_tokenizer,
)
from nodes.demo.dataset import Scene, Split, Style, caption, render, sample_scene
from nodes.lora import config_objective
from nodes.tiny import family_config

__all__ = [
    "Batcher",
    "DemoModels",
    "ModelSizes",
    "build_models",
    "diffusion_loss",
    "diffusion_step",
    "noise_scheduler",
    "objective_of",
    "save_diffusers_folder",
    "vae_step",
]

CAPTION_DROPOUT = 0.1


@dataclass(frozen=True)
class ModelSizes:
    """The architecture; the defaults are the shipped demo model's, ``micro`` is for tests."""

    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_layers: int = 1
    vae_groups: int = 4
    text_width: int = 64
    text_layers: int = 3
    text_mlp: int = 256
    unet_channels: tuple[int, ...] = (32, 64, 128)
    unet_layers: int = 1
    unet_groups: int = 8
    unet_heads: int = 4
    """SD 1.x's ``attention_head_dim`` is really the head count (SD's is 8, as in ``nodes.tiny``);
    4 keeps the heads 16 and 32 wide at these channel counts."""
    attention_from_level: int = 1
    """Levels below this have no attention: at 16x16 it costs the most and, for flat shapes,
    the 8x8 and 4x4 levels and the middle block place them well enough (SD skips its lowest
    resolution instead; here compute, not resolution, is scarce)."""

    @classmethod
    def micro(cls) -> ModelSizes:
        """A model that trains a step in well under a second, for smoke tests."""
        return cls(
            vae_channels=(8, 8),
            vae_groups=4,
            text_width=8,
            text_layers=1,
            text_mlp=16,
            unet_channels=(8, 16),
            unet_groups=4,
            unet_heads=2,
            attention_from_level=1,
        )

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)


@dataclass
class DemoModels:
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel

    def to(self, device: torch.device) -> DemoModels:
        for model in (self.vae, self.text_encoder, self.unet):
            model.to(device)
        return self


def build_models(sizes: ModelSizes, seed: int) -> DemoModels:
    """Freshly initialised models; each component seeded on its own, so changing one component's
    size leaves the others' initial weights unchanged."""
    vocab = clip_vocab()
    levels = len(sizes.unet_channels)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        block_out_channels=list(sizes.vae_channels),
        down_block_types=["DownEncoderBlock2D"] * len(sizes.vae_channels),
        up_block_types=["UpDecoderBlock2D"] * len(sizes.vae_channels),
        layers_per_block=sizes.vae_layers,
        latent_channels=4,
        norm_num_groups=sizes.vae_groups,
        scaling_factor=1.0,  # measured after the first stage
    )
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=sizes.text_width,
            intermediate_size=sizes.text_mlp,
            num_attention_heads=max(1, sizes.text_width // 64),
            num_hidden_layers=sizes.text_layers,
            max_position_embeddings=MODEL_MAX_LENGTH,
            projection_dim=sizes.text_width,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            bos_token_id=vocab[BOS_TOKEN],
            eos_token_id=vocab[EOS_TOKEN],
            pad_token_id=vocab[EOS_TOKEN],
        )
    )
    torch.manual_seed(seed + 2)
    unet = UNet2DConditionModel(
        sample_size=64 // sizes.vae_factor,
        in_channels=4,
        out_channels=4,
        block_out_channels=sizes.unet_channels,
        layers_per_block=sizes.unet_layers,
        down_block_types=tuple(
            "CrossAttnDownBlock2D" if level >= sizes.attention_from_level else "DownBlock2D"
            for level in range(levels)
        ),
        up_block_types=tuple(
            "CrossAttnUpBlock2D" if level >= sizes.attention_from_level else "UpBlock2D"
            for level in reversed(range(levels))
        ),
        norm_num_groups=sizes.unet_groups,
        cross_attention_dim=sizes.text_width,
        attention_head_dim=sizes.unet_heads,
    )
    return DemoModels(vae, text_encoder, unet)


def load_base(folder: Path, device: torch.device) -> DemoModels:
    """A trained demo model in fp32, frozen (its files are fp16 where ``save_diffusers_folder``
    saved them so): the LoRA's base, or the start of a resumed run."""
    kwargs: dict[str, Any] = {"local_files_only": True}
    models = DemoModels(
        vae=AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32, **kwargs),
        text_encoder=CLIPTextModel.from_pretrained(
            folder / "text_encoder", dtype=torch.float32, **kwargs
        ),
        unet=UNet2DConditionModel.from_pretrained(
            folder / "unet", torch_dtype=torch.float32, **kwargs
        ),
    ).to(device)
    for model in (models.vae, models.text_encoder, models.unet):
        model.eval().requires_grad_(False)
    return models


OBJECTIVES = ("epsilon", "v-zero-snr")
"""``epsilon``: SD 1.x's objective and schedule, what the shipped demo is trained with.
``v-zero-snr``: Lin et al. (2024, "Common diffusion noise schedules and sample steps are
flawed"): the betas rescaled so the last timestep is pure noise (SNR 0), v-prediction (at SNR 0
epsilon is the input itself, so predicting it teaches nothing; v is the clean picture there) and
"trailing" timesteps when sampling, so sampling starts at that last timestep. Under SD's schedule
x_t at t = 999 still holds 7% of the picture, so the model can read the layout from x_t instead
of from the caption (``nodes/demo/TRAINING.md``, "Position: what was tried")."""


def scheduler_overrides(objective: str) -> dict[str, Any]:
    """The scheduler config keys an objective sets over SD 1.x's, in training and in the folder
    it ships, so a sampler draws from the schedule the model was trained on."""
    if objective == "epsilon":
        return {}
    if objective == "v-zero-snr":
        return {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                "timestep_spacing": "trailing"}  # fmt: skip
    raise ValueError(f"unknown objective {objective!r}; one of {', '.join(OBJECTIVES)}")


def noise_scheduler(objective: str = "epsilon") -> DDPMScheduler:
    """The training noise schedule, built from the same ``sd1`` config the model ships with."""
    config = family_config("sd1", "scheduler") | scheduler_overrides(objective)
    return DDPMScheduler.from_config(config)


SD_SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end")
"""The keys that make a scheduler config SD 1.x's betas (``noise_scheduler``'s, before an
objective's rescale): a base model whose config differs in one trains on another schedule."""


def objective_of(model_folder: Path) -> str:
    """The objective (one of ``OBJECTIVES``) a diffusers model folder was trained with, read from
    its ``scheduler/scheduler_config.json``: what a trainer that starts from the model (a LoRA,
    an LCM distillation) must noise and regress with, so it teaches the base what it already
    predicts. Refuses, naming the file and the key, a config these trainers do not handle: other
    betas than SD 1.x's, or a prediction type and zero-SNR flag that are neither ``epsilon`` on
    SD's schedule nor ``v_prediction`` with ``rescale_betas_zero_snr``."""
    path = Path(model_folder) / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        raise ValueError(f"{path}: no such file; the base model's objective is read from it")
    config = json.loads(path.read_text())
    sd = family_config("sd1", "scheduler")
    for key in SD_SCHEDULE_KEYS:
        if config.get(key) != sd[key]:
            raise ValueError(
                f"{path}: {key} is {config.get(key)!r}; the trainers handle SD 1.x's betas only "
                f"({', '.join(f'{k} {sd[k]!r}' for k in SD_SCHEDULE_KEYS)})"
            )
    if config.get("trained_betas") is not None:
        raise ValueError(f"{path}: trained_betas is set; the trainers handle SD 1.x's betas only")
    objective = config_objective(config)
    if objective in OBJECTIVES:
        return objective
    prediction = config.get("prediction_type", "epsilon")
    zero_snr = config.get("rescale_betas_zero_snr", False)
    raise ValueError(
        f"{path}: prediction_type {prediction!r} with rescale_betas_zero_snr {zero_snr!r}; the "
        "trainers handle 'epsilon' without zero terminal SNR (objective epsilon) or "
        "'v_prediction' with it (objective v-zero-snr)"
    )


@dataclass
class Batcher:
    """Seeded batches of rendered scenes and their token ids, with caption dropout.

    Token ids are cached per caption: there are only a few thousand distinct captions.
    """

    seed: int
    split: Split = "train"
    style: Style | None = "plain"
    """None mixes plain and outlined half and half (the VAE must reconstruct both)."""
    dropout: float = CAPTION_DROPOUT
    rng: random.Random = field(init=False)
    _tokens: dict[str, list[int]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def tokens(self, captions: Sequence[str]) -> torch.Tensor:
        tokenizer: Any = clip_tokenizer()
        for text in captions:
            if text not in self._tokens:
                self._tokens[text] = tokenizer(
                    text, padding="max_length", max_length=MODEL_MAX_LENGTH, truncation=True
                ).input_ids
        return torch.tensor([self._tokens[text] for text in captions])

    def scene(self, style: Style) -> Scene:
        """The next scene of the stream (a subclass may change the mixture of scenes)."""
        return sample_scene(self.rng, split=self.split, style=style)

    def __call__(self, size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """``(pixels in -1..1 [B,3,64,64], token ids [B,77], captions after dropout)``."""
        pictures, captions = [], []
        for _ in range(size):
            style = self.style or ("plain" if self.rng.random() < 0.5 else "outlined")
            scene = self.scene(style)
            pictures.append(np.asarray(render(scene), dtype=np.float32))
            captions.append("" if self.rng.random() < self.dropout else caption(scene))
        pixels = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2) / 127.5 - 1
        return pixels, self.tokens(captions), captions


def vae_step(
    vae: AutoencoderKL,
    pixels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    kl_weight: float,
    generator: torch.Generator | None = None,
    max_grad_norm: float = 1.0,
) -> float:
    """One autoencoder step: MSE reconstruction of a posterior sample plus a small KL term (SD
    used a tiny weight too; the latents' scale is fixed afterwards by ``scaling_factor``)."""
    posterior = vae.encode(pixels).latent_dist
    reconstruction = vae.decode(posterior.sample(generator)).sample
    loss = nn.functional.mse_loss(reconstruction, pixels) + kl_weight * posterior.kl().mean() / (
        posterior.mean[0].numel()
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # Without clipping and warm-up the autoencoder sometimes collapses to the mean picture
    # (loss stuck near 0.33) in its first hundred steps, depending on thread count.
    torch.nn.utils.clip_grad_norm_(vae.parameters(), max_grad_norm)
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def latent_scale(vae: AutoencoderKL, batcher: Batcher, batches: int, size: int) -> float:
    """``1 / std`` of posterior samples, the way SD's 0.18215 was measured."""
    device = next(vae.parameters()).device
    samples = [
        vae.encode(batcher(size)[0].to(device)).latent_dist.sample().flatten()
        for _ in range(batches)
    ]
    return float(1 / torch.cat(samples).std())


def diffusion_loss(
    models: DemoModels,
    scheduler: DDPMScheduler,
    pixels: torch.Tensor,
    input_ids: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    snr_gamma: float | None = 5.0,
    timesteps: torch.Tensor | None = None,
    sample_weights: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    v_gamma: float | None = None,
) -> torch.Tensor:
    """The diffusion loss on a batch (epsilon or v, as the scheduler's ``prediction_type``
    says), with optional Min-SNR-gamma weighting.

    Min-SNR (Hang et al. 2023) down-weights the nearly-noiseless timesteps, which otherwise
    dominate the epsilon loss's gradient; it converges several times faster, which matters on a
    CPU budget. For v its weight is min(SNR, gamma) / (SNR + 1), as that paper gives it (zero at
    SNR 0: a zero-terminal-SNR run that must learn the last timestep passes ``snr_gamma=None``).
    The VAE is frozen here: its posterior is sampled without gradients.
    ``timesteps`` (one per picture) replaces the uniform draw, for a trainer that biases it;
    ``sample_weights`` (one per picture) multiply each picture's loss on top of Min-SNR;
    ``noise`` (the latents' shape) replaces the Gaussian draw and is what the U-Net predicts.

    ``v_gamma`` (v only, instead of ``snr_gamma``) weights the v loss by min(1, gamma / (SNR + 1)).
    Measured on the clean latents' error, a plain v loss weighs a timestep by SNR + 1 (over 1,000
    at t = 0) where epsilon with Min-SNR-5 weighs it by min(SNR, 5): the plain v loss spends its
    gradient on the nearly-noiseless steps. This caps that weight at gamma as Min-SNR does, while
    the noisy steps (SNR + 1 <= gamma, SNR 0 included) keep the plain v weight Lin et al. train.
    """
    if v_gamma is not None and snr_gamma is not None:
        raise ValueError("give snr_gamma or v_gamma, not both")
    device = pixels.device
    with torch.no_grad():
        latents = models.vae.encode(pixels).latent_dist.sample(generator)
        latents = latents * models.vae.config.scaling_factor
    if noise is None:
        noise = torch.randn(latents.shape, generator=generator, device=device)
    elif noise.shape != latents.shape:
        raise ValueError(f"noise of shape {tuple(noise.shape)} for latents {tuple(latents.shape)}")
    noise = noise.to(device)
    steps = scheduler.config.num_train_timesteps
    if timesteps is None:
        timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator, device=device)
    timesteps = timesteps.to(device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    context = models.text_encoder(input_ids.to(device))[0]
    prediction = models.unet(noisy, timesteps, encoder_hidden_states=context).sample
    velocity = scheduler.config.prediction_type == "v_prediction"
    target = scheduler.get_velocity(latents, noise, timesteps) if velocity else noise
    per_sample = ((prediction.float() - target) ** 2).mean(dim=(1, 2, 3))
    if snr_gamma is not None:
        alphas = scheduler.alphas_cumprod.to(device)[timesteps]
        snr = alphas / (1 - alphas)
        per_sample = per_sample * torch.clamp(snr, max=snr_gamma) / (snr + 1 if velocity else snr)
    if v_gamma is not None:
        if not velocity:
            raise ValueError("v_gamma weights a v-prediction loss; this scheduler predicts epsilon")
        alphas = scheduler.alphas_cumprod.to(device)[timesteps]
        snr = alphas / (1 - alphas)
        per_sample = per_sample * torch.clamp(v_gamma / (snr + 1), max=1.0)
    if sample_weights is not None:
        per_sample = per_sample * sample_weights.to(device)
    return per_sample.mean()


def diffusion_step(
    models: DemoModels,
    scheduler: DDPMScheduler,
    pixels: torch.Tensor,
    input_ids: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[nn.Parameter],
    *,
    generator: torch.Generator | None = None,
    max_grad_norm: float = 1.0,
    timesteps: torch.Tensor | None = None,
    sample_weights: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    snr_gamma: float | None = 5.0,
    v_gamma: float | None = None,
) -> float:
    """One optimiser step on the diffusion loss (the core of both trainers); returns the loss."""
    loss = diffusion_loss(
        models,
        scheduler,
        pixels,
        input_ids,
        generator=generator,
        snr_gamma=snr_gamma,
        timesteps=timesteps,
        sample_weights=sample_weights,
        noise=noise,
        v_gamma=v_gamma,
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(parameters), max_grad_norm)
    optimizer.step()
    return float(loss.detach())


class EMA:
    """Exponential moving average of parameters, with the usual warm-up of the decay."""

    def __init__(self, parameters: Iterable[nn.Parameter], decay: float) -> None:
        self.parameters = list(parameters)
        self.shadow = [p.detach().clone() for p in self.parameters]
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for shadow, param in zip(self.shadow, self.parameters, strict=True):
            shadow.lerp_(param.detach(), 1 - decay)

    @torch.no_grad()
    def copy_to(self, parameters: Iterable[nn.Parameter]) -> None:
        for shadow, param in zip(self.shadow, parameters, strict=True):
            param.copy_(shadow)


def adamw(
    modules: Iterable[nn.Module], lr: float, weight_decay: float
) -> tuple[torch.optim.AdamW, list[nn.Parameter]]:
    """AdamW without decay on biases, norms and embeddings (decay would shrink the embedding
    rows of every token the captions never use, which ship with the model)."""
    decay, plain = [], []
    for module in modules:
        for name, param in module.named_parameters():
            if param.requires_grad:
                no_decay = param.ndim < 2 or "embed" in name or "norm" in name
                (plain if no_decay else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0}]
    return torch.optim.AdamW(groups, lr=lr), decay + plain


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_diffusers_folder(
    models: DemoModels, out: Path, *, half: bool = True, objective: str = "epsilon"
) -> dict[str, int]:
    """Write a diffusers ``StableDiffusionPipeline`` folder as ``nodes.tiny`` does.

    The U-Net and text encoder are stored in fp16 (``half``): at these magnitudes rounding is far
    below what changes a picture, and it halves the package size. The VAE stays fp32: it is small,
    and its decoder is where fp16 overflows in real SD models. Returns the bytes per component.
    A ``v-zero-snr`` model ships a DDIM config (as SD 2.x's v-models do) with the objective's keys:
    SD 1.x's PNDM has no zero-terminal-SNR option and would sample another schedule.
    """
    out.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    copy.deepcopy(models.unet).to("cpu", dtype).save_pretrained(out / "unet")
    copy.deepcopy(models.text_encoder).to("cpu", dtype).save_pretrained(out / "text_encoder")
    copy.deepcopy(models.vae).to("cpu", torch.float32).save_pretrained(out / "vae")
    write_clip_tokenizer(out / "tokenizer")
    config = family_config("sd1", "scheduler") | scheduler_overrides(objective)
    if objective != "epsilon":
        config["_class_name"] = "DDIMScheduler"
    getattr(diffusers, config["_class_name"]).from_config(config).save_pretrained(out / "scheduler")
    write_json(
        out / "model_index.json",
        {
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": diffusers.__version__,
            "scheduler": ["diffusers", config["_class_name"]],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "feature_extractor": [None, None],
            "image_encoder": [None, None],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
        },
    )
    return {
        part: sum(f.stat().st_size for f in (out / part).glob("*.safetensors"))
        for part in ("unet", "text_encoder", "vae")
    }


@torch.no_grad()
def quick_adherence(
    models: DemoModels, count: int, cfg: float, seed: int, device: torch.device
) -> dict[str, float]:
    """Accuracy on ``count`` held-out captions (Euler, 20 steps): a sanity figure for the model
    card, not the benchmark (``tests/benchmarks/bench_adherence.py``)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from nodes.demo.evaluate import score

    pipe = StableDiffusionPipeline(
        vae=models.vae,
        text_encoder=models.text_encoder,
        tokenizer=clip_tokenizer(),
        unet=models.unet,
        scheduler=EulerDiscreteScheduler.from_config(family_config("sd1", "scheduler")),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    rng = random.Random(seed)
    scenes = [sample_scene(rng, split="held_out") for _ in range(count)]
    results = []
    for i, scene in enumerate(scenes):
        image = pipe(
            caption(scene),
            height=64,
            width=64,
            num_inference_steps=20,
            guidance_scale=cfg,
            output_type="np",
            generator=torch.Generator(device).manual_seed(seed + i),
        ).images[0]
        results.append(score(image, scene))
    keys = ("background_ok", "color_ok", "shape_ok", "count_ok", "caption_ok")
    return {k: sum(bool(r[k]) for r in results) / len(results) for k in keys}


MODEL_CARD = """---
license: apache-2.0
library_name: diffusers
pipeline_tag: text-to-image
---

# nodeflow demo model

A small Stable Diffusion 1.x-architecture model (``StableDiffusionPipeline`` folder) trained from
scratch by ``nodes/demo/train_demo.py`` on procedurally drawn scenes (``nodes/demo/dataset.py``):
one to three circles, squares or triangles in eight colors on a plain background of another
color, 64x64 pixels, with exact captions such as "a large red circle on a blue background". It
draws only that world; it exists so nodeflow's main workflow makes a real picture with no
downloads and so prompt adherence can be measured by rule (``nodes/demo/evaluate.py``).

- Architecture: VAE downsampling by {vae_factor} (latents {latent}x{latent}x4), CLIP text encoder
  (real CLIP tokenizer, width {text_width}, {text_layers} layers), U-Net with cross-attention,
  block channels {unet_channels}.
- Parameters: U-Net {unet_params:,}, text encoder {text_params:,} (of which the token table
  {embed_params:,}), VAE {vae_params:,}. Files: U-Net and text encoder fp16, VAE fp32.
- Noise schedule: SD's (scaled_linear 0.00085-0.012, 1000 steps, epsilon); captions dropped to ""
  10% of the time, so classifier-free guidance works. Ships with SD's PNDM scheduler config.
- Data: generated on the fly, seed {seed}; (shape, color, background) triples with
  ``nodes.demo.dataset.is_held_out`` never appear in training.
- Training: {vae_steps} autoencoder steps, then {steps} diffusion steps at batch {batch_size}
  (lr {lr}, AdamW, EMA {ema}, Min-SNR-5) on {device} with {threads} threads; {minutes:.1f} minutes.
- Quick check on {eval_count} held-out captions at CFG {eval_cfg}: {adherence}

Reproduce:

```
{command}
```

License: Apache-2.0 (as nodeflow). The training data is generated by nodeflow's own code; the
tokenizer files are CLIP's (MIT, see ``nodes/assets/clip/LICENSE-open_clip``).
"""


def add_training_arguments(
    parser: argparse.ArgumentParser, *, steps: int, steps_help: str, vae_steps: int, threads: int
) -> None:
    """The arguments every demo trainer with an autoencoder stage takes (``train_demo``,
    ``train_sd3``): one spelling and one set of defaults for batch, rates, warm-up, EMA, seed
    and device, so their model cards' commands read alike."""
    parser.add_argument("--steps", type=int, default=steps, help=steps_help)
    parser.add_argument("--vae-steps", type=int, default=vae_steps, help="autoencoder steps first")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vae-batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--vae-warmup", type=int, default=50)
    parser.add_argument("--kl-weight", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay; 0 disables")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=threads, help="torch CPU threads")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--eval-samples", type=int, default=32, help="held-out check; 0 skips")
    parser.add_argument("--micro", action="store_true", help="the micro test architecture")
    parser.add_argument("--fp32", action="store_true", help="save everything in fp32")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the diffusers folder to write")
    add_training_arguments(
        parser, steps=5000, steps_help="diffusion (U-Net) steps", vae_steps=600, threads=2
    )
    parser.add_argument("--eval-cfg", type=float, default=4.0)
    parser.add_argument(
        "--resume", type=Path, help="continue a saved run's U-Net and text encoder (VAE kept)"
    )
    return parser.parse_args(argv)


def _log(message: str) -> None:
    print(message, flush=True)


def choose_device(name: str) -> torch.device:
    """``auto``: CUDA when there is one (training is many times faster there), else the CPU."""
    use_cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train and save; returns a summary (sizes, timings, quick adherence)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    torch.manual_seed(args.seed)
    sizes = ModelSizes.micro() if args.micro else ModelSizes()
    previous: dict[str, Any] | None = None
    if args.resume is not None:
        # Continue a finished run: the autoencoder (and so the latent space) stays as it is, and
        # the U-Net and text encoder train on a fresh stretch of the data stream.
        previous = json.loads((args.resume / "training_summary.json").read_text())
        sizes = ModelSizes(**{k: tuple(v) if isinstance(v, list) else v
                              for k, v in previous["sizes"].items()})  # fmt: skip
        models = load_base(args.resume, device)
        models.unet.requires_grad_(True)
        models.text_encoder.requires_grad_(True)
        args.vae_steps = 0
    else:
        models = build_models(sizes, args.seed).to(device)
    generator = torch.Generator(device).manual_seed(args.seed + (1 if previous else 0))
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if previous is not None:
        return _train_diffusion(args, sizes, models, generator, started, timings, previous, device)

    # Stage 1: the autoencoder, on plain and outlined pictures (the LoRA reuses it frozen).
    vae_batches = Batcher(args.seed + 100, style=None, dropout=0)
    optimizer = torch.optim.AdamW(models.vae.parameters(), lr=args.vae_lr, weight_decay=0)
    models.vae.train()
    stage = time.perf_counter()
    for step in range(args.vae_steps):
        for group in optimizer.param_groups:
            group["lr"] = args.vae_lr * lr_factor(step, args.vae_steps, args.vae_warmup)
        loss = vae_step(
            models.vae,
            vae_batches(args.vae_batch_size)[0].to(device),
            optimizer,
            args.kl_weight,
            generator,
        )
        if step % args.log_every == 0 or step == args.vae_steps - 1:
            per_step = (time.perf_counter() - stage) / (step + 1)
            _log(f"vae {step:6d}  loss {loss:.5f}  {per_step:.3f} s/step")
    timings["vae_s_per_step"] = (time.perf_counter() - stage) / max(1, args.vae_steps)
    models.vae.eval().requires_grad_(False)
    scale = latent_scale(models.vae, vae_batches, batches=8, size=args.vae_batch_size)
    models.vae.register_to_config(scaling_factor=scale)
    _log(f"latent scaling factor {scale:.5f}")
    return _train_diffusion(args, sizes, models, generator, started, timings, None, device)


def _train_diffusion(
    args: argparse.Namespace,
    sizes: ModelSizes,
    models: DemoModels,
    generator: torch.Generator,
    started: float,
    timings: dict[str, float],
    previous: dict[str, Any] | None,
    device: torch.device,
) -> dict[str, Any]:
    """Stage 2: text encoder and U-Net on the diffusion objective; then evaluate and save."""
    scheduler = noise_scheduler()
    batches = Batcher(args.seed + (400 if previous else 200))
    optimizer, parameters = adamw((models.unet, models.text_encoder), args.lr, args.weight_decay)
    ema = EMA(parameters, args.ema) if args.ema > 0 else None
    models.unet.train()
    models.text_encoder.train()
    stage = time.perf_counter()
    running = None
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps, args.warmup)
        pixels, ids, _ = batches(args.batch_size)
        loss = diffusion_step(
            models, scheduler, pixels.to(device), ids, optimizer, parameters, generator=generator
        )
        if ema is not None:
            ema.update()
        running = loss if running is None else 0.98 * running + 0.02 * loss
        if step % args.log_every == 0 or step == args.steps - 1:
            per_step = (time.perf_counter() - stage) / (step + 1)
            eta = per_step * (args.steps - step - 1) / 60
            _log(f"unet {step:6d}  loss {running:.5f}  {per_step:.3f} s/step  eta {eta:.1f} min")
    timings["unet_s_per_step"] = (time.perf_counter() - stage) / max(1, args.steps)
    if ema is not None:
        ema.copy_to(parameters)
    models.unet.eval()
    models.text_encoder.eval()
    minutes = (time.perf_counter() - started) / 60

    adherence: dict[str, float] = {}
    if args.eval_samples:
        adherence = quick_adherence(models, args.eval_samples, args.eval_cfg, args.seed, device)
        _log(f"held-out adherence at CFG {args.eval_cfg}: {adherence}")
    files = save_diffusers_folder(models, args.out, half=not args.fp32)
    summary = {
        "parameters": {
            "unet": parameter_count(models.unet),
            "text_encoder": parameter_count(models.text_encoder),
            "token_table": models.text_encoder.get_input_embeddings().weight.numel(),
            "vae": parameter_count(models.vae),
        },
        "file_bytes": files,
        "timings": timings,
        "minutes": minutes,
        "adherence": adherence,
        "args": {k: str(v) for k, v in vars(args).items()},
        "sizes": asdict(sizes),
    }
    if previous is not None:
        summary["resumed_from"] = previous
    write_json(args.out / "training_summary.json", summary)
    command = _command(summary["args"])
    if previous is not None:  # the first run, then this one
        command = _command(previous["args"]) + "\n" + command
        steps = f"{previous['args']['steps']} + {args.steps} (resumed)"
        minutes += previous["minutes"]
    else:
        steps = str(args.steps)
    (args.out / "README.md").write_text(
        MODEL_CARD.format(
            vae_factor=sizes.vae_factor,
            latent=64 // sizes.vae_factor,
            text_width=sizes.text_width,
            text_layers=sizes.text_layers,
            unet_channels=sizes.unet_channels,
            unet_params=summary["parameters"]["unet"],
            text_params=summary["parameters"]["text_encoder"],
            embed_params=summary["parameters"]["token_table"],
            vae_params=summary["parameters"]["vae"],
            seed=args.seed,
            vae_steps=previous["args"]["vae_steps"] if previous else args.vae_steps,
            steps=steps,
            batch_size=args.batch_size,
            lr=args.lr,
            ema=args.ema or "off",
            device=device.type,
            threads=args.threads,
            minutes=minutes,
            eval_count=args.eval_samples,
            eval_cfg=args.eval_cfg,
            adherence=json.dumps(adherence) if adherence else "not run",
            command=command,
        ),
        encoding="utf-8",
    )
    _log(json.dumps(summary["parameters"]) + " " + json.dumps(files))
    return summary


def reproducing_command(module: str, args: dict[str, str]) -> str:
    """The command line that reproduces a run of ``python -m module``, from its summary's
    ``args`` (flags as argparse spells them; booleans as bare flags)."""
    words = [f"python -m {module}"]
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if value == "True":
            words.append(flag)
        elif value not in ("False", "None"):
            words.append(f"{flag} {_flag_value(value)}")
    return " ".join(words)


def _flag_value(value: str) -> str:
    """A summary keeps a list option as its ``str`` (``"[4.0, 7.5]"``: resumes compare those
    strings, so the stored form stays); argparse's ``nargs`` wants the items apart."""
    if value.startswith("[") and value.endswith("]"):
        try:
            items = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
        if isinstance(items, list):
            return " ".join(str(item) for item in items)
    return value


def _command(args: dict[str, str]) -> str:
    return reproducing_command("nodes.demo.train_demo", args)


if __name__ == "__main__":
    main()
