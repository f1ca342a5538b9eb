"""Gradient guidance folds grad log p(y | x) into the prediction as the scheduler's form needs.

The expected shifts are computed here from the papers' formulas with a finite-difference
gradient and the schedulers' own ``alphas_cumprod`` / ``sigmas``, never from the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from nodes.classifier_guidance import ClassifierTerm
from nodes.gradient_guidance import GuidancePoint, noise_form, with_gradient_terms
from nodes.latent_classifier import ClassifierConfig, LatentClassifier
from nodes.single_file import family_config

SHAPE = (2, 4, 4, 4)


def tiny_classifier(seed: int = 0) -> LatentClassifier:
    torch.manual_seed(seed)
    config = ClassifierConfig(labels=("a", "b", "c"), width=8, groups=4)
    return LatentClassifier(config).double().eval().requires_grad_(False)


def scheduler(name: str, prediction: str = "epsilon", steps: int = 10):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    cls = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}[name]
    made = cls.from_config({**family_config("sd1", "scheduler"), "prediction_type": prediction})
    made.set_timesteps(steps)
    return made


def finite_difference(function, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Central differences of a scalar function, element by element, in float64."""
    gradient = torch.zeros_like(x)
    flat, out = x.reshape(-1), gradient.reshape(-1)
    for i in range(flat.numel()):
        plus, minus = flat.clone(), flat.clone()
        plus[i] += h
        minus[i] -= h
        out[i] = (function(plus.view_as(x)) - function(minus.view_as(x))) / (2 * h)
    return gradient


def log_p(term: ClassifierTerm, model_latents, timestep, alpha_bar, noise) -> float:
    with torch.no_grad():
        point = GuidancePoint(model_latents, timestep, alpha_bar, noise)
        return float(term.log_prob(point).sum())


def test_vp_latents_shift_the_noise_by_sqrt_one_minus_alphabar_times_the_gradient() -> None:
    """Dhariwal & Nichol eq. 14: eps_hat = eps - sqrt(1 - abar) s grad_{x_t} log p(y | x_t)."""
    ddim = scheduler("ddim")
    timestep = ddim.timesteps[4]
    alpha_bar = float(ddim.alphas_cumprod[int(timestep)])
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(SHAPE, generator=generator, dtype=torch.float64)
    noise = torch.randn(SHAPE, generator=generator, dtype=torch.float64)
    term = ClassifierTerm(tiny_classifier(), label=2, scale=3.0)

    guided = with_gradient_terms((term,), noise, latents, timestep, ddim)

    gradient = finite_difference(lambda x: log_p(term, x, timestep, alpha_bar, noise), latents)
    expected = noise - math.sqrt(1 - alpha_bar) * 3.0 * gradient
    assert gradient.abs().max() > 1e-3  # the check is not vacuous
    torch.testing.assert_close(guided, expected, rtol=0, atol=1e-7)


def test_sigma_scaled_latents_shift_the_noise_by_sigma_times_the_gradient_in_their_own_space():
    """Euler holds x = x0 + sigma eps and feeds the model x / sqrt(sigma^2 + 1):
    eps_hat = eps - sigma s grad_x log p(y | x)."""
    euler = scheduler("euler")
    timestep = euler.timesteps[3]
    euler._init_step_index(timestep)
    sigma = float(euler.sigmas[euler.step_index])
    generator = torch.Generator().manual_seed(2)
    latents = sigma * torch.randn(SHAPE, generator=generator, dtype=torch.float64)
    noise = torch.randn(SHAPE, generator=generator, dtype=torch.float64)
    term = ClassifierTerm(tiny_classifier(), label=0, scale=2.0)

    guided = with_gradient_terms((term,), noise, latents, timestep, euler)

    scale = 1 / math.sqrt(sigma**2 + 1)
    alpha_bar = 1 / (1 + sigma**2)
    gradient = finite_difference(
        lambda x: log_p(term, x * scale, timestep, alpha_bar, noise), latents
    )
    expected = noise - sigma * 2.0 * gradient
    assert gradient.abs().max() > 1e-4
    torch.testing.assert_close(guided, expected, rtol=0, atol=1e-7)


