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


def sd_betas(config: Any) -> torch.Tensor:
    """SD's scaled-linear betas in float64, as ComfyUI builds them."""
    return (
        torch.linspace(
            config.beta_start**0.5, config.beta_end**0.5, config.num_train_timesteps,
            dtype=torch.float64,
        ) ** 2
    )  # fmt: skip


def with_comfy_sigmas(wrapped: Any, alphas_cumprod: torch.Tensor) -> Any:
    """``wrapped`` with its sigma tables held as ComfyUI holds them: computed from float64
    alphas-cumprod, stored in float32."""
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    wrapped.register_buffer("sigmas", sigmas.float())
    wrapped.register_buffer("log_sigmas", sigmas.log().float())
    return wrapped


@pytest.fixture(scope="module")
def k() -> Any:
    return kdiffusion_shim.load()


@pytest.fixture(scope="module")
def denoiser(k, pipe) -> Any:
    """k-diffusion's discrete eps denoiser over the tiny U-Net, sigmas held as ComfyUI holds them
    (computed in float64, stored in float32)."""
    config = pipe.scheduler.config
    assert config.beta_schedule == "scaled_linear"
    betas = sd_betas(config)
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)

    class UNetEps(k.external.DiscreteEpsDDPMDenoiser):
        def get_eps(self, x, t, cond):
            return self.inner_model(x, t, encoder_hidden_states=cond).sample

    wrapped = UNetEps(pipe.unet, alphas_cumprod, quantize=True)
    return with_comfy_sigmas(wrapped, alphas_cumprod)


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


def first_noise_scale(denoiser, sigmas: Any) -> Any:
    """ComfyUI's: sqrt(1 + sigma^2) when sampling starts at the model's largest sigma, else
    sigma."""
    sigma_max, first = float(denoiser.sigma_max), float(sigmas[0])
    if math.isclose(first, sigma_max, rel_tol=1e-5) or first > sigma_max:
        return torch.sqrt(1.0 + sigmas[0] ** 2.0)
    return sigmas[0]


def reference_latents(
    k, denoiser, pipe, sampler: str, sigmas: Any, seed: int, start: Any = None,
    add_noise: bool = True, prompt: str = PROMPT, negative: str = NEGATIVE,
    scale: float = SCALE, size: int = SIZE,
) -> Any:  # fmt: skip
    """k-diffusion's ``sampler`` over ``sigmas``, from ``start`` (or nothing) plus ComfyUI's
    noise: sqrt(1 + sigma^2)-scaled at the model's largest sigma, sigma-scaled below it."""
    cond, uncond = pipe.encode_prompt(prompt, "cpu", 1, True, negative)
    shape = (1, pipe.unet.config.in_channels, size // pipe.vae_scale_factor,
             size // pipe.vae_scale_factor)  # fmt: skip
    noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
    x = noise * first_noise_scale(denoiser, sigmas) if add_noise else torch.zeros(shape)
    if start is not None:
        x = x + start

    def model(x, sigma):
        out = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=torch.cat([uncond, cond]))
        unguided, guided = out.chunk(2)
        return unguided + (guided - unguided) * scale

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
    return run_graph(make_executor, seed, scheduler)["denoise"]["latent"].samples


