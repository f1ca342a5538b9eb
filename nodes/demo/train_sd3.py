"""Train ``demo-sd3``: a toy-scale Stable Diffusion 3 (rectified-flow MM-DiT) from scratch on the
demo's procedural scenes.

Run from the repository root (not run by CI; see ``nodes/demo/TRAINING.md``)::

    python -m nodes.demo.train_sd3 --out build/demo-sd3 --threads 1

The components are SD3's real classes at toy size: a 16-channel ``AutoencoderKL`` without quant
convs whose ``shift_factor`` and ``scaling_factor`` are measured from the data (SD3's 0.0609 and
1.5305 were found the same way), the two CLIP text encoders with projection (CLIP-L's projection
the identity, as SD3 uses its pooled output as it is), the real CLIP tokenizer, and an
``SD3Transformer2DModel`` with 2x2 patches over the 16x16 latents of 64x64 pictures. T5 is left out
(``text_encoder_3=None``, which SD3 allows: its 256 tokens are zeros; see
``nodes.demo.sd3_null_tokens`` for how they are trained cheaply).

Two stages, as the U-Net demo (``nodes.demo.train_demo``, whose data stream, VAE step, EMA and
warm-up/cosine schedule are reused): the autoencoder alone, then the text encoders and the
transformer on the rectified-flow objective of the SD3 paper (Esser et al. 2024): x_t = (1 - t) x0
+ t noise, the model predicts noise - x0, t drawn logit-normal (m = 0, s = 1) so the middle of the
path, where the velocity is hardest to tell, gets the most steps. Captions are dropped to "" 10%
of the time for classifier-free guidance.

The run saves its whole state every ``--save-every`` steps (``nodes.demo.run_state``) and
continues from it when started again with the same ``--out``; the same arguments on the same
device and thread count give the same weights, interrupted or not.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import AutoencoderKL, SD3Transformer2DModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from nodes.clip_vocab import (
    BOS_TOKEN,
    EOS_TOKEN,
    MODEL_MAX_LENGTH,
    clip_tokenizer,
    clip_vocab,
    write_clip_tokenizer,
)
from nodes.demo.dataset import render, sample_scene
from nodes.demo.run_state import (
    load_run_state,
    module_tensors,
    optimizer_tensors,
    python_rng_state,
    restore_module,
    restore_optimizer,
    restore_python_rng,
    save_run_state,
)
from nodes.demo.sd3_null_tokens import NullTokenAttention, null_token_bias
from nodes.demo.train_demo import (
    EMA,
    Batcher,
    adamw,
    add_training_arguments,
    choose_device,
    lr_factor,
    parameter_count,
    reproducing_command,
    vae_step,
    write_json,
)
from nodes.single_file import family_config

__all__ = ["SD3Models", "SD3Sizes", "build_models", "flow_loss", "main", "save_sd3_folder"]

ACCURACY_KEYS = ("background_ok", "color_ok", "shape_ok", "count_ok", "caption_ok")
PROMPT_ZEROS = 256
"""The zero tokens that stand for T5 in the pipeline's default prompt (``max_sequence_length``)."""


@dataclass(frozen=True)
class SD3Sizes:
    """The architecture; the defaults are the shipped ``demo-sd3``'s, ``micro`` is for tests."""

    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_groups: int = 4
    latent_channels: int = 16
    clip_l_width: int = 32
    clip_g_width: int = 48
    """Wider than CLIP-L, as SD3's bigG (1280) is wider than its L (768)."""
    text_layers: int = 3
    """The transformer reads the penultimate layer's tokens (as SD3 does); the last feeds the
    pooled vector only."""
    layers: int = 4
    heads: int = 4
    head_dim: int = 32

    @classmethod
    def micro(cls) -> SD3Sizes:
        return cls(
            vae_channels=(8, 8),
            vae_groups=4,
            clip_l_width=8,
            clip_g_width=16,
            text_layers=2,
            layers=2,
            heads=2,
            head_dim=8,
        )

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def joint_width(self) -> int:
        """CLIP-L and CLIP-G side by side: without T5 nothing wider needs room."""
        return self.clip_l_width + self.clip_g_width


@dataclass
class SD3Models:
    vae: AutoencoderKL
    clip_l: CLIPTextModelWithProjection
    clip_g: CLIPTextModelWithProjection
    transformer: SD3Transformer2DModel

    def trained(self) -> list[nn.Module]:
        """What the second stage trains (the VAE is frozen by then)."""
        return [self.transformer, self.clip_l, self.clip_g]


