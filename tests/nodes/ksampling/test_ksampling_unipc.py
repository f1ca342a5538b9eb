"""ComfyUI's ``uni_pc`` / ``uni_pc_bh2`` programs against independent references.

- diffusers' ``UniPCMultistepScheduler`` (data prediction, order 3, lower orders at the ends,
  B(h) = h or e^h - 1) is the same algorithm in the same variance-preserving frame; given the
  same noise levels (ComfyUI's end at sigma 0.001 instead of 0) and the same model, it must
  reach the same latents;
- a model whose denoised prediction is a constant D has the closed-form probability-flow
  solution ``x(sigma) = D + (x_0 - D) sigma / sigma_0``, which UniPC's exponential integrator
  reaches exactly whatever its order.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nodes.ksampling.noise import SamplerNoise
from nodes.ksampling.schedules import ksampler_sigmas
from nodes.ksampling.sigmas import DiscreteSigmas
from nodes.ksampling.unipc import uni_pc, uni_pc_bh2

CONFIG = {
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
    "num_train_timesteps": 1000,
}  # fmt: skip


def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A smooth made-up model: what the sampler is fed does not need to be a U-Net."""
    return 0.8 * torch.tanh(x / (1 + sigma)) + 0.05 * sigma / (1 + sigma)


def run(program_fn: Any, x: torch.Tensor, sigmas: torch.Tensor, model: Any) -> torch.Tensor:
    program = program_fn(x, sigmas, SamplerNoise(0))
    try:
        point, sigma, _ = next(program)
        while True:
            point, sigma, _ = program.send(model(point, sigma))
    except StopIteration as finished:
        return finished.value


def diffusers_unipc(noise: torch.Tensor, sigmas: torch.Tensor, variant: str) -> torch.Tensor:
    from diffusers import UniPCMultistepScheduler

    steps = len(sigmas) - 1
    scheduler = UniPCMultistepScheduler(
        **CONFIG, solver_order=3, solver_type=variant, predict_x0=True, lower_order_final=True
    )
    scheduler.set_timesteps(steps)
    ends = sigmas.clone()
    ends[-1] = 0.001  # ComfyUI's end for UniPC
    scheduler.sigmas = ends
    sample = noise.clone()  # the variance-preserving frame: x / sqrt(1 + sigma_0^2)
    for i, timestep in enumerate(scheduler.timesteps):
        sigma = ends[i]
        scaled = sample * (sigma**2 + 1) ** 0.5
        eps = (scaled - denoiser(scaled, sigma)) / sigma
        sample = scheduler.step(eps, timestep, sample).prev_sample
    return sample * (1 + 0.001**2) ** 0.5


@pytest.mark.parametrize("schedule", ["normal", "karras"])
@pytest.mark.parametrize(("sampler", "variant"), [("uni_pc", "bh1"), ("uni_pc_bh2", "bh2")])
def test_uni_pc_equals_diffusers_unipc_on_the_same_noise_levels(sampler, variant, schedule):
    program_fn = {"uni_pc": uni_pc, "uni_pc_bh2": uni_pc_bh2}[sampler]
    sigmas = ksampler_sigmas(DiscreteSigmas.from_config(CONFIG), schedule, sampler, 8)
    assert len(sigmas) == 9 and float(sigmas[-1]) == 0
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    ours = run(program_fn, noise * (1 + sigmas[0] ** 2) ** 0.5, sigmas, denoiser)
    theirs = diffusers_unipc(noise, sigmas, variant)
    assert (ours - theirs).abs().max().item() <= 1e-4


@pytest.mark.parametrize("program_fn", [uni_pc, uni_pc_bh2])
def test_a_constant_prediction_is_followed_exactly(program_fn):
    sigmas = torch.tensor([14.6, 6.0, 2.5, 0.9, 0.3, 0.0], dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 4, 4, generator=generator, dtype=torch.float64) * 14.6
    target = torch.full_like(x0, 0.25)
    result = run(program_fn, x0, sigmas, lambda x, sigma: target)
    expected = target + (x0 - target) * 0.001 / 14.6
    assert (result - expected).abs().max().item() <= 1e-9  # float64 throughout


def test_uni_pc_evaluates_the_model_once_per_step():
    from nodes.ksampling.solvers import SOLVERS, evaluation_sigmas

    sigmas = ksampler_sigmas(DiscreteSigmas.from_config(CONFIG), "normal", "uni_pc", 5)
    per_step = evaluation_sigmas(SOLVERS["uni_pc"], sigmas)
    assert [len(step) for step in per_step] == [1] * 5
    assert [float(s[0]) for s in per_step] == [float(s) for s in sigmas[:-1]]
