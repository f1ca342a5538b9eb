"""Every ComfyUI sampler x schedule pair equals k-diffusion's sampler on the same tiny model,
schedule, noise and guidance (latents within 1e-4).

The reference side is written here, independently of ``nodes/``: k-diffusion's
``DiscreteEpsDDPMDenoiser`` (quantized timesteps, as ComfyUI rounds a sigma to its nearest
training timestep) wraps the diffusers U-Net, guidance is ComfyUI's (on the denoised
predictions), the first noise is a seeded CPU ``torch.randn`` scaled by sqrt(1 + sigma_0^2),
ancestral noise comes from a CPU generator seeded with seed + 1, SDE noise from k-diffusion's
Brownian tree seeded with the seed. k-diffusion has the normal, karras and exponential
schedules; the other four are computed here from their definitions in ComfyUI's samplers.py.
"""

from __future__ import annotations

import math
from typing import Any

import kdiffusion_shim
import numpy as np
import pytest
import torch
from scipy import stats

from nodeflow.builder import WorkflowBuilder

TOLERANCE = 1e-4
SCALE = 7.5
STEPS = 4
PROMPT, NEGATIVE = "a red circle on a blue background", "blurry"
SIZE = 32

K_SAMPLERS = {
    "euler": "sample_euler",
    "euler_ancestral": "sample_euler_ancestral",
    "heun": "sample_heun",
    "dpm_2": "sample_dpm_2",
    "dpm_2_ancestral": "sample_dpm_2_ancestral",
    "lms": "sample_lms",
    "dpmpp_2m": "sample_dpmpp_2m",
    "dpmpp_sde": "sample_dpmpp_sde",
    "dpmpp_2m_sde": "sample_dpmpp_2m_sde",
    "dpmpp_3m_sde": "sample_dpmpp_3m_sde",
    "ddim": "sample_euler",  # ComfyUI's ddim is k-diffusion's Euler
}
ANCESTRAL = {"euler_ancestral", "dpm_2_ancestral"}
BROWNIAN = {"dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde"}
DROPS_PENULTIMATE = {"dpm_2", "dpm_2_ancestral"}
SCHEDULES = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta"]


@pytest.fixture(scope="module")
def k() -> Any:
    return kdiffusion_shim.load()


@pytest.fixture(scope="module")
def denoiser(k, pipe) -> Any:
    """k-diffusion's discrete eps denoiser over the tiny U-Net, sigmas held as ComfyUI holds them
    (computed in float64, stored in float32)."""
    config = pipe.scheduler.config
    assert config.beta_schedule == "scaled_linear"
    betas = (
        torch.linspace(
            config.beta_start**0.5, config.beta_end**0.5, config.num_train_timesteps,
            dtype=torch.float64,
        ) ** 2
    )  # fmt: skip
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)

    class UNetEps(k.external.DiscreteEpsDDPMDenoiser):
        def get_eps(self, x, t, cond):
            return self.inner_model(x, t, encoder_hidden_states=cond).sample

    wrapped = UNetEps(pipe.unet, alphas_cumprod, quantize=True)
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    wrapped.register_buffer("sigmas", sigmas.float())
    wrapped.register_buffer("log_sigmas", sigmas.log().float())
    return wrapped