def _clip(width: int, layers: int, openclip: bool, seed: int) -> CLIPTextModelWithProjection:
    vocab = clip_vocab()
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=width,
            intermediate_size=4 * width,
            num_attention_heads=max(1, width // 16),
            num_hidden_layers=layers,
            max_position_embeddings=MODEL_MAX_LENGTH,
            projection_dim=width,
            hidden_act="gelu" if openclip else "quick_gelu",
            layer_norm_eps=1e-5,
            bos_token_id=vocab[BOS_TOKEN],
            eos_token_id=vocab[EOS_TOKEN],
            pad_token_id=vocab["!" if openclip else EOS_TOKEN],
        )
    )


def build_models(sizes: SD3Sizes, seed: int) -> SD3Models:
    """Freshly initialised components, each seeded on its own."""
    real_vae = family_config("sd3", "vae")
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        block_out_channels=list(sizes.vae_channels),
        down_block_types=["DownEncoderBlock2D"] * len(sizes.vae_channels),
        up_block_types=["UpDecoderBlock2D"] * len(sizes.vae_channels),
        layers_per_block=1,
        latent_channels=sizes.latent_channels,
        norm_num_groups=sizes.vae_groups,
        scaling_factor=1.0,  # measured after the first stage, with the shift
        shift_factor=0.0,
        use_quant_conv=real_vae["use_quant_conv"],
        use_post_quant_conv=real_vae["use_post_quant_conv"],
    )
    clip_l = _clip(sizes.clip_l_width, sizes.text_layers, openclip=False, seed=seed + 1)
    # SD3 takes CLIP-L's pooled output as it is; single files carry no projection for it.
    nn.init.eye_(clip_l.text_projection.weight)
    clip_l.text_projection.requires_grad_(False)
    clip_g = _clip(sizes.clip_g_width, sizes.text_layers, openclip=True, seed=seed + 2)
    torch.manual_seed(seed + 3)
    latent = 64 // sizes.vae_factor
    transformer = SD3Transformer2DModel(
        sample_size=latent,
        patch_size=2,
        in_channels=sizes.latent_channels,
        out_channels=sizes.latent_channels,
        num_layers=sizes.layers,
        attention_head_dim=sizes.head_dim,
        num_attention_heads=sizes.heads,
        joint_attention_dim=sizes.joint_width,
        caption_projection_dim=sizes.heads * sizes.head_dim,
        pooled_projection_dim=sizes.joint_width,
        pos_embed_max_size=latent,  # 8x8 patches of 64x64 pictures; 128x128 would need 16
    )
    return SD3Models(vae, clip_l, clip_g, transformer)


