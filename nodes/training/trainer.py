"""The LoRA training loop on the pack's model sockets: deterministic, resumable, interruptible.

Everything a step draws comes from a generator seeded by the run's seed and the step number
(which examples, caption dropout, the VAE posterior sample, the noise, the timesteps), so a run
resumed from the state saved at step k continues exactly as the straight run did: the LoRA bytes
are the same. The model is called through its family adapter (``Family.model_inputs`` /
``Family.predict``), as Denoise calls it, so the trainer has no family cases; the U-Net's own
patches (a LoRA loaded before this one) stay applied while it trains, and its weights are
frozen and never changed: the trained pairs ride on forward hooks only during the run.

The objective is the one the demo model was trained with (``nodes.demo.train_demo``): noise (or
v) prediction under the model's own noise schedule, with Min-SNR-gamma weighting.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from nodes.lora import patched
from nodes.text import encode_text
from nodes.training.dataset import Dataset
from nodes.training.lora_layers import LoraPair, attached, frozen, kohya_state, make_pairs
from nodes.training.previews import sample_prompts
from nodes.training.state import SavedState, atomic_save_tensors, load_state, save_state
from nodes.types import VAE, Conditioning, Guider, TextEncoder, UNet

Schedule = Literal["constant", "cosine"]
MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class LoraSettings:
    """What decides the trained weights (all of it must match for a state to be resumed)."""

    rank: int = 4
    alpha: float = 4.0
    learning_rate: float = 1e-3
    schedule: Schedule = "constant"
    warmup_steps: int = 0
    steps: int = 500
    batch_size: int = 8
    seed: int = 0
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    caption_dropout: float = 0.1
    """Captions replaced by "" (what a negative prompt encodes), so CFG keeps working."""
    min_snr_gamma: float = 5.0
    """Min-SNR weighting's gamma; 0 turns the weighting off."""

    def lr_factor(self, step: int) -> float:
        """Linear warm-up over ``warmup_steps``, then constant or a cosine decay to zero."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress))

    def resume_key(self, base: str, data: str) -> dict[str, Any]:
        """The settings a state must have been made with to be continued. A constant schedule
        does not depend on the total, so a run can be extended; a cosine one does."""
        key = asdict(self) | {"base": base, "dataset": data, "targets": list(self.targets)}
        if self.schedule == "constant":
            key.pop("steps")
        return key


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``'s draws: a function of the seed and the step alone."""
    return torch.Generator("cpu").manual_seed((seed * 1_000_003 + step + 1) % (2**63))


def batch_indices(size: int, batch: int, seed: int, step: int) -> list[int]:
    """The examples of step ``step``: a seeded permutation per epoch, read in order."""
    indices: list[int] = []
    position = step * batch
    while len(indices) < batch:
        epoch, offset = divmod(position, size)
        order = torch.randperm(size, generator=torch.Generator("cpu").manual_seed(seed + epoch))
        take = min(batch - len(indices), size - offset)
        indices.extend(int(i) for i in order[offset : offset + take])
        position += take
    return indices


class StateMismatch(ValueError):
    """A saved state was made with other settings or data than the run that would resume it."""


@dataclass
class Checkpoint:
    """Where a run writes: the LoRA file users load, and its resumable state folder."""

    lora_file: Path
    state_dir: Path


