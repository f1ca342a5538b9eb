"""The demo trainers' objectives (``nodes.demo.train_demo``): SD 1.x's epsilon schedule, and Lin
et al.'s zero-terminal-SNR v-prediction, each checked against its paper's formulas written out
here rather than against the scheduler methods the trainer calls."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from objective_bases import V_ZERO_SNR_KEYS, edit_scheduler_config

from nodes.demo.train_demo import (
    ModelSizes,
    build_models,
    diffusion_loss,
    noise_scheduler,
    objective_of,
    scheduler_overrides,
)
from nodes.loaders import demo_model
from nodes.tiny import family_config


def test_the_zero_snr_schedule_ends_in_pure_noise_and_keeps_sd_s_first_steps() -> None:
    sd, zero = noise_scheduler(), noise_scheduler("v-zero-snr")
    assert sd.config.prediction_type == "epsilon"
    assert sd.alphas_cumprod[-1].item() == pytest.approx(0.0047, abs=1e-4)  # SD's leak at t=999
    assert zero.config.prediction_type == "v_prediction"
    assert zero.alphas_cumprod[-1].item() == 0.0
    # Lin et al.'s rescale keeps the first step's sqrt(alpha_bar) and shifts and scales the rest
    first_sd, last_sd = sd.alphas_cumprod[0].sqrt(), sd.alphas_cumprod[-1].sqrt()
    expected = (sd.alphas_cumprod.sqrt() - last_sd) * first_sd / (first_sd - last_sd)
    torch.testing.assert_close(zero.alphas_cumprod.sqrt(), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="unknown objective 'x'"):
        scheduler_overrides("x")


@dataclass
class WrittenOut:
    """A micro model's batch and its per-picture squared error on the objective's target, noised
    and computed from the formulas here, not by the trainer's scheduler calls."""

    models: Any
    scheduler: Any
    pixels: torch.Tensor
    ids: torch.Tensor
    noise: torch.Tensor
    latents: torch.Tensor
    target: torch.Tensor
    per_sample: torch.Tensor
    snr: torch.Tensor
    timesteps: torch.Tensor

    def loss(self, **weights: Any) -> torch.Tensor:
        """``diffusion_loss`` on the same batch, noise and timesteps, with these weightings."""
        return diffusion_loss(
            self.models, self.scheduler, self.pixels, self.ids,
            generator=torch.Generator().manual_seed(5), timesteps=self.timesteps,
            noise=self.noise, **weights,
        )  # fmt: skip


def written_out(objective: str, timesteps: list[int]) -> WrittenOut:
    torch.manual_seed(0)
    models = build_models(ModelSizes.micro(), seed=2)
    scheduler = noise_scheduler(objective)
    n = len(timesteps)
    pixels, ids = torch.rand(n, 3, 32, 32) * 2 - 1, torch.randint(0, 1000, (n, 77))
    steps, noise = torch.tensor(timesteps), torch.randn(n, 4, 16, 16)
    with torch.no_grad():
        latents = models.vae.encode(pixels).latent_dist.sample(torch.Generator().manual_seed(5))
        latents = latents * models.vae.config.scaling_factor
        a = scheduler.alphas_cumprod[steps].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        context = models.text_encoder(ids)[0]
        prediction = models.unet(noisy, steps, encoder_hidden_states=context).sample
        # epsilon: the noise; v (Salimans & Ho): sqrt(a) * noise - sqrt(1 - a) * x0
        target = noise if objective == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * latents
        per_sample = ((prediction - target) ** 2).mean(dim=(1, 2, 3))
    snr = a.flatten() / (1 - a.flatten())
    return WrittenOut(
        models, scheduler, pixels, ids, noise, latents, target, per_sample, snr, timesteps=steps
    )


@pytest.mark.parametrize("objective", ["epsilon", "v-zero-snr"])
def test_the_loss_is_the_objective_s_target_under_min_snr(objective: str) -> None:
    batch = written_out(objective, [10, 999])
    snr = batch.snr
    weight = snr.clamp(max=5.0) / (snr if objective == "epsilon" else snr + 1)
    with torch.no_grad():
        for gamma, expected in (
            (5.0, (batch.per_sample * weight).mean()), (None, batch.per_sample.mean())
        ):  # fmt: skip
            torch.testing.assert_close(batch.loss(snr_gamma=gamma), expected, rtol=1e-5, atol=1e-7)
    if objective == "v-zero-snr":  # at SNR 0 the target is the clean latents, negated
        torch.testing.assert_close(batch.target[1], -batch.latents[1])


