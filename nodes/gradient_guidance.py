"""Gradient guidance: steering a guider's prediction with grad_x log p(y | x_t).

A ``GradientTerm`` on a ``Guider`` (its ``terms``) is a differentiable log-probability (or any
score, such as a CLIP similarity) of what the sampler holds at a step. ``with_gradient_terms``
adds ``scale * grad log p(y | x)`` of every term to the model's score, which for a noise
prediction is a shift of the noise. How big a shift depends on what the scheduler's latents are.

**VP latents** (DDPM, DDIM, PNDM, DPM-Solver: the model sees the latents as they are),
``x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps``. The model's noise gives the score,
``grad log p(x_t) = -eps / sqrt(1 - abar)``, so the score of ``p(x_t) p(y | x_t)^s`` is that of

    eps_hat = eps - sqrt(1 - abar) * s * grad_{x_t} log p(y | x_t)

(Dhariwal & Nichol 2021, eq. 14).

**Sigma-scaled latents** (Euler, Heun, LMS, the k-diffusion samplers): the scheduler holds
``x = x_0 + sigma eps`` and feeds the model ``x / sqrt(sigma^2 + 1)``, which is the VP latent
``x_t`` for ``abar = 1 / (1 + sigma^2)``. Here ``p(x) = N(x_0, sigma^2)`` smoothed data, so
``grad_x log p(x) = -eps / sigma``, and the same reasoning gives

    eps_hat = eps - sigma * s * grad_x log p(y | x).

The two agree: ``x = x_t sqrt(1 + sigma^2)``, so ``grad_x = grad_{x_t} / sqrt(1 + sigma^2)``,
and ``sigma / sqrt(1 + sigma^2) = sqrt(1 - abar)``. The terms below are always evaluated on the
VP latent the model sees (a classifier is trained on those), and their gradient is taken with
respect to the scheduler's own latents by autograd through the input scaling, then multiplied
by the factor of the scheduler's form (``noise_factor``): each formula is used as written.

A v-predicting model's output ``v = sqrt(abar) eps - sqrt(1 - abar) x_0`` satisfies
``eps = sqrt(abar) v + sqrt(1 - abar) x_t``; at fixed ``x_t`` a noise shift ``d eps`` is a
``d eps / sqrt(abar)`` shift of ``v``. Flow-matching models (velocity over ``x = (1 - t) x_0 +
t eps``) are refused: their schedulers give no noise form to fold a score into here.

Gradients need autograd while the sampling loop runs in ``torch.inference_mode``; the terms run
in a local grad-enabled block on a fresh copy of the latents, and what they return is detached,
so the loop's tensors are never part of a graph. A term whose scale is 0 is skipped, so adding
it changes no bit of the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "GradientTerm",
    "GuidancePoint",
    "NoiseForm",
    "noise_form",
    "term_gradient",
    "with_gradient_terms",
]


@dataclass(frozen=True)
class GuidancePoint:
    """Where a term is asked for its log-probability: the VP latents the model sees (part of
    the autograd graph), the timestep, and the guider's noise prediction there (detached)."""

    latents: Any
    timestep: Any
    alpha_bar: float
    noise: Any

    def denoised(self) -> Any:
        """The predicted clean latents ``(x_t - sqrt(1 - abar) eps) / sqrt(abar)``, with the
        noise prediction held fixed: differentiable in ``latents`` only (a stop-gradient
        through the denoiser, which saves a backward pass through it at every step)."""
        return (self.latents - math.sqrt(1 - self.alpha_bar) * self.noise) / math.sqrt(
            self.alpha_bar
        )


class GradientTerm(Protocol):
    """One guidance term: ``scale`` and a differentiable ``log_prob`` of a ``GuidancePoint``."""

    scale: float

    @property
    def models(self) -> tuple[Any, ...]:
        """The modules it computes with (Denoise puts them on the device)."""
        ...

    def log_prob(self, point: GuidancePoint) -> Any:
        """log p(y | x_t) per picture, shape [batch] (up to a constant)."""
        ...


