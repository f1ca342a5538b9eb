"""The training loop on the pack's model sockets: deterministic, resumable, interruptible.

What it trains is a ``nodes.training.weights.Trained``: LoRA pairs (TrainLoRA, optionally on the
text encoder too) or a private copy of the whole U-Net (TrainUNet); the loop, its previews,
events, saving and resuming are one code for both. With a ``prior`` dataset (DreamBooth's prior
preservation, Ruiz et al. 2022, ``nodes.training.class_prior``) every step also takes a batch of
the base model's own class pictures, whose loss is added with ``prior_loss_weight``.

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

import dataclasses
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
from nodes.training.lora_layers import frozen
from nodes.training.previews import sample_prompts
from nodes.training.state import SavedState, atomic_save_tensors, load_state, save_state
from nodes.training.weights import Trained
from nodes.types import VAE, Conditioning, Guider, TextEncoder, UNet

Schedule = Literal["constant", "cosine"]
MAX_GRAD_NORM = 1.0
PRIOR_STREAM = 7919
"""Offset of the prior batches' permutation seeds from the instance batches' ones."""


@dataclass(frozen=True)
class TrainSettings:
    """What decides the trained weights (all of it must match for a state to be resumed)."""

    kind: Literal["lora", "full"] = "lora"
    rank: int = 4
    alpha: float = 4.0
    learning_rate: float = 1e-3
    schedule: Schedule = "constant"
    warmup_steps: int = 0
    steps: int = 500
    batch_size: int = 8
    seed: int = 0
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    te_targets: tuple[str, ...] = ()
    full_text_encoder: bool = False
    """TrainUNet only: the text encoder's every weight is trained too (on a copy)."""
    """Text-encoder modules given LoRA pairs too (none: the text encoder stays as it is)."""
    prior_loss_weight: float = 1.0
    """DreamBooth's lambda: the weight of the prior pictures' loss (when there is a prior)."""
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

    def resume_key(self, base: str, data: str, prior: str) -> dict[str, Any]:
        """The settings a state must have been made with to be continued. A constant schedule
        does not depend on the total, so a run can be extended; a cosine one does. Settings
        that change nothing are left out (a plain U-Net LoRA's key is what it was before
        text-encoder pairs, full fine-tuning and priors existed, so its states still resume)."""
        key = asdict(self) | {"base": base, "dataset": data, "targets": list(self.targets),
                              "te_targets": list(self.te_targets), "prior": prior}  # fmt: skip
        if self.schedule == "constant":
            key.pop("steps")
        unused = {"kind": "lora", "te_targets": [], "full_text_encoder": False, "prior": ""}
        for name, value in unused.items():
            if key[name] == value:
                key.pop(name)
        if not prior:
            key.pop("prior_loss_weight")
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
    """Where a run writes: the file users load (a LoRA or a U-Net), and its state folder."""

    file: Path
    state_dir: Path
    text_encoder_file: Path | None = None
    """Where a fully trained text encoder goes (TrainUNet with ``train_text_encoder``)."""