def reference_schedule(k, denoiser, name: str, steps: int) -> Any:
    table = denoiser.sigmas
    if name == "normal":
        return denoiser.get_sigmas(steps)
    if name == "karras":
        return k.sampling.get_sigmas_karras(
            steps, float(denoiser.sigma_min), float(denoiser.sigma_max)
        )
    if name == "exponential":
        return k.sampling.get_sigmas_exponential(
            steps, float(denoiser.sigma_min), float(denoiser.sigma_max)
        )
    if name == "sgm_uniform":  # steps+1 evenly spaced timesteps from the top, the last left out
        ts = torch.linspace(len(table) - 1, 0, steps + 1)[:-1]
        return torch.tensor([float(denoiser.t_to_sigma(t)) for t in ts] + [0.0])
    if name == "simple":  # every (1000 / steps)-th sigma from the top
        picks = [float(table[-(1 + int(i * len(table) / steps))]) for i in range(steps)]
        return torch.tensor([*picks, 0.0])
    if name == "ddim_uniform":  # timesteps 1, 1 + 1000 // steps, ... reversed, then 0
        picks = [float(table[t]) for t in range(1, len(table), len(table) // steps)]
        return torch.tensor([*picks[::-1], 0.0])
    if name == "beta":  # Beta(0.6, 0.6) quantiles of the timesteps, repeats kept once
        quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
        ts = np.rint(stats.beta.ppf(quantiles, 0.6, 0.6) * (len(table) - 1)).astype(int)
        unique = [t for i, t in enumerate(ts) if i == 0 or t != ts[i - 1]]
        return torch.tensor([float(table[t]) for t in unique] + [0.0])
    raise AssertionError(name)


def comfy_sigmas(k, denoiser, schedule: str, sampler: str, steps: int) -> Any:
    """KSampler's rule: dpm_2 samplers get a step more, then lose the sigma before the 0."""
    if sampler in DROPS_PENULTIMATE:
        sigmas = reference_schedule(k, denoiser, schedule, steps + 1)
        return torch.cat([sigmas[:-2], sigmas[-1:]])
    return reference_schedule(k, denoiser, schedule, steps)


def reference_latents(
    k, denoiser, pipe, sampler: str, sigmas: Any, seed: int, start: Any = None,
    add_noise: bool = True,
) -> Any:  # fmt: skip
    cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE)
    shape = (1, pipe.unet.config.in_channels, SIZE // pipe.vae_scale_factor,
             SIZE // pipe.vae_scale_factor)  # fmt: skip
    noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
    sigma_max = float(denoiser.sigma_max)
    first = float(sigmas[0])
    if math.isclose(first, sigma_max, rel_tol=1e-5) or first > sigma_max:
        scale = torch.sqrt(1.0 + sigmas[0] ** 2.0)
    else:
        scale = sigmas[0]
    x = noise * scale if add_noise else torch.zeros(shape)
    if start is not None:
        x = x + start

    def model(x, sigma):
        out = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=torch.cat([uncond, cond]))
        negative, positive = out.chunk(2)
        return negative + (positive - negative) * SCALE

    extra: dict[str, Any] = {}
    if sampler in ANCESTRAL:
        generator = torch.Generator("cpu").manual_seed(seed + 1)
        extra["noise_sampler"] = lambda s, s_next: torch.randn(shape, generator=generator)
    if sampler in BROWNIAN:
        positive = sigmas[sigmas > 0]
        extra["noise_sampler"] = k.sampling.BrownianTreeNoiseSampler(
            x, positive.min(), sigmas.max(), seed=seed
        )
    function = getattr(k.sampling, K_SAMPLERS[sampler])
    with torch.no_grad():
        return function(model, x, sigmas, disable=True, **extra)


def nodeflow_latents(make_executor, seed: int, **scheduler: Any) -> Any:
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="tiny")
    pos = b.add("TextEncode", id="pos", text_encoder=model.text_encoder, text=PROMPT)
    neg = b.add("TextEncode", id="neg", text_encoder=model.text_encoder, text=NEGATIVE)
    sched = b.add("ComfyScheduler", id="sched", unet=model.unet, **scheduler)
    cfg = b.add("CFG", id="cfg", unet=model.unet, positive=pos.conditioning,
                negative=neg.conditioning, scale=SCALE)  # fmt: skip
    empty = b.add("EmptyLatent", id="empty", width=SIZE, height=SIZE)
    b.add("Denoise", id="denoise", guider=cfg.guider, scheduler=sched.scheduler,
          latent=empty.latent, seed=seed)  # fmt: skip
    result = make_executor().run(b.build(), targets=["denoise"])
    assert result.ok, result.error and result.error.traceback
    return result.values["denoise"]["latent"].samples


PAIRS = [(sampler, schedule) for sampler in K_SAMPLERS for schedule in SCHEDULES]


@pytest.mark.parametrize("sampler, schedule", PAIRS)
def test_each_sampler_and_schedule_equals_k_diffusion(
    k, denoiser, pipe, make_executor, sampler, schedule
):
    seed = 1000 + PAIRS.index((sampler, schedule))
    sigmas = comfy_sigmas(k, denoiser, schedule, sampler, STEPS)
    expected = reference_latents(k, denoiser, pipe, sampler, sigmas, seed)
    actual = nodeflow_latents(
        make_executor, seed, sampler_name=sampler, scheduler=schedule, steps=STEPS
    )
    assert_same_picture(pipe, actual, expected)


def decoded(pipe, latents: Any) -> Any:
    """The float image (0..1) the VAE makes of ``latents``, as diffusers' pipeline decodes."""
    with torch.no_grad():
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return (image / 2 + 0.5).clamp(0, 1)


def assert_same_picture(pipe, actual: Any, expected: Any) -> None:
    """Equal within 1e-4 on the float image (DESIGN.md's bound), from latents that are not
    empty. The latents themselves differ by up to ~1e-4 at magnitudes near 50: ComfyUI and
    k-diffusion apply guidance to the denoised predictions, the pack to the model's outputs;
    the same sum, rounded differently."""
    assert actual.shape == expected.shape
    assert float(expected.abs().max()) > 0.1
    relative = float((actual - expected).abs().max() / expected.abs().max())
    assert relative <= 1e-5, f"latents differ by {relative:.3g} of their largest value"
    difference = float((decoded(pipe, actual) - decoded(pipe, expected)).abs().max())
    assert difference <= TOLERANCE, f"max |difference| on the image {difference:.3g}"