class Prompts:
    """Token ids for both CLIP tokenizers (CLIP-G's pads with "!", as SD3's does), cached per
    caption."""

    def __init__(self) -> None:
        self.tokenizers = (clip_tokenizer(EOS_TOKEN), clip_tokenizer("!"))
        self.cache: dict[str, tuple[list[int], list[int]]] = {}

    def __call__(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        for text in captions:
            if text not in self.cache:
                ids = [
                    t(
                        text, padding="max_length", max_length=MODEL_MAX_LENGTH, truncation=True
                    ).input_ids
                    for t in self.tokenizers
                ]
                self.cache[text] = (ids[0], ids[1])
        return (
            torch.tensor([self.cache[t][0] for t in captions]),
            torch.tensor([self.cache[t][1] for t in captions]),
        )


def encode(
    models: SD3Models, ids_l: torch.Tensor, ids_g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SD3's prompt without T5: per-token = the penultimate hidden states of CLIP-L and CLIP-G
    side by side, plus one zero token (``nodes.demo.sd3_null_tokens``); pooled = their projected
    pooled outputs side by side."""
    out_l = models.clip_l(ids_l, output_hidden_states=True)
    out_g = models.clip_g(ids_g, output_hidden_states=True)
    tokens = torch.cat([out_l.hidden_states[-2], out_g.hidden_states[-2]], dim=-1)
    tokens = torch.cat([tokens, tokens.new_zeros(tokens.shape[0], 1, tokens.shape[-1])], dim=1)
    pooled = torch.cat([out_l.text_embeds, out_g.text_embeds], dim=-1)
    return tokens, pooled


def logit_normal(
    rows: int, generator: torch.Generator, device: torch.device, shift: float = 1.0
) -> torch.Tensor:
    """t = sigmoid(u), u ~ N(0, 1): the SD3 paper's logit-normal sampling with m = 0, s = 1,
    then moved toward noise by the paper's timestep shift, t' = shift t / (1 + (shift - 1) t)
    (``shift`` 1 leaves it; the same map the flow-matching Euler scheduler applies to its
    sigmas).

    Why a shift: the paper shifts for larger pictures because more pixels carry more redundant
    signal, so more noise is needed to destroy it. The demo's flat-colored scenes are the extreme
    case: a background color is one offset shared by all 256 latent positions, still readable at
    t = 0.94, where unshifted logit-normal sampling puts 1.4% of the steps."""
    t = torch.sigmoid(torch.randn(rows, generator=generator, device=device))
    return shift * t / (1 + (shift - 1) * t)


@torch.no_grad()
def to_latents(
    vae: AutoencoderKL, pixels: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Posterior samples, shifted and scaled as SD3's pipeline undoes them before decoding."""
    sample = vae.encode(pixels).latent_dist.sample(generator)
    return (sample - vae.config.shift_factor) * vae.config.scaling_factor


def flow_loss(
    models: SD3Models,
    attention: NullTokenAttention,
    pixels: torch.Tensor,
    ids: tuple[torch.Tensor, torch.Tensor],
    generator: torch.Generator,
    zeros: int = PROMPT_ZEROS,
    time_shift: float = 1.0,
) -> torch.Tensor:
    """The rectified-flow loss on a batch: MSE between the predicted velocity and noise - x0 at
    x_t = (1 - t) x0 + t noise, t logit-normal; the timestep is passed as t x 1000, as the
    flow-matching Euler scheduler gives it at inference; ``time_shift`` moves t toward noise
    (``logit_normal``)."""
    device = pixels.device
    x0 = to_latents(models.vae, pixels, generator)
    noise = torch.randn(x0.shape, generator=generator, device=device)
    t = logit_normal(x0.shape[0], generator, device, time_shift)
    shaped = t.view(-1, 1, 1, 1)
    noisy = (1 - shaped) * x0 + shaped * noise
    tokens, pooled = encode(models, ids[0].to(device), ids[1].to(device))
    image_tokens = (x0.shape[-2] // 2) * (x0.shape[-1] // 2)
    counts = torch.full((x0.shape[0],), zeros)
    attention.bias = null_token_bias(counts, image_tokens, tokens.shape[1]).to(device)
    try:
        velocity = models.transformer(
            hidden_states=noisy,
            timestep=t * 1000,
            encoder_hidden_states=tokens,
            pooled_projections=pooled,
            return_dict=False,
        )[0]
    finally:
        attention.bias = None
    return nn.functional.mse_loss(velocity.float(), noise - x0)


@torch.no_grad()
def latent_statistics(
    vae: AutoencoderKL, batcher: Batcher, batches: int, size: int, generator: torch.Generator
) -> tuple[float, float]:
    """``(shift_factor, scaling_factor)``: the mean of posterior samples and 1 / their std about
    it, the way SD3's VAE constants were measured."""
    device = next(vae.parameters()).device
    samples = torch.cat([
        vae.encode(batcher(size)[0].to(device)).latent_dist.sample(generator).flatten()
        for _ in range(batches)
    ])  # fmt: skip
    mean = float(samples.mean())
    return mean, float(1 / (samples - mean).std())


@torch.no_grad()
def reconstruction_accuracy(vae: AutoencoderKL, count: int, seed: int) -> dict[str, float]:
    """How the evaluator reads the VAE's reconstructions of held-out renders: the ceiling the
    VAE sets on adherence (TRAINING.md found the U-Net demo's decoder capped shape)."""
    from nodes.demo.evaluate import score

    rng = random.Random(seed)
    scenes = [sample_scene(rng, split="held_out") for _ in range(count)]
    pictures = np.stack([np.asarray(render(scene), dtype=np.float32) for scene in scenes])
    pixels = torch.from_numpy(pictures).permute(0, 3, 1, 2) / 127.5 - 1
    device = next(vae.parameters()).device
    decoded = vae.decode(vae.encode(pixels.to(device)).latent_dist.mode()).sample
    images = ((decoded.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    results = [score(image, scene) for image, scene in zip(images, scenes, strict=True)]
    return {k: sum(bool(r[k]) for r in results) / len(results) for k in ACCURACY_KEYS}


def save_sd3_folder(models: SD3Models, out: Path, *, half: bool = True) -> dict[str, int]:
    """Write a diffusers ``StableDiffusion3Pipeline`` folder as ``nodes.tiny_flow`` lays one out,
    without T5. Transformer and text encoders in fp16 (``half``), the VAE in fp32 (it is small,
    and a decoder is where fp16 overflows). Returns the bytes per component."""
    out.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    parts = {
        "transformer": models.transformer,
        "text_encoder": models.clip_l,
        "text_encoder_2": models.clip_g,
    }
    for name, module in parts.items():
        copy.deepcopy(module).to("cpu", dtype).save_pretrained(out / name)
    copy.deepcopy(models.vae).to("cpu", torch.float32).save_pretrained(out / "vae")
    write_clip_tokenizer(out / "tokenizer")
    write_clip_tokenizer(out / "tokenizer_2", pad_token="!")
    config = family_config("sd3", "scheduler")
    getattr(diffusers, config["_class_name"]).from_config(config).save_pretrained(out / "scheduler")
    write_json(
        out / "model_index.json",
        {
            "_class_name": "StableDiffusion3Pipeline",
            "_diffusers_version": diffusers.__version__,
            "scheduler": ["diffusers", config["_class_name"]],
            "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "text_encoder_3": [None, None],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "tokenizer_3": [None, None],
            "transformer": ["diffusers", "SD3Transformer2DModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "feature_extractor": [None, None],
            "image_encoder": [None, None],
        },
    )
    return {
        part: sum(f.stat().st_size for f in (out / part).glob("*.safetensors"))
        for part in ("transformer", "text_encoder", "text_encoder_2", "vae")
    }


def load_sd3_folder(folder: Path, device: torch.device) -> SD3Models:
    """A saved ``demo-sd3`` folder in fp32, frozen."""
    kwargs: dict[str, Any] = {"local_files_only": True}
    models = SD3Models(
        vae=AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32, **kwargs),
        clip_l=CLIPTextModelWithProjection.from_pretrained(
            folder / "text_encoder", dtype=torch.float32, **kwargs
        ),
        clip_g=CLIPTextModelWithProjection.from_pretrained(
            folder / "text_encoder_2", dtype=torch.float32, **kwargs
        ),
        transformer=SD3Transformer2DModel.from_pretrained(
            folder / "transformer", torch_dtype=torch.float32, **kwargs
        ),
    )
    for module in (models.vae, models.clip_l, models.clip_g, models.transformer):
        module.to(device).eval().requires_grad_(False)
    return models


def pipeline(models: SD3Models, shift: float) -> Any:
    """diffusers' ``StableDiffusion3Pipeline`` over the models (no T5), flow-matching Euler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    config = dict(family_config("sd3", "scheduler")) | {"shift": shift}
    pipe = StableDiffusion3Pipeline(
        transformer=models.transformer,
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(config),
        vae=models.vae,
        text_encoder=models.clip_l,
        tokenizer=clip_tokenizer(EOS_TOKEN),
        text_encoder_2=models.clip_g,
        tokenizer_2=clip_tokenizer("!"),
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def quick_adherence(
    models: SD3Models, count: int, cfg: float, shift: float, steps: int, seed: int
) -> dict[str, float]:
    """Accuracy on ``count`` held-out captions through diffusers' pipeline (the default 256
    zero tokens): a sanity figure for the model card; the benchmark is
    ``tests/benchmarks/bench_flow_vs_ddpm.py``."""
    from nodes.demo.dataset import caption
    from nodes.demo.evaluate import score

    pipe = pipeline(models, shift)
    rng = random.Random(seed)
    scenes = [sample_scene(rng, split="held_out") for _ in range(count)]
    results = []
    for i, scene in enumerate(scenes):
        image = pipe(
            caption(scene),
            negative_prompt="",
            height=64,
            width=64,
            num_inference_steps=steps,
            guidance_scale=cfg,
            output_type="np",
            generator=torch.Generator("cpu").manual_seed(seed + i),
        ).images[0]
        results.append(score(image, scene))
    return {k: sum(bool(r[k]) for r in results) / len(results) for k in ACCURACY_KEYS}


MODEL_CARD = """---
license: apache-2.0
library_name: diffusers
pipeline_tag: text-to-image
---

# nodeflow demo-sd3: a toy-scale Stable Diffusion 3

A small Stable Diffusion 3-architecture model (``StableDiffusion3Pipeline`` folder, and the same
weights as one original-layout file, ``demo-sd3.safetensors``) trained from scratch by
``nodes/demo/train_sd3.py`` on the U-Net demo's procedural scenes (``nodes/demo/dataset.py``):
one to three circles, squares or triangles in eight colors on a plain background, 64x64 pixels,
exact captions such as "a large red circle on a blue background". It draws only that world; it
exists so nodeflow's SD3 workflow (``workflows/sd3.json``) makes a real picture offline and so
rectified flow can be compared with the DDPM-trained U-Net demo on the same data.

- Architecture: ``SD3Transformer2DModel`` ({layers} joint blocks, {heads} heads of {head_dim},
  2x2 patches over {latent}x{latent}x16 latents: {tokens} image tokens); a 16-channel
  ``AutoencoderKL`` downsampling by {vae_factor}, no quant convs, ``shift_factor`` {shift:.5f} and
  ``scaling_factor`` {scale:.5f} measured from the data; CLIP-L (width {clip_l}) and CLIP-G (width
  {clip_g}) ``CLIPTextModelWithProjection`` with the real CLIP tokenizer (CLIP-L's projection is
  the identity, as SD3 uses it). **No T5**: ``text_encoder_3`` is None, so the prompt's T5 part is
  zeros (``max_sequence_length`` of them, 256 by default, as trained).
- Parameters: transformer {transformer:,}, CLIP-L {clip_l_params:,}, CLIP-G {clip_g_params:,}
  (most of both are the 49,408-token tables), VAE {vae_params:,}. Files: transformer and text
  encoders fp16, VAE fp32; {megabytes:.1f} MB for the folder.
- Objective: rectified flow (x_t = (1 - t) x0 + t noise, velocity target noise - x0), t
  logit-normal (m = 0, s = 1), as in the SD3 paper; captions dropped to "" 10% of the time so
  classifier-free guidance works. Ships with SD3's flow-matching Euler scheduler config (shift 3.0),
  which it is sampled with.
- Data: generated on the fly, seed {seed}; (shape, color, background) triples with
  ``nodes.demo.dataset.is_held_out`` never appear in training.
- Training: {vae_steps} autoencoder steps (batch {vae_batch}), then {steps} flow steps at batch
  {batch_size} (lr {lr}, AdamW, warm-up {warmup}, cosine, EMA {ema}) on {device} with {threads}
  thread(s); autoencoder {vae_minutes:.1f} minutes, flow stage {flow_minutes:.1f} minutes.{init}
- The VAE's own reconstructions of {recon_count} held-out renders read: {reconstruction}
- Quick check on {eval_count} held-out captions ({eval_steps} Euler steps, CFG {eval_cfg}, shift
  {eval_shift}): {adherence}

Reproduce (the run saves its state every few hundred steps; the same command continues it):

```
{command}
```

License: Apache-2.0 (as nodeflow). The training data is generated by nodeflow's own code; the
tokenizer files are CLIP's (MIT, see ``nodes/assets/clip/LICENSE-open_clip``).
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder (resumed if any)")
    add_training_arguments(
        parser, steps=4000, steps_help="flow (transformer) steps", vae_steps=1000, threads=1
    )
    parser.add_argument("--save-every", type=int, default=200)
    parser.add_argument("--eval-cfg", type=float, default=7.0)
    parser.add_argument("--eval-shift", type=float, default=3.0)
    parser.add_argument("--eval-steps", type=int, default=20)
    parser.add_argument(
        "--time-shift",
        type=float,
        default=1.0,
        help="the SD3 paper's timestep shift applied to the logit-normal training t "
        "(1: none, as the first demo-sd3 run; 3: the shift the model is sampled with)",
    )
    parser.add_argument(
        "--init",
        type=Path,
        help="a saved demo-sd3 folder: skip the autoencoder stage and start the flow stage from "
        "its weights (VAE, text encoders, transformer) with a fresh optimiser and EMA",
    )
    parser.add_argument(
        "--export",
        type=Path,
        help="write the saved state's EMA weights as a demo-sd3 folder here and stop (a "
        "checkpoint to evaluate or ship while the run goes on)",
    )
    parser.add_argument(
        "--stop-at",
        type=int,
        help="save and stop once the flow stage reaches this step (an interruption on purpose; "
        "the same command without it continues)",
    )
    return parser.parse_args(argv)


def _log(message: str) -> None:
    print(message, flush=True)


class Run:
    """One training run's mutable state: models, stage, step, optimiser, EMA and the random
    streams, saved and restored as a whole."""

    def __init__(self, args: argparse.Namespace, sizes: SD3Sizes, device: torch.device) -> None:
        self.args, self.sizes, self.device = args, sizes, device
        self.models = build_models(sizes, args.seed)
        self.stage, self.step = "vae", 0
        self.extra: dict[str, Any] = {}
        if args.init is not None:
            self.start_from(args.init)
        for module in (self.models.vae, *self.models.trained()):
            module.to(device)
        self.generator = torch.Generator(device).manual_seed(args.seed)
        self.vae_batches = Batcher(args.seed + 100, style="plain", dropout=0)
        self.batches = Batcher(args.seed + 200)
        self.prompts = Prompts()
        self.seconds: dict[str, float] = {"vae": 0.0, "flow": 0.0}
        self.vae_optimizer = torch.optim.AdamW(
            self.models.vae.parameters(), lr=args.vae_lr, weight_decay=0
        )
        self.optimizer, self.parameters = adamw(self.models.trained(), args.lr, args.weight_decay)
        self.ema = EMA(self.parameters, args.ema) if args.ema > 0 else None
        self.attention = NullTokenAttention()

    def start_from(self, folder: Path) -> None:
        """Load a saved folder's weights into the freshly built models (so their trainable flags
        stay as built) and go straight to the flow stage; the optimiser and EMA, made after
        this, start from these weights. The folder's architecture must be ``self.sizes``."""
        saved = load_sd3_folder(folder, torch.device("cpu"))
        for name in ("vae", "clip_l", "clip_g", "transformer"):
            try:
                getattr(self.models, name).load_state_dict(getattr(saved, name).state_dict())
            except RuntimeError as error:
                raise ValueError(f"--init {folder}: its {name} does not fit: {error}") from error
        self.models.vae.register_to_config(
            **{k: saved.vae.config[k] for k in ("scaling_factor", "shift_factor")}
        )
        self.stage = "flow"
        self.extra["init"] = str(folder)

    def save(self) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for name in ("vae", "clip_l", "clip_g", "transformer"):
            tensors |= module_tensors(name, getattr(self.models, name))
        optimizer = self.vae_optimizer if self.stage == "vae" else self.optimizer
        moments, steps = optimizer_tensors(optimizer)
        tensors |= moments
        if self.ema is not None:
            for i, shadow in enumerate(self.ema.shadow):
                tensors[f"ema.{i}"] = shadow.detach().cpu().contiguous()
        tensors["rng.noise"] = self.generator.get_state()
        meta = {
            "stage": self.stage,
            "step": self.step,
            "adam_steps": steps,
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "rng": {
                "vae": python_rng_state(self.vae_batches.rng),
                "flow": python_rng_state(self.batches.rng),
            },
            "seconds": self.seconds,
            "extra": self.extra,
            "vae_config": {
                k: self.models.vae.config[k] for k in ("scaling_factor", "shift_factor")
            },
            "args": {k: str(v) for k, v in vars(self.args).items()},
        }
        save_run_state(self.args.out / "state", tensors, meta)

    def restore(self) -> bool:
        saved = load_run_state(self.args.out / "state")
        if saved is None:
            return False
        tensors, meta = saved
        for name in ("vae", "clip_l", "clip_g", "transformer"):
            restore_module(name, getattr(self.models, name), tensors)
        self.stage, self.step = meta["stage"], int(meta["step"])
        self.models.vae.register_to_config(**meta["vae_config"])
        optimizer = self.vae_optimizer if self.stage == "vae" else self.optimizer
        restore_optimizer(optimizer, tensors, meta["adam_steps"])
        if self.ema is not None:
            for i, shadow in enumerate(self.ema.shadow):
                shadow.copy_(tensors[f"ema.{i}"])
            self.ema.updates = int(meta["ema_updates"])
        self.generator.set_state(tensors["rng.noise"])
        restore_python_rng(self.vae_batches.rng, meta["rng"]["vae"])
        restore_python_rng(self.batches.rng, meta["rng"]["flow"])
        self.seconds, self.extra = meta["seconds"], meta["extra"]
        return True

    def train_vae(self) -> None:
        """Stage 1: the autoencoder alone, with warm-up, cosine decay and clipping (without
        them the U-Net demo's collapsed to the mean picture), then its shift and scale."""
        args, vae = self.args, self.models.vae
        vae.train()
        started = time.perf_counter() - self.seconds["vae"]
        while self.step < args.vae_steps:
            for group in self.vae_optimizer.param_groups:
                group["lr"] = args.vae_lr * lr_factor(self.step, args.vae_steps, args.vae_warmup)
            pixels = self.vae_batches(args.vae_batch_size)[0].to(self.device)
            loss = vae_step(vae, pixels, self.vae_optimizer, args.kl_weight, self.generator)
            self.step += 1
            self.seconds["vae"] = time.perf_counter() - started
            if self.step % args.log_every == 0 or self.step == args.vae_steps:
                per_step = self.seconds["vae"] / self.step
                _log(f"vae {self.step:6d}  loss {loss:.5f}  {per_step:.3f} s/step")
            if self.step % args.save_every == 0 and self.step < args.vae_steps:
                self.save()
        vae.eval().requires_grad_(False)
        shift, scale = latent_statistics(
            vae, self.vae_batches, 8, args.vae_batch_size, self.generator
        )
        vae.register_to_config(shift_factor=shift, scaling_factor=scale)
        self.extra["reconstruction"] = reconstruction_accuracy(vae, 64, args.seed + 300)
        reconstruction = self.extra["reconstruction"]
        _log(f"latent shift {shift:.5f} scale {scale:.5f}; reconstructions {reconstruction}")
        self.stage, self.step = "flow", 0
        self.save()

    def train_flow(self) -> bool:
        """Stage 2: both CLIP encoders and the transformer on the rectified-flow loss; False when
        stopped early by ``--stop-at``."""
        args, models = self.args, self.models
        models.vae.eval().requires_grad_(False)
        models.transformer.set_attn_processor(self.attention)
        for module in models.trained():
            module.train()
        models.clip_l.text_projection.requires_grad_(False)
        started = time.perf_counter() - self.seconds["flow"]
        running = self.extra.get("running_loss")
        while self.step < args.steps:
            for group in self.optimizer.param_groups:
                group["lr"] = args.lr * lr_factor(self.step, args.steps, args.warmup)
            pixels, _, captions = self.batches(args.batch_size)
            loss = flow_loss(
                models,
                self.attention,
                pixels.to(self.device),
                self.prompts(captions),
                self.generator,
                time_shift=args.time_shift,
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            value = float(loss.detach())
            running = value if running is None else 0.98 * running + 0.02 * value
            self.extra["running_loss"] = running
            self.seconds["flow"] = time.perf_counter() - started
            if self.step % args.log_every == 0 or self.step == args.steps:
                per_step = self.seconds["flow"] / self.step
                eta = per_step * (args.steps - self.step) / 60
                timing = f"{per_step:.3f} s/step  eta {eta:.1f} min"
                _log(f"flow {self.step:6d}  loss {running:.5f}  {timing}")
            if self.step % args.save_every == 0 or self.step == args.steps:
                self.save()
            if args.stop_at is not None and self.step >= args.stop_at:
                self.save()
                return False
        if self.ema is not None:
            self.ema.copy_to(self.parameters)
        from diffusers.models.attention_processor import JointAttnProcessor2_0

        models.transformer.set_attn_processor(JointAttnProcessor2_0())
        for module in models.trained():
            module.eval().requires_grad_(False)
        return True


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Train (or continue) and save; returns the summary written to ``training_summary.json``,
    or None when ``--stop-at`` stopped the run before its end."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = choose_device(args.device)
    sizes = SD3Sizes.micro() if args.micro else SD3Sizes()
    run = Run(args, sizes, device)
    if run.restore():
        _log(f"resumed at {run.stage} step {run.step}")
    if args.export is not None:
        export(run, args.export)
        return None
    if run.stage == "vae":
        run.train_vae()
    if not run.train_flow():
        _log(f"stopped at flow step {run.step}; run the same command to continue")
        return None
    return finish(run)


def export(run: Run, folder: Path) -> dict[str, int]:
    """Write the run's current EMA weights (the weights it would ship) as a demo-sd3 folder,
    leaving its saved state as it is."""
    if run.stage != "flow" or run.step == 0:
        raise ValueError(f"{run.args.out}: no flow-stage state to export (at {run.stage} step "
                         f"{run.step})")  # fmt: skip
    if run.ema is not None:
        run.ema.copy_to(run.parameters)
    files = save_sd3_folder(run.models, folder, half=not run.args.fp32)
    _log(f"exported flow step {run.step} to {folder}: {json.dumps(files)}")
    return files


def _init_note(run: Run) -> str:
    """The model card's words for a run started with ``--init`` (empty otherwise): the
    autoencoder figures above are then the folder's, not this run's."""
    if "init" not in run.extra:
        return ""
    return (f"\n- Continued: the flow stage started from the weights of `{run.extra['init']}` "
            f"(no autoencoder stage in this run) with a fresh AdamW and EMA; training t "
            f"shifted by {run.args.time_shift}.")  # fmt: skip


def finish(run: Run) -> dict[str, Any]:
    """Evaluate, write the diffusers folder, the summary and the model card."""
    args, models, sizes = run.args, run.models, run.sizes
    args.stop_at = args.export = None  # not part of the command that reproduces the run
    adherence: dict[str, float] = {}
    if "reconstruction" not in run.extra:  # --init: the folder's VAE, measured here
        run.extra["reconstruction"] = reconstruction_accuracy(models.vae, 64, args.seed + 300)
    if args.eval_samples:
        adherence = quick_adherence(
            models, args.eval_samples, args.eval_cfg, args.eval_shift, args.eval_steps, args.seed
        )
        _log(f"held-out adherence: {adherence}")
    folder = args.out / "demo-sd3"
    files = save_sd3_folder(models, folder, half=not args.fp32)
    parameters = {
        "transformer": parameter_count(models.transformer),
        "text_encoder": parameter_count(models.clip_l),
        "text_encoder_2": parameter_count(models.clip_g),
        "vae": parameter_count(models.vae),
    }
    summary = {
        "parameters": parameters,
        "file_bytes": files,
        "seconds": run.seconds,
        "minutes": sum(run.seconds.values()) / 60,
        "reconstruction": run.extra.get("reconstruction", {}),
        "adherence": adherence,
        "vae": {k: models.vae.config[k] for k in ("scaling_factor", "shift_factor")},
        "args": {k: str(v) for k, v in vars(args).items()},
        "sizes": asdict(sizes),
    }
    write_json(folder / "training_summary.json", summary)
    latent = 64 // sizes.vae_factor
    (folder / "README.md").write_text(
        MODEL_CARD.format(
            layers=sizes.layers, heads=sizes.heads, head_dim=sizes.head_dim, latent=latent,
            tokens=(latent // 2) ** 2, vae_factor=sizes.vae_factor,
            shift=models.vae.config.shift_factor, scale=models.vae.config.scaling_factor,
            clip_l=sizes.clip_l_width, clip_g=sizes.clip_g_width,
            transformer=parameters["transformer"], clip_l_params=parameters["text_encoder"],
            clip_g_params=parameters["text_encoder_2"], vae_params=parameters["vae"],
            megabytes=sum(files.values()) / 2**20, seed=args.seed,
            vae_steps=args.vae_steps, vae_batch=args.vae_batch_size, steps=args.steps,
            batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, ema=args.ema or "off",
            device=run.device.type, threads=args.threads,
            vae_minutes=run.seconds["vae"] / 60, flow_minutes=run.seconds["flow"] / 60,
            recon_count=64, reconstruction=json.dumps(summary["reconstruction"]),
            eval_count=args.eval_samples, eval_steps=args.eval_steps, eval_cfg=args.eval_cfg,
            eval_shift=args.eval_shift, init=_init_note(run),
            adherence=json.dumps(adherence) if adherence else "not run",
            command=reproducing_command("nodes.demo.train_sd3", summary["args"]),
        ),
        encoding="utf-8",
    )  # fmt: skip
    _log(json.dumps(parameters) + " " + json.dumps(files))
    return summary


if __name__ == "__main__":
    main()
