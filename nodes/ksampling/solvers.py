"""ComfyUI's samplers (k-diffusion's algorithms) as resumable step programs.

A solver is a generator: it yields ``(x, sigma, step)`` each time it needs the model's denoised
prediction of ``x`` at noise level ``sigma`` (during step number ``step``), receives that
prediction, and returns the final latents. Written this way, the solver does not call the
model itself, so the pack's one sampling loop (``nodes.denoise``) can drive it one model call
at a time, exactly as it drives diffusers' schedulers; and the sigmas a solver will ask for can
be traced in advance with dummy values (``evaluation_sigmas``), because none of them depends on
the latents.

The arithmetic follows k-diffusion's ``sampling.py`` (as ComfyUI's copy of it does), operation
for operation, on 0-d float32 sigma tensors, so results agree to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from nodes.ksampling.noise import SamplerNoise, SilentNoise
from nodes.ksampling.unipc import uni_pc, uni_pc_bh2

Program = Generator[tuple[Any, Any, int], Any, Any]
Solver = Callable[[Any, Any, SamplerNoise], Program]


def _to_d(x: Any, sigma: Any, denoised: Any) -> Any:
    """The probability-flow ODE's derivative dx/dsigma at ``x``."""
    return (x - denoised) / sigma


def _ancestral_step(sigma: Any, sigma_next: Any, eta: float = 1.0) -> tuple[Any, Any]:
    """Where an ancestral step goes deterministically (``down``) and how much fresh noise it
    then adds (``up``), so that the total noise level lands on ``sigma_next``."""
    up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    down = (sigma_next**2 - up**2) ** 0.5
    return down, up


def euler(x: Any, sigmas: Any, noise: SamplerNoise) -> Program:
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i], i
        x = x + _to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


def euler_ancestral(x: Any, sigmas: Any, noise: SamplerNoise) -> Program:
    draw = noise.ancestral(x)
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i], i
        down, up = _ancestral_step(sigmas[i], sigmas[i + 1])
        x = x + _to_d(x, sigmas[i], denoised) * (down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + draw(sigmas[i], sigmas[i + 1]) * up
    return x


def heun(x: Any, sigmas: Any, noise: SamplerNoise) -> Program:
    """Heun's second-order method; the last step (to sigma 0) is an Euler step."""
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i], i
        d = _to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = yield x_2, sigmas[i + 1], i
            d_2 = _to_d(x_2, sigmas[i + 1], denoised_2)
            x = x + (d + d_2) / 2 * dt
    return x


def _midpoint(sigma: Any, sigma_next: Any) -> Any:
    return sigma.log().lerp(sigma_next.log(), 0.5).exp()


def dpm_2(x: Any, sigmas: Any, noise: SamplerNoise) -> Program:
    """DPM-Solver-2 style: the derivative taken at the log-sigma midpoint."""
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i], i
        d = _to_d(x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
        else:
            sigma_mid = _midpoint(sigmas[i], sigmas[i + 1])
            x_2 = x + d * (sigma_mid - sigmas[i])
            denoised_2 = yield x_2, sigma_mid, i
            x = x + _to_d(x_2, sigma_mid, denoised_2) * (sigmas[i + 1] - sigmas[i])
    return x


def dpm_2_ancestral(x: Any, sigmas: Any, noise: SamplerNoise) -> Program:
    draw = noise.ancestral(x)
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i], i
        down, up = _ancestral_step(sigmas[i], sigmas[i + 1])
        d = _to_d(x, sigmas[i], denoised)
        if down == 0:
            x = x + d * (down - sigmas[i])
        else:
            sigma_mid = _midpoint(sigmas[i], down)
            x_2 = x + d * (sigma_mid - sigmas[i])
            denoised_2 = yield x_2, sigma_mid, i
            x = x + _to_d(x_2, sigma_mid, denoised_2) * (down - sigmas[i])
            x = x + draw(sigmas[i], sigmas[i + 1]) * up
    return x


def _lms_coefficient(order: int, t: Any, i: int, j: int) -> float:
    """The integral from t[i] to t[i+1] of the Lagrange basis polynomial of node ``i - j``."""
    from scipy import integrate

    def basis(tau: float) -> float:
        product = 1.0
        for k in range(order):
            if k != j:
                product *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return product

    return integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0]


def lms(x: Any, sigmas: Any, noise: SamplerNoise, order: int = 4) -> Program:
    """Linear multistep: the last (up to) four derivatives, integrated as a polynomial."""
    nodes = sigmas.detach().cpu().numpy()
    derivatives: list[Any] = []
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i], i
        derivatives = [*derivatives, _to_d(x, sigmas[i], denoised)][-order:]
        current = min(i + 1, order)
        coefficients = [_lms_coefficient(current, nodes, i, j) for j in range(current)]
        x = x + sum(c * d for c, d in zip(coefficients, reversed(derivatives), strict=True))
    return x