@dataclass
class LoraTraining:
    """One training run of a LoRA on ``unet`` over ``dataset``.

    ``report(step, steps, loss, lr)`` is called after every step (raising there stops the run:
    an interrupt); ``preview(step, row)`` after each preview sampling (uint8 [prompts, H, W, 3]).
    """

    unet: UNet
    text_encoder: TextEncoder
    vae: VAE
    dataset: Dataset
    settings: LoraSettings
    checkpoint: Checkpoint
    save_every: int = 100
    preview_every: int = 0
    prompts: tuple[str, ...] = ()
    preview_seed: int = 0
    sampling_steps: int = 20
    """Sampling steps of each preview picture."""
    resume: bool = True
    report: Callable[[int, int, float, float], None] = lambda s, n, loss, lr: None
    preview: Callable[[int, torch.Tensor], None] = lambda s, row: None

    pairs: dict[str, LoraPair] = field(init=False, default_factory=dict)
    optimizer: Any = field(init=False, default=None)
    step: int = field(init=False, default=0)
    losses: list[float] = field(init=False, default_factory=list)
    preview_steps: list[int] = field(init=False, default_factory=list)
    preview_rows: list[torch.Tensor] = field(init=False, default_factory=list)
    _latents: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(init=False, default_factory=dict)
    _captions: dict[str, Conditioning] = field(init=False, default_factory=dict)
    _noise: Any = field(init=False, default=None)
    """The training noise schedule (a DDPMScheduler of the model's config), made by ``run``."""

    # --- setup ---------------------------------------------------------------------------------

    def _resume_key(self) -> dict[str, Any]:
        base = self.unet.source + "".join(f"+{getattr(p, 'source', p)}" for p in self.unet.patches)
        return self.settings.resume_key(base, self.dataset.identity)

    def _check_model(self) -> None:
        config = self.unet.scheduler_config
        prediction = config.get("prediction_type", "epsilon")
        if prediction not in ("epsilon", "v_prediction") or "beta_start" not in config:
            raise ValueError(
                f"TrainLoRA trains noise- or v-prediction diffusion models; "
                f"{self.unet.source or 'this model'} predicts {prediction!r} under another schedule"
            )
        size, factor = self.dataset.size, self.unet.latent_scale
        if size % factor:
            raise ValueError(f"dataset size {size} is not a multiple of the latent scale {factor}")

    def _setup(self) -> None:
        settings = self.settings
        self.pairs = make_pairs(
            self.unet.model, settings.targets, settings.rank, settings.alpha, settings.seed
        )
        parameters = [p for pair in self.pairs.values() for p in (pair.down, pair.up)]
        self.optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=0.0)
        saved = load_state(self.checkpoint.state_dir) if self.resume else None
        if saved is not None:
            self._restore(saved)

    def _restore(self, saved: SavedState) -> None:
        key = self._resume_key()
        if saved.config != key:
            differ = sorted(k for k in key.keys() | saved.config.keys()
                            if key.get(k) != saved.config.get(k))  # fmt: skip
            raise StateMismatch(
                f"{self.checkpoint.state_dir} was trained with other settings ({', '.join(differ)}"
                "); use another name, or resume false to start over"
            )
        if saved.step > self.settings.steps:
            raise StateMismatch(
                f"{self.checkpoint.state_dir} is already at step {saved.step}, past steps "
                f"{self.settings.steps}; use another name, or resume false to start over"
            )
        with torch.no_grad():
            for name, pair in self.pairs.items():
                pair.down.copy_(saved.pairs[f"{name}.down"])
                pair.up.copy_(saved.pairs[f"{name}.up"])
        self.optimizer.load_state_dict(saved.optimizer)
        self.step = saved.step
        self.losses = list(saved.losses)
        self.preview_steps = list(saved.preview_steps)
        if saved.previews is not None:
            self.preview_rows = list(saved.previews)

    # --- saving --------------------------------------------------------------------------------

    def save(self) -> None:
        """The LoRA file (kohya layout) and then the state: each written whole or not at all."""
        # One metadata key: safetensors writes several in a per-call random order, and the
        # same training must give the same bytes.
        made = json.dumps({"step": self.step, **self._resume_key()}, sort_keys=True)
        atomic_save_tensors(kohya_state(self.pairs), self.checkpoint.lora_file,
                            nodeflow_training=made)  # fmt: skip
        state = self.optimizer.state_dict()
        save_state(
            self.checkpoint.state_dir,
            SavedState(
                step=self.step,
                config=self._resume_key(),
                pairs={
                    f"{n}.{w}": getattr(p, w) for n, p in self.pairs.items() for w in ("down", "up")
                },
                optimizer=state,
                preview_steps=self.preview_steps,
                previews=torch.stack(self.preview_rows) if self.preview_rows else None,
                losses=self.losses,
            ),
        )

    # --- one step ------------------------------------------------------------------------------

    def _posterior(self, index: int, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen VAE's posterior (mean, std) of one example, computed once per run."""
        found = self._latents.get(index)
        if found is None:
            model = self.vae.model
            with torch.no_grad():
                dist = model.encode(pixels[None].to(model.device, model.dtype)).latent_dist
            found = self._latents[index] = (dist.mean[0].float(), dist.std[0].float())
        return found

    def _conditioning(self, captions: list[str], device: Any) -> Conditioning:
        """The captions' prompt embeddings (frozen encoder, with its patches), each encoded
        once; copied out of inference mode so autograd may save them."""
        for text in captions:
            if text not in self._captions:
                made = encode_text(self.text_encoder, text, device)
                self._captions[text] = Conditioning(
                    embeds=made.embeds.clone(),
                    pooled=None if made.pooled is None else made.pooled.clone(),
                )
        rows = [self._captions[text] for text in captions]
        pooled = [c.pooled for c in rows]
        return Conditioning(
            embeds=torch.cat([c.embeds for c in rows]),
            pooled=None if any(p is None for p in pooled) else torch.cat(pooled),
        )

    def loss(self, step: int) -> torch.Tensor:
        """The weighted denoising loss of step ``step``'s batch."""
        settings, unet = self.settings, self.unet
        model = unet.model
        device, dtype = model.device, model.dtype
        generator = step_generator(settings.seed, step)
        indices = batch_indices(len(self.dataset), settings.batch_size, settings.seed, step)
        pixels, captions = self.dataset.examples(indices)
        dropped = torch.rand(len(captions), generator=generator) < settings.caption_dropout
        captions = ["" if drop else text for drop, text in zip(dropped, captions, strict=True)]
        posteriors = [self._posterior(i, pixels[k]) for k, i in enumerate(indices)]
        mean = torch.stack([m for m, _ in posteriors])
        std = torch.stack([s for _, s in posteriors])
        drawn = torch.randn(mean.shape, generator=generator).to(device)
        latents = (mean + std * drawn) * self.vae.model.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator).to(device)
        total = int(self._noise.config.num_train_timesteps)
        timesteps = torch.randint(0, total, (len(indices),), generator=generator).to(device)
        noisy = self._noise.add_noise(latents, noise, timesteps)
        conditioning = self._conditioning(captions, device)
        guider = Guider(unet, conditioning, conditioning, 1.0)
        inputs = unet.family.model_inputs(guider, [conditioning], noisy.to(dtype))
        prediction = unet.family.predict(unet, noisy.to(dtype), timesteps, inputs).float()
        prediction_type = self._noise.config.prediction_type
        target = (
            noise
            if prediction_type == "epsilon"
            else (self._noise.get_velocity(latents, noise, timesteps))
        )
        per_example = ((prediction - target) ** 2).mean(dim=tuple(range(1, prediction.ndim)))
        if settings.min_snr_gamma > 0:
            alphas = self._noise.alphas_cumprod.to(device)[timesteps]
            snr = alphas / (1 - alphas)
            clipped = torch.clamp(snr, max=settings.min_snr_gamma)
            per_example = per_example * (clipped / snr if prediction_type == "epsilon"
                                         else clipped / (snr + 1))  # fmt: skip
        return per_example.mean()

    # --- the run -------------------------------------------------------------------------------

    def _maybe_preview(self) -> None:
        due = self.preview_every and (
            self.step % self.preview_every == 0 or self.step == self.settings.steps
        )
        if not due or not self.prompts or self.step in self.preview_steps:
            return
        with torch.no_grad():
            row = sample_prompts(self.unet, self.text_encoder, self.vae, self.prompts,
                                 self.dataset.size, self.preview_seed,
                                 self.sampling_steps)  # fmt: skip
        self.preview_steps.append(self.step)
        self.preview_rows.append(row)
        self.preview(self.step, row)

    def run(self) -> None:
        """Train to ``settings.steps`` (from the saved state when there is one), saving every
        ``save_every`` steps, at the end, and when interrupted between steps."""
        from diffusers import DDPMScheduler

        from nodeflow.context import Interrupted

        self._check_model()
        self._setup()
        self._noise = DDPMScheduler.from_config(self.unet.scheduler_config)
        settings = self.settings
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        saved_at = self.step if self.checkpoint.lora_file.is_file() else -1
        models = (self.unet.model, self.text_encoder.model, self.vae.model)
        with frozen(*models), attached(self.unet.model, self.pairs), \
                patched(self.unet.model, self.unet.patches, "unet"):  # fmt: skip
            try:
                self._maybe_preview()
                while self.step < settings.steps:
                    factor = settings.lr_factor(self.step)
                    for group in self.optimizer.param_groups:
                        group["lr"] = settings.learning_rate * factor
                    with torch.enable_grad():
                        loss = self.loss(self.step)
                        self.optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                    torch.nn.utils.clip_grad_norm_(parameters, MAX_GRAD_NORM)
                    self.optimizer.step()
                    self.step += 1
                    self.losses.append(float(loss.detach()))
                    self._maybe_preview()  # before saving, so a saved state has its row
                    if self.save_every and self.step % self.save_every == 0:
                        self.save()
                        saved_at = self.step
                    self.report(self.step, settings.steps, self.losses[-1],
                                settings.learning_rate * factor)  # fmt: skip
            except Interrupted:
                if saved_at != self.step:
                    self.save()
                raise
            if saved_at != self.step:
                self.save()