def _scheduler_folder(root: Path, config: dict) -> Path:
    (root / "scheduler").mkdir(parents=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    return root


def test_the_objective_is_read_from_the_model_folder(tmp_path: Path) -> None:
    assert objective_of(demo_model()) == "epsilon"  # the shipped demo (v2b)
    sd = {k: v for k, v in family_config("sd1", "scheduler").items() if k != "prediction_type"}
    assert objective_of(_scheduler_folder(tmp_path / "no-key", sd)) == "epsilon"  # the default
    zero = _scheduler_folder(
        tmp_path / "v", sd | V_ZERO_SNR_KEYS | {"_class_name": "DDIMScheduler"}
    )
    assert objective_of(zero) == "v-zero-snr"
    # the timestep spacing is a sampling choice: it does not change what the model was taught
    edit_scheduler_config(zero, {"timestep_spacing": "leading"})
    assert objective_of(zero) == "v-zero-snr"


@pytest.mark.parametrize(
    "changes, drop, key",
    [
        ({"prediction_type": "v_prediction"}, (), "rescale_betas_zero_snr False"),
        ({"rescale_betas_zero_snr": True}, (), "prediction_type 'epsilon'"),
        ({"prediction_type": "sample"}, (), "prediction_type 'sample'"),
        (V_ZERO_SNR_KEYS | {"prediction_type": "epsilon"}, (), "rescale_betas_zero_snr True"),
        ({"beta_schedule": "linear"}, (), "beta_schedule is 'linear'"),
        ({"beta_end": 0.02}, (), "beta_end is 0.02"),
        ({"num_train_timesteps": 500}, (), "num_train_timesteps is 500"),
        ({}, ("beta_start",), "beta_start is None"),
        ({"trained_betas": [0.1] * 1000}, (), "trained_betas is set"),
    ],
)
def test_a_config_the_trainers_do_not_handle_is_refused_naming_file_and_key(
    tmp_path: Path, changes: dict, drop: tuple, key: str
) -> None:
    folder = _scheduler_folder(tmp_path, family_config("sd1", "scheduler"))
    path = edit_scheduler_config(folder, changes, drop)
    with pytest.raises(ValueError, match=key) as refused:
        objective_of(folder)
    assert str(path) in str(refused.value)


def test_a_folder_without_a_scheduler_config_is_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file") as refused:
        objective_of(tmp_path)
    assert str(tmp_path / "scheduler" / "scheduler_config.json") in str(refused.value)


def test_v_gamma_caps_the_nearly_noiseless_steps_and_keeps_the_noisy_ones_plain() -> None:
    """``v_gamma``: the v loss times min(1, gamma / (SNR + 1)), the weight written out here."""
    batch = written_out("v-zero-snr", [10, 600, 999])
    weight = torch.minimum(torch.ones(3), 5.0 / (batch.snr + 1))
    assert weight[0] < 0.06 and weight[1] == 1.0 and weight[2] == 1.0  # t=10 capped only
    with torch.no_grad():
        got = batch.loss(snr_gamma=None, v_gamma=5.0)
        torch.testing.assert_close(got, (batch.per_sample * weight).mean(), rtol=1e-5, atol=1e-7)
        models, pixels, ids = batch.models, batch.pixels, batch.ids
        with pytest.raises(ValueError, match="not both"):
            diffusion_loss(models, batch.scheduler, pixels, ids, snr_gamma=5.0, v_gamma=5.0)
        with pytest.raises(ValueError, match="predicts epsilon"):
            diffusion_loss(models, noise_scheduler(), pixels, ids, snr_gamma=None, v_gamma=5.0)


def test_each_training_objective_has_the_name_lora_files_use() -> None:
    """``nodes.lora.OBJECTIVES`` (what LoadLoRA checks) and ``scheduler_overrides`` (what the
    trainers noise with) are one mapping: each objective's config reads back as its name."""
    from nodes.demo.train_demo import OBJECTIVES
    from nodes.lora import OBJECTIVES as LORA_OBJECTIVES
    from nodes.lora import config_objective

    assert set(OBJECTIVES) == set(LORA_OBJECTIVES)
    for objective in OBJECTIVES:
        config = family_config("sd1", "scheduler") | scheduler_overrides(objective)
        assert config_objective(config) == objective