def test_both_forms_give_the_same_noise_for_the_same_model_input() -> None:
    """The derivation's consistency: at an integer timestep Euler's sigma is
    sqrt((1 - abar) / abar), and its latents are the VP latents times sqrt(1 + sigma^2)."""
    ddim, euler = scheduler("ddim", steps=20), scheduler("euler", steps=20)
    timestep = euler.timesteps[5]
    assert float(timestep) == float(ddim.timesteps[5])
    alpha_bar = float(ddim.alphas_cumprod[int(timestep)])
    sigma = math.sqrt((1 - alpha_bar) / alpha_bar)
    generator = torch.Generator().manual_seed(3)
    vp = torch.randn(SHAPE, generator=generator, dtype=torch.float64)
    noise = torch.randn(SHAPE, generator=generator, dtype=torch.float64)
    term = ClassifierTerm(tiny_classifier(), label=1, scale=5.0)

    from_vp = with_gradient_terms((term,), noise, vp, timestep, ddim)
    from_sigma = with_gradient_terms((term,), noise, vp * math.sqrt(1 + sigma**2), timestep, euler)

    assert not torch.allclose(from_vp, noise)
    torch.testing.assert_close(from_vp, from_sigma, rtol=0, atol=1e-5)


def test_a_v_prediction_is_shifted_so_that_its_noise_moves_as_an_epsilon_one_would() -> None:
    ddim_v, ddim_eps = scheduler("ddim", "v_prediction"), scheduler("ddim")
    timestep = ddim_v.timesteps[2]
    alpha_bar = float(ddim_v.alphas_cumprod[int(timestep)])
    a, b = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    generator = torch.Generator().manual_seed(4)
    latents = torch.randn(SHAPE, generator=generator, dtype=torch.float64)
    v = torch.randn(SHAPE, generator=generator, dtype=torch.float64)
    term = ClassifierTerm(tiny_classifier(), label=1, scale=4.0)

    guided_v = with_gradient_terms((term,), v, latents, timestep, ddim_v)
    noise = a * v + b * latents  # eps from v at fixed x_t
    guided_eps = with_gradient_terms((term,), noise, latents, timestep, ddim_eps)

    torch.testing.assert_close(a * guided_v + b * latents, guided_eps, rtol=0, atol=1e-10)
    assert not torch.allclose(guided_v, v)


def test_a_zero_scale_returns_the_output_untouched_and_flow_schedulers_are_refused() -> None:
    ddim = scheduler("ddim")
    output = torch.randn(SHAPE, dtype=torch.float64)
    term = ClassifierTerm(tiny_classifier(), label=0, scale=0.0)
    assert with_gradient_terms((term,), output, output, ddim.timesteps[0], ddim) is output

    from diffusers import FlowMatchEulerDiscreteScheduler

    flow = FlowMatchEulerDiscreteScheduler()
    flow.set_timesteps(4)
    with pytest.raises(ValueError, match="no noise form"):
        noise_form(flow, flow.timesteps[0])


def test_the_form_is_read_from_the_scheduler_inside_inference_mode() -> None:
    """The sampling loop runs in inference mode; the gradient still flows (a fresh graph)."""
    ddim = scheduler("ddim")
    term = ClassifierTerm(tiny_classifier().float(), label=0, scale=1.0)
    latents = torch.randn(SHAPE)
    with torch.inference_mode():
        inside = with_gradient_terms((term,), latents * 0, latents, ddim.timesteps[1], ddim)
    outside = with_gradient_terms((term,), latents * 0, latents, ddim.timesteps[1], ddim)
    assert torch.equal(inside, outside) and inside.abs().max() > 0


def test_comfyui_samplers_are_sigma_scaled_at_the_sigma_they_evaluate() -> None:
    """A k-diffusion sampler (dpmpp_2m, karras schedule) is sigma-scaled; the shift is
    sigma s grad_x with the sigma it evaluates the model at, read from the scheduler."""
    from nodes.ksampling.scheduler import KSamplerScheduler

    config = family_config("sd1", "scheduler")
    keys = ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps")
    ksampler = KSamplerScheduler(
        sampler="dpmpp_2m",
        schedule="karras",
        prediction_type="epsilon",
        **{k: config[k] for k in keys},
    )
    ksampler.set_timesteps(8)
    generator = torch.Generator().manual_seed(5)
    latents = torch.randn(SHAPE, generator=generator, dtype=torch.float64) * ksampler.sigmas[0]
    for index in range(2):  # two steps on, as a sampling run would be (one evaluation each)
        zero = torch.zeros_like(latents)
        latents = ksampler.step(zero, ksampler.timesteps[index], latents).prev_sample
    timestep = ksampler.timesteps[2]
    sigma = float(ksampler.sigmas[2])
    noise = torch.randn(SHAPE, generator=generator, dtype=torch.float64)
    term = ClassifierTerm(tiny_classifier(), label=2, scale=2.0)

    guided = with_gradient_terms((term,), noise, latents, timestep, ksampler)

    scale, alpha_bar = 1 / math.sqrt(sigma**2 + 1), 1 / (1 + sigma**2)
    gradient = finite_difference(
        lambda x: log_p(term, x * scale, timestep, alpha_bar, noise), latents
    )
    torch.testing.assert_close(guided, noise - sigma * 2.0 * gradient, rtol=0, atol=1e-7)