@dataclass(frozen=True)
class NoiseForm:
    """What a scheduler's latents are at one timestep.

    ``input_scale``: the model sees ``input_scale * latents`` (1 for VP schedulers);
    ``alpha_bar``: of the VP latent the model sees; ``sigma_scaled``: the latents are
    ``x_0 + sigma eps`` (Euler-type) rather than the VP ``x_t``."""

    input_scale: float
    alpha_bar: float
    sigma_scaled: bool

    @property
    def sigma(self) -> float:
        return math.sqrt((1 - self.alpha_bar) / self.alpha_bar)

    @property
    def noise_factor(self) -> float:
        """What multiplies ``s * grad`` of the scheduler's latents in the noise shift: ``sigma``
        for sigma-scaled latents, ``sqrt(1 - abar)`` for VP latents (see the module)."""
        return self.sigma if self.sigma_scaled else math.sqrt(1 - self.alpha_bar)


def noise_form(scheduler: Any, timestep: Any) -> NoiseForm:
    """The ``NoiseForm`` of ``scheduler``'s latents at ``timestep``, read from the scheduler
    itself: its input scaling (``1 / sqrt(sigma^2 + 1)`` for Euler-type schedulers, none for VP
    ones) and, for VP schedulers, its ``alphas_cumprod``."""
    import torch

    prediction = getattr(getattr(scheduler, "config", None), "prediction_type", "epsilon")
    scale_input = getattr(scheduler, "scale_model_input", None)
    if scale_input is None or prediction not in ("epsilon", "v_prediction"):
        raise ValueError(
            f"gradient guidance needs a noise (epsilon) or v-predicting model with a VP or "
            f"sigma-scaled scheduler; {type(scheduler).__name__} with prediction "
            f"{prediction!r} has no noise form to fold a gradient into"
        )
    scale = float(scale_input(torch.ones(1, dtype=torch.float64), timestep)[0])
    if scale != 1.0:
        return NoiseForm(input_scale=scale, alpha_bar=scale * scale, sigma_scaled=True)
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is None:
        raise ValueError(f"{type(scheduler).__name__} has no alphas_cumprod for gradient guidance")
    index = min(max(round(float(timestep)), 0), len(alphas) - 1)
    return NoiseForm(input_scale=1.0, alpha_bar=float(alphas[index]), sigma_scaled=False)


def _to_noise(output: Any, model_latents: Any, form: NoiseForm, prediction: str) -> Any:
    if prediction == "v_prediction":
        a, b = math.sqrt(form.alpha_bar), math.sqrt(1 - form.alpha_bar)
        return a * output + b * model_latents
    return output


def term_gradient(
    terms: tuple[GradientTerm, ...], latents: Any, timestep: Any, form: NoiseForm, noise: Any
) -> Any:
    """``sum_i scale_i * grad log p_i(y | x)`` with respect to the scheduler's ``latents``
    (the terms read the VP latents ``form.input_scale * latents``), detached, in float32 or
    better (float64 latents stay float64, which the finite-difference tests rely on)."""
    import torch

    dtype = torch.promote_types(latents.dtype, torch.float32)  # half is too coarse for gradients
    with torch.inference_mode(False), torch.enable_grad():
        x = latents.detach().clone().to(dtype).requires_grad_(True)
        point = GuidancePoint(
            latents=x * form.input_scale,
            timestep=timestep.clone() if isinstance(timestep, torch.Tensor) else timestep,
            alpha_bar=form.alpha_bar,
            noise=noise.detach().clone().to(dtype),
        )
        total = sum(term.scale * term.log_prob(point).sum() for term in terms)
        (gradient,) = torch.autograd.grad(total, x)
    return gradient.detach()


def with_gradient_terms(
    terms: tuple[GradientTerm, ...], output: Any, latents: Any, timestep: Any, scheduler: Any
) -> Any:
    """The model ``output`` (noise or v, guided by CFG or not) with every term's gradient
    folded in for ``scheduler``'s parameterisation; unchanged when every scale is 0.

    A learned-variance output (twice the latent channels) is shifted in its prediction half."""
    import torch

    active = tuple(term for term in terms if term.scale != 0)
    if not active:
        return output
    form = noise_form(scheduler, timestep)
    prediction = getattr(scheduler.config, "prediction_type", "epsilon")
    channels = latents.shape[1]
    variance = None
    if output.shape[1] == 2 * channels:
        output, variance = output.split(channels, dim=1)
    model_latents = latents * form.input_scale
    noise = _to_noise(output, model_latents, form, prediction)
    gradient = term_gradient(active, latents, timestep, form, noise)
    shift = (-form.noise_factor * gradient).to(output.dtype)
    if prediction == "v_prediction":
        shift = shift / math.sqrt(form.alpha_bar)
    guided = output + shift
    return guided if variance is None else torch.cat([guided, variance], dim=1)