def _t(sigma: Any) -> Any:
    return sigma.log().neg()


def _sigma(t: Any) -> Any:
    return t.neg().exp()


def dpmpp_2m(x: Any, sigmas: Any, noise: SamplerNoise) -> Program:
    """DPM-Solver++(2M): second order from the previous step's prediction."""
    previous = None
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i], i
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        if previous is None or sigmas[i + 1] == 0:
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - _t(sigmas[i - 1])) / h
            corrected = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * corrected
        previous = denoised
    return x


def _sigma_range(sigmas: Any) -> tuple[Any, Any]:
    return sigmas[sigmas > 0].min(), sigmas.max()


def dpmpp_sde(x: Any, sigmas: Any, noise: SamplerNoise, r: float = 0.5) -> Program:
    """DPM-Solver++ (stochastic): two model calls a step, Brownian-tree noise."""
    if len(sigmas) <= 1:
        return x
    draw = noise.brownian(x, *_sigma_range(sigmas))
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i], i
        if sigmas[i + 1] == 0:
            x = x + _to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        fac = 1 / (2 * r)
        down, up = _ancestral_step(_sigma(t), _sigma(s))
        s_ = _t(down)
        x_2 = (_sigma(s_) / _sigma(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + draw(_sigma(t), _sigma(s)) * up
        denoised_2 = yield x_2, _sigma(s), i
        down, up = _ancestral_step(_sigma(t), _sigma(t_next))
        t_next_ = _t(down)
        combined = (1 - fac) * denoised + fac * denoised_2
        x = (_sigma(t_next_) / _sigma(t)) * x - (t - t_next_).expm1() * combined
        x = x + draw(_sigma(t), _sigma(t_next)) * up
    return x


def dpmpp_2m_sde(x: Any, sigmas: Any, noise: SamplerNoise, eta: float = 1.0) -> Program:
    """DPM-Solver++(2M) SDE, midpoint variant (ComfyUI's default)."""
    if len(sigmas) <= 1:
        return x
    draw = noise.brownian(x, *_sigma_range(sigmas))
    previous, h_last, h = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i], i
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = eta * h
            decay = sigmas[i + 1] / sigmas[i] * (-eta_h).exp()
            x = decay * x + (-h - eta_h).expm1().neg() * denoised
            if previous is not None:
                r = h_last / h
                x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - previous)
            if eta:
                scale = sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt()
                x = x + draw(sigmas[i], sigmas[i + 1]) * scale
        previous, h_last = denoised, h
    return x


def dpmpp_3m_sde(x: Any, sigmas: Any, noise: SamplerNoise, eta: float = 1.0) -> Program:
    """DPM-Solver++(3M) SDE: third order from the two previous predictions."""
    if len(sigmas) <= 1:
        return x
    draw = noise.brownian(x, *_sigma_range(sigmas))
    denoised_1, denoised_2, h, h_1, h_2 = None, None, None, None, None
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i], i
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (eta + 1)
            x = (-h_eta).exp() * x + (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + phi_2 * ((denoised - denoised_1) / (h_1 / h))
            if eta:
                scale = sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt()
                x = x + draw(sigmas[i], sigmas[i + 1]) * scale
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def lcm(x: Any, sigmas: Any, noise: SamplerNoise) -> Program:
    """Latent consistency sampling: jump to the prediction, re-noise it to the next sigma."""
    draw = noise.ancestral(x)
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i], i
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + draw(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
    return x


SOLVERS: dict[str, Solver] = {
    "euler": euler,
    "euler_ancestral": euler_ancestral,
    "heun": heun,
    "dpm_2": dpm_2,
    "dpm_2_ancestral": dpm_2_ancestral,
    "lms": lms,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_sde": dpmpp_sde,
    "dpmpp_2m_sde": dpmpp_2m_sde,
    "dpmpp_3m_sde": dpmpp_3m_sde,
    "ddim": euler,  # ComfyUI's "ddim" is Euler (DDIM's deterministic update in sigma terms)
    "lcm": lcm,
    "uni_pc": uni_pc,
    "uni_pc_bh2": uni_pc_bh2,
}
"""ComfyUI's sampler names and their programs."""


def evaluation_sigmas(solver: Solver, sigmas: Any) -> list[list[Any]]:
    """The sigmas ``solver`` evaluates the model at over ``sigmas``, grouped by step.

    Traced by running it on a dummy scalar latent with silent noise: the sigmas a solver visits
    depend only on the schedule, never on the latents.
    """
    import torch

    steps: list[list[Any]] = [[] for _ in range(len(sigmas) - 1)]
    program = solver(torch.zeros(()), sigmas, SilentNoise())
    try:
        _, sigma, step = next(program)
        while True:
            steps[step].append(sigma)
            _, sigma, step = program.send(torch.zeros(()))
    except StopIteration:
        pass
    return steps
