"""ComfyUI's ``uni_pc`` and ``uni_pc_bh2`` samplers (UniPC, Zhao et al. 2023) as step programs.

ComfyUI runs UniPC (``comfy/extra_samplers/uni_pc.py``) in the variance-preserving frame: the
latents are divided by ``sqrt(1 + sigma_0^2)`` first, each noise level sigma has
``alpha = 1 / sqrt(1 + sigma^2)``, ``std = sigma / sqrt(1 + sigma^2)`` and
``lambda = log(alpha / std)``, and the model's denoised prediction is re-derived from its noise
prediction there. It is a multistep predictor-corrector with data prediction, the B(h) = h
(``bh1``) or B(h) = e^h - 1 (``bh2``) variant, order ``min(3, steps - 1)``, lower orders for
the first and last steps, and no corrector on the last one. A schedule ending at 0 ends at
sigma 0.001 instead (lambda must stay finite), and the result is divided by that alpha.

Each step makes one model evaluation, at the point the predictor reaches (the corrector then
uses it and it becomes the next step's history), so ``step`` numbers the evaluations as the
other solvers do: evaluation i is at ``sigmas[i]``. The arithmetic is written here for this
project, following the published algorithm and ComfyUI's ordering of the operations (float32
0-d tensors; the small linear systems solved with ``torch.linalg.solve``).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from nodes.ksampling.noise import SamplerNoise

Program = Generator[tuple[Any, Any, int], Any, Any]

LAST_SIGMA = 0.001
"""Where a schedule that ends at 0 ends for UniPC (ComfyUI's value)."""


def _log_alpha(sigma: Any) -> Any:
    import torch

    return 0.5 * torch.log(1 / ((sigma * sigma) + 1))


def _alpha(sigma: Any) -> Any:
    return _log_alpha(sigma).exp()


def _std(sigma: Any) -> Any:
    import torch

    return torch.sqrt(1.0 - torch.exp(2.0 * _log_alpha(sigma)))


def _lambda(sigma: Any) -> Any:
    import torch

    log_alpha = _log_alpha(sigma)
    return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))


class _History:
    """The data predictions made so far and where (at most ``order`` of them)."""

    def __init__(self) -> None:
        self.sigmas: list[Any] = []
        self.predictions: list[Any] = []

    def push(self, sigma: Any, prediction: Any, order: int) -> None:
        self.sigmas = [*self.sigmas, sigma][-order:]
        self.predictions = [*self.predictions, prediction][-order:]


def _coefficients(
    history: _History, sigma: Any, order: int, variant: str
) -> tuple[Any, Any, list[Any], Any, Any]:
    """The step's ``h phi_1(h)`` and ``B(h)``, the divided differences D1 of the history, and
    the predictor's and the corrector's weights (rhos; no predictor's without a history)."""
    import torch

    sigma_prev = history.sigmas[-1]
    lambda_prev = _lambda(sigma_prev)
    h = _lambda(sigma) - lambda_prev
    model_prev = history.predictions[-1]
    rks, d1s = [], []
    for i in range(1, order):
        rk = (_lambda(history.sigmas[-(i + 1)]) - lambda_prev) / h
        rks.append(rk)
        d1s.append((history.predictions[-(i + 1)] - model_prev) / rk)
    rks_t = torch.tensor([*[float(r) for r in rks], 1.0])
    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(torch.pow(rks_t, i - 1))
        b.append(float(h_phi_k * factorial / b_h))
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    r_matrix, b_t = torch.stack(rows), torch.tensor(b)
    rhos_p = None
    if d1s:
        rhos_p = (
            torch.tensor([0.5]) if order == 2 else torch.linalg.solve(r_matrix[:-1, :-1], b_t[:-1])
        )
    rhos_c = torch.tensor([0.5]) if order == 1 else torch.linalg.solve(r_matrix, b_t)
    return h_phi_1, b_h, d1s, rhos_p, rhos_c


def _weighted(d1s: list[Any], rhos: Any) -> Any:
    total = d1s[0] * rhos[0]
    for d1, rho in zip(d1s[1:], rhos[1:], strict=False):
        total = total + d1 * rho
    return total


def _unipc(x: Any, sigmas: Any, variant: str) -> Program:
    import torch

    steps = len(sigmas) - 1
    if steps < 2:
        raise ValueError("uni_pc needs at least 2 steps (ComfyUI's does too)")
    times = sigmas.clone()
    if float(times[-1]) == 0:
        times[-1] = LAST_SIGMA
    order = min(3, steps - 1)
    x = x / torch.sqrt(1.0 + times[0] ** 2.0)
    history = _History()

    def data_prediction(x_vp: Any, sigma: Any, step: int) -> Program:
        scaled = x_vp * ((sigma**2 + 1.0) ** 0.5)
        denoised = yield scaled, sigma, step
        eps = (scaled - denoised) / sigma
        return (x_vp - _std(sigma) * eps) / _alpha(sigma)

    first = yield from data_prediction(x, times[0], 0)
    history.push(times[0], first, order)
    for step in range(1, steps + 1):
        step_order = min(step, order, steps + 1 - step)
        sigma = times[step]
        corrector = step < steps
        h_phi_1, b_h, d1s, rhos_p, rhos_c = _coefficients(history, sigma, step_order, variant)
        sigma_prev = history.sigmas[-1]
        alpha_t = torch.exp(_log_alpha(sigma))
        previous = history.predictions[-1]
        x_base = (_std(sigma) / _std(sigma_prev)) * x - (alpha_t * h_phi_1) * previous
        predicted = x_base if not d1s else x_base - (alpha_t * b_h) * _weighted(d1s, rhos_p)
        if not corrector:
            x = predicted
            break
        model_t = yield from data_prediction(predicted, sigma, step)
        correction = rhos_c[-1] * (model_t - previous)
        if d1s:
            correction = _weighted(d1s, rhos_c[:-1]) + correction
        x = x_base - (alpha_t * b_h) * correction
        history.push(sigma, model_t, order)
    return x / _alpha(times[-1])


def uni_pc(x: Any, sigmas: Any, noise: SamplerNoise) -> Program:
    """UniPC, B(h) = h (ComfyUI's ``uni_pc``)."""
    return (yield from _unipc(x, sigmas, "bh1"))


def uni_pc_bh2(x: Any, sigmas: Any, noise: SamplerNoise) -> Program:
    """UniPC, B(h) = e^h - 1 (ComfyUI's ``uni_pc_bh2``)."""
    return (yield from _unipc(x, sigmas, "bh2"))