def run_graph(
    make_executor,
    seed: int,
    scheduler: dict[str, Any],
    second: dict[str, Any] | None = None,
    checkpoint: str = "tiny",
) -> dict[str, Any]:
    """txt2img with ComfyScheduler; with ``second`` (``scheduler``, ``strength``, ``seed``), a
    second Denoise continues from the first one's latents."""
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path=checkpoint)
    pos = b.add("TextEncode", id="pos", text_encoder=model.text_encoder, text=PROMPT)
    neg = b.add("TextEncode", id="neg", text_encoder=model.text_encoder, text=NEGATIVE)
    sched = b.add("ComfyScheduler", id="sched", unet=model.unet, **scheduler)
    cfg = b.add("CFG", id="cfg", unet=model.unet, positive=pos.conditioning,
                negative=neg.conditioning, scale=SCALE)  # fmt: skip
    empty = b.add("EmptyLatent", id="empty", width=SIZE, height=SIZE)
    first = b.add("Denoise", id="denoise", guider=cfg.guider, scheduler=sched.scheduler,
                  latent=empty.latent, seed=seed)  # fmt: skip
    targets = ["denoise"]
    if second is not None:
        sched_2 = b.add("ComfyScheduler", id="sched_2", unet=model.unet, **second["scheduler"])
        b.add("Denoise", id="denoise_2", guider=cfg.guider, scheduler=sched_2.scheduler,
              latent=first.latent, seed=second["seed"], strength=second["strength"])  # fmt: skip
        targets.append("denoise_2")
    result = make_executor().run(b.build(), targets=targets)
    assert result.ok, result.error and result.error.traceback
    return result.values


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


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_ancestral", "heun", "dpmpp_2m_sde"])
def test_img2img_runs_the_last_steps_of_comfyuis_stretched_schedule(
    k, denoiser, pipe, make_executor, sampler
):
    """KSampler's denoise 0.6 with 3 steps: the last 3 of int(3 / 0.6) = 5 steps, from the
    latent plus sigma-scaled noise (as the importer writes it: 5 steps, strength 3.5 / 5)."""
    values = run_graph(
        make_executor, 5, {"sampler_name": "euler", "scheduler": "normal", "steps": 3},
        second={"seed": 6, "strength": 3.5 / 5,
                "scheduler": {"sampler_name": sampler, "scheduler": "karras", "steps": 5}},
    )  # fmt: skip
    start = values["denoise"]["latent"].samples
    sigmas = comfy_sigmas(k, denoiser, "karras", sampler, 5)[-4:]
    expected = reference_latents(k, denoiser, pipe, sampler, sigmas, 6, start=start)
    assert_same_picture(pipe, values["denoise_2"]["latent"].samples, expected)


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_ancestral", "dpm_2", "dpmpp_3m_sde"])
def test_a_base_and_refiner_split_equals_k_diffusion_over_the_two_sigma_windows(
    k, denoiser, pipe, make_executor, sampler
):
    """KSamplerAdvanced twice: steps 0-3 of 5 keeping the leftover noise, then 3-5 without new
    noise (the SDXL base + refiner template's shape)."""
    window = {"sampler_name": sampler, "scheduler": "normal", "steps": 5}
    values = run_graph(
        make_executor, 7, {**window, "end_at_step": 3, "return_with_leftover_noise": True},
        second={"seed": 7, "strength": 2.5 / 5, "scheduler": {**window, "add_noise": False}},
    )  # fmt: skip
    sigmas = comfy_sigmas(k, denoiser, "normal", sampler, 5)
    base = reference_latents(k, denoiser, pipe, sampler, sigmas[:4], 7)
    assert_same_picture(pipe, values["denoise"]["latent"].samples, base)
    leftover = values["denoise"]["latent"].samples
    refined = reference_latents(
        k, denoiser, pipe, sampler, sigmas[3:], 7, start=leftover, add_noise=False
    )
    assert_same_picture(pipe, values["denoise_2"]["latent"].samples, refined)