@dataclass
class Training:
    """One training run of ``make_trained()``'s weights on ``unet`` over ``dataset``.

    ``report(step, steps, loss, lr)`` is called after every step (raising there stops the run:
    an interrupt); ``preview(step, row)`` after each preview sampling (uint8 [prompts, H, W, 3]).
    """

    unet: UNet
    text_encoder: TextEncoder
    vae: VAE
    dataset: Dataset
    settings: TrainSettings
    checkpoint: Checkpoint
    make_trained: Callable[[], Trained]
    prior: Dataset | None = None
    """DreamBooth's class pictures by the base model, with their class prompts."""
    save_every: int = 100
    preview_every: int = 0
    prompts: tuple[str, ...] = ()
    preview_seed: int = 0
    sampling_steps: int = 20
    """Sampling steps of each preview picture."""
    resume: bool = True
    report: Callable[[int, int, float, float], None] = lambda s, n, loss, lr: None
    preview: Callable[[int, torch.Tensor], None] = lambda s, row: None

    trained: Any = field(init=False, default=None)
    optimizer: Any = field(init=False, default=None)
    step: int = field(init=False, default=0)
    losses: list[float] = field(init=False, default_factory=list)
    preview_steps: list[int] = field(init=False, default_factory=list)
    preview_rows: list[torch.Tensor] = field(init=False, default_factory=list)
    _latents: dict[tuple[str, int], tuple[torch.Tensor, ...]] = field(
        init=False, default_factory=dict
    )
    _captions: dict[str, Conditioning] = field(init=False, default_factory=dict)
    _noise: Any = field(init=False, default=None)
    """The training noise schedule (a DDPMScheduler of the model's config), made by ``run``."""

    # --- setup ---------------------------------------------------------------------------------

    def _resume_key(self) -> dict[str, Any]:
        base = self.unet.source + "".join(f"+{getattr(p, 'source', p)}" for p in self.unet.patches)
        prior = "" if self.prior is None else self.prior.identity
        return self.settings.resume_key(base, self.dataset.identity, prior)

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
        self.trained = self.make_trained()
        parameters = self.trained.parameters()
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
        self.trained.load_state_tensors(saved.pairs)
        self.optimizer.load_state_dict(saved.optimizer)
        self.step = saved.step
        self.losses = list(saved.losses)
        self.preview_steps = list(saved.preview_steps)
        if saved.previews is not None:
            self.preview_rows = list(saved.previews)

    # --- saving --------------------------------------------------------------------------------

    def save(self) -> None:
        """The file users load and then the state: each written whole or not at all."""
        made = json.dumps({"step": self.step, **self._resume_key()}, sort_keys=True)
        trained = self.trained
        atomic_save_tensors(trained.file_tensors(), self.checkpoint.file, **trained.metadata(made))
        extra = trained.text_encoder_file()
        if extra is not None and self.checkpoint.text_encoder_file is not None:
            tensors, metadata = extra
            atomic_save_tensors(tensors, self.checkpoint.text_encoder_file, **metadata)
        state = self.optimizer.state_dict()
        save_state(
            self.checkpoint.state_dir,
            SavedState(
                step=self.step,
                config=self._resume_key(),
                pairs=self.trained.state_tensors(),
                optimizer=state,
                preview_steps=self.preview_steps,
                previews=torch.stack(self.preview_rows) if self.preview_rows else None,
                losses=self.losses,
            ),
        )

    # --- one step ------------------------------------------------------------------------------

    def _posterior(self, key: tuple[str, int], pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The frozen VAE's posterior (mean, std) of one example, computed once per run."""
        found = self._latents.get(key)
        if found is None:
            model = self.vae.model
            with torch.no_grad():
                dist = model.encode(pixels[None].to(model.device, model.dtype)).latent_dist
            found = self._latents[key] = (dist.mean[0].float(), dist.std[0].float())
        return found

    def _conditioning(self, captions: list[str], device: Any) -> Conditioning:
        """The captions' prompt embeddings. A frozen encoder (with its patches) encodes each
        caption once, copied out of inference mode so autograd may save it; a trained one
        encodes the batch with gradients every step."""
        if self.trained.text_encoder_trained:
            return encode_trainable(self.trained.text_encoder, captions, device)
        for text in captions:
            if text not in self._captions:
                made = encode_text(self.trained.text_encoder, text, device)
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

    def _batch(self, step: int) -> tuple[list[tuple[str, int]], torch.Tensor, list[str]]:
        """Step ``step``'s examples: ``batch_size`` of the dataset, then as many prior
        pictures when there is a prior (each stream a seeded permutation of its own)."""
        settings = self.settings
        indices = batch_indices(len(self.dataset), settings.batch_size, settings.seed, step)
        pixels, captions = self.dataset.examples(indices)
        keys = [("instance", i) for i in indices]
        if self.prior is not None:
            seed = settings.seed + PRIOR_STREAM
            prior_indices = batch_indices(len(self.prior), settings.batch_size, seed, step)
            prior_pixels, prior_captions = self.prior.examples(prior_indices)
            pixels = torch.cat([pixels, prior_pixels])
            captions = captions + prior_captions
            keys += [("prior", i) for i in prior_indices]
        return keys, pixels, captions

    def loss(self, step: int) -> torch.Tensor:
        """The weighted denoising loss of step ``step``'s batch (plus the weighted prior loss)."""
        settings, unet = self.settings, self.trained.unet
        model = unet.model
        device, dtype = model.device, model.dtype
        generator = step_generator(settings.seed, step)
        keys, pixels, captions = self._batch(step)
        dropped = torch.rand(len(captions), generator=generator) < settings.caption_dropout
        captions = ["" if drop else text for drop, text in zip(dropped, captions, strict=True)]
        posteriors = [self._posterior(key, pixels[k]) for k, key in enumerate(keys)]
        mean = torch.stack([m for m, _ in posteriors])
        std = torch.stack([s for _, s in posteriors])
        drawn = torch.randn(mean.shape, generator=generator).to(device)
        latents = (mean + std * drawn) * self.vae.model.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator).to(device)
        total = int(self._noise.config.num_train_timesteps)
        timesteps = torch.randint(0, total, (len(keys),), generator=generator).to(device)
        noisy = self._noise.add_noise(latents, noise, timesteps)
        conditioning = self._conditioning(captions, device)
        if conditioning.embeds.dtype != dtype:  # a float32 U-Net copy beside a half encoder
            conditioning = dataclasses.replace(conditioning, embeds=conditioning.embeds.to(dtype))
        guider = Guider(unet, conditioning, conditioning, 1.0)
        inputs = unet.family.model_inputs(guider, [conditioning], noisy.to(dtype))
        with patched(model, unet.patches, "unet"):
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
        instances = settings.batch_size
        loss = per_example[:instances].mean()
        if self.prior is not None:
            loss = loss + settings.prior_loss_weight * per_example[instances:].mean()
        return loss

    # --- the run -------------------------------------------------------------------------------

    def _maybe_preview(self) -> None:
        due = self.preview_every and (
            self.step % self.preview_every == 0 or self.step == self.settings.steps
        )
        if not due or not self.prompts or self.step in self.preview_steps:
            return
        with torch.no_grad():
            trained = self.trained
            row = sample_prompts(trained.unet, trained.text_encoder, self.vae, self.prompts,
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
        models = (self.unet.model, *self.text_encoder.models, self.vae.model)
        with frozen(*models):
            self._setup()  # after freezing: a copied U-Net is made trainable on its own
            self._noise = DDPMScheduler.from_config(self.unet.scheduler_config)
            with self.trained.installed():
                self._train(Interrupted)

    def _train(self, interrupted: type[BaseException]) -> None:
        settings = self.settings
        parameters = self.trained.parameters()
        saved_at = self.step if self.checkpoint.file.is_file() else -1
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
        except interrupted:
            if saved_at != self.step:
                self.save()
            raise
        if saved_at != self.step:
            self.save()


def encode_trainable(text_encoder: TextEncoder, captions: list[str], device: Any) -> Conditioning:
    """The captions' last hidden states (or clip-skip layer) through a text encoder whose LoRA
    pairs train, with gradients: the tokens ``encode_text`` gives a plain prompt of up to 75
    tokens, the encoder's own patches applied."""
    from nodes.text import _hidden

    model = text_encoder.model
    tokens = text_encoder.tokenizer(
        captions,
        padding="max_length",
        max_length=text_encoder.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    use_mask = getattr(model.config, "use_attention_mask", False)
    mask = tokens.attention_mask.to(device) if use_mask else None
    with patched(model, text_encoder.patches, "text_encoder"):
        embeds, pooled = _hidden(model, tokens.input_ids.to(device), mask, text_encoder)
    return Conditioning(embeds=embeds, pooled=pooled)