def test_comfyuis_default_workflow_imported_gives_the_k_diffusion_picture(
    k, denoiser, pipe, make_executor
):
    """ComfyUI's default text-to-image graph, imported, on the tiny model as a single file."""
    import json
    from pathlib import Path

    from nodeflow.imports import load_document
    from nodeflow.plugins import load_catalog

    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "comfyui" / "txt2img_api.json"
    prompt = json.loads(fixture.read_text())
    prompt["4"]["inputs"]["ckpt_name"] = "tiny.safetensors"
    workflow = load_document(prompt, load_catalog().loaders).workflow
    result = make_executor().run(workflow, targets=["8"])
    assert result.ok, result.error and result.error.traceback
    actual = result.values["8"]["image"].pixels.numpy()

    sampler = prompt["3"]["inputs"]
    assert (sampler["sampler_name"], sampler["scheduler"], sampler["denoise"]) == (
        "euler", "normal", 1,
    )  # fmt: skip
    latent = prompt["5"]["inputs"]
    expected = reference_latents(
        k, denoiser, pipe, "euler", denoiser.get_sigmas(sampler["steps"]), sampler["seed"],
        prompt=prompt["6"]["inputs"]["text"], negative=prompt["7"]["inputs"]["text"],
        scale=sampler["cfg"], size=latent["width"],
    )  # fmt: skip
    assert latent["width"] == latent["height"]
    image = decoded(pipe, expected).permute(0, 2, 3, 1).numpy()
    assert actual.shape == image.shape
    difference = float(np.abs(actual - image).max())
    assert difference <= TOLERANCE, f"max |difference| on the image {difference:.3g}"


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_lcm_follows_its_formula(k, denoiser, pipe, make_executor, schedule):
    """k-diffusion has no LCM sampler: each step jumps to the denoised prediction and, unless it
    is the last, adds sigma_next x fresh noise (from the seed + 1 generator), as ComfyUI does."""
    seed = 77
    sigmas = reference_schedule(k, denoiser, schedule, STEPS)
    cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE)
    shape = (1, pipe.unet.config.in_channels, SIZE // pipe.vae_scale_factor,
             SIZE // pipe.vae_scale_factor)  # fmt: skip
    x = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
    x = x * first_noise_scale(denoiser, sigmas)
    fresh = torch.Generator("cpu").manual_seed(seed + 1)
    with torch.no_grad():
        for i in range(len(sigmas) - 1):
            sigma = sigmas[i].reshape(1)
            both = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]),
                            cond=torch.cat([uncond, cond]))  # fmt: skip
            unguided, guided = both.chunk(2)
            x = unguided + (guided - unguided) * SCALE
            if sigmas[i + 1] > 0:
                x = x + sigmas[i + 1] * torch.randn(shape, generator=fresh)
    actual = nodeflow_latents(
        make_executor, seed, sampler_name="lcm", scheduler=schedule, steps=STEPS
    )
    assert_same_picture(pipe, actual, x)


def test_first_noise_is_one_seeded_cpu_randn_over_the_whole_batch(denoiser, pipe, make_executor):
    """ComfyUI draws a batch's noise in one torch.randn call on a CPU generator seeded with the
    seed (picture i is that draw's row i), scaled by sqrt(1 + sigma_max^2). Seen by stopping
    before the first step with the noise left in."""
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="tiny")
    text = b.add("TextEncode", id="text", text_encoder=model.text_encoder, text=PROMPT)
    sched = b.add("ComfyScheduler", id="sched", unet=model.unet, steps=4, end_at_step=0,
                  return_with_leftover_noise=True)  # fmt: skip
    cfg = b.add("CFG", id="cfg", unet=model.unet, positive=text.conditioning,
                negative=text.conditioning)  # fmt: skip
    empty = b.add("EmptyLatent", id="empty", width=SIZE, height=SIZE, batch_size=3)
    b.add("Denoise", id="denoise", guider=cfg.guider, scheduler=sched.scheduler,
          latent=empty.latent, seed=2**63 + 5)  # fmt: skip
    result = make_executor().run(b.build(), targets=["denoise"])
    assert result.ok, result.error and result.error.traceback
    actual = result.values["denoise"]["latent"].samples
    side = SIZE // pipe.vae_scale_factor
    generator = torch.Generator("cpu").manual_seed(2**63 + 5)
    noise = torch.randn((3, pipe.unet.config.in_channels, side, side), generator=generator)
    expected = noise * torch.sqrt(1.0 + denoiser.sigma_max**2.0)
    assert torch.allclose(actual, expected, rtol=1e-6, atol=0)
    assert not torch.equal(actual[0], actual[1])


COMFY_ZSNR_LAST_ALPHABAR = 4.8973451890853435e-08
"""ComfyUI's ``zsnr``: the last alphabar after the rescale (which makes it 0)."""


@pytest.fixture(scope="module")
def v_zero_snr_denoiser(k, pipe) -> Any:
    """k-diffusion's discrete v denoiser over the tiny U-Net on SD's betas rescaled to zero
    terminal SNR by diffusers' own ``rescale_zero_terminal_snr``, the last sigma from ComfyUI's
    constant alphabar: what ComfyUI's ModelSamplingDiscrete(v_prediction, zsnr) samples."""
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

    config = pipe.scheduler.config
    betas = sd_betas(config)
    alphas_cumprod = torch.cumprod(1 - rescale_zero_terminal_snr(betas), dim=0)
    alphas_cumprod[-1] = COMFY_ZSNR_LAST_ALPHABAR

    class UNetV(k.external.DiscreteVDDPMDenoiser):
        def get_v(self, x, t, cond):
            return self.inner_model(x, t, encoder_hidden_states=cond).sample

    wrapped = UNetV(pipe.unet, alphas_cumprod, quantize=True)
    return with_comfy_sigmas(wrapped, alphas_cumprod)


@pytest.mark.parametrize(("sampler", "schedule"), [("euler", "normal"), ("dpmpp_2m", "karras")])
def test_a_zero_snr_v_model_samples_comfyuis_zsnr_schedule(
    k, v_zero_snr_denoiser, pipe, make_zero_snr_executor, sampler, schedule
):
    """A model whose scheduler config says ``rescale_betas_zero_snr`` (and v_prediction) samples
    through ComfyScheduler over the rescaled sigmas, from sigma_max ~4519 at timestep 999, as
    k-diffusion's v denoiser does over diffusers' rescale; the same weights with the key removed
    sample another picture, and both are finite."""
    seed = 4242
    sigmas = comfy_sigmas(k, v_zero_snr_denoiser, schedule, sampler, STEPS)
    assert float(sigmas[0]) == pytest.approx(4518.76, abs=0.01)
    expected = reference_latents(k, v_zero_snr_denoiser, pipe, sampler, sigmas, seed)
    settings = {"sampler_name": sampler, "scheduler": schedule, "steps": STEPS}
    values = run_graph(make_zero_snr_executor, seed, settings, checkpoint="tiny-zsnr")
    actual = values["denoise"]["latent"].samples
    assert torch.isfinite(actual).all() and float(expected.abs().max()) > 0.1
    # The first latents are ~4519 x the noise, whose float32 rounding (ulp ~5e-4) the first
    # step carries on at sigma_1 / sigma_0: the latents agree to 1.6e-5 of their largest value
    # here (dpmpp_2m/karras; 9e-6 euler/normal), not assert_same_picture's 1e-5; bound 5e-5.
    # The pictures agree within DESIGN.md's 1e-4 (measured 2.0e-5 and 4.8e-6).
    relative = float((actual - expected).abs().max() / expected.abs().max())
    assert relative <= 5e-5, f"latents differ by {relative:.3g} of their largest value"
    image = float((decoded(pipe, actual) - decoded(pipe, expected)).abs().max())
    assert image <= TOLERANCE, f"max |difference| on the image {image:.3g}"
    without = run_graph(make_zero_snr_executor, seed, settings, checkpoint="tiny-vpred")
    plain = without["denoise"]["latent"].samples
    assert torch.isfinite(plain).all()
    # measured: 0.040 of the largest value (euler/normal), 2.3 (dpmpp_2m/karras); floor 0.01
    changed = float((plain - actual).abs().max() / actual.abs().max())
    assert changed > 0.01, f"the key removed changes the latents by only {changed:.3g}"
