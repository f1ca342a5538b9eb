"""ComfyUI's schedules on Stable Diffusion 1.5's noise levels, checked against values worked out
by hand from their definitions (fast: no model runs here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from nodes.ksampling.scheduler import KSamplerScheduler
from nodes.ksampling.schedules import SCHEDULE_NAMES, SCHEDULES, ksampler_sigmas
from nodes.ksampling.sigmas import DiscreteSigmas
from nodes.ksampling.solvers import SOLVERS

SD15 = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
        "num_train_timesteps": 1000, "prediction_type": "epsilon"}  # fmt: skip


@pytest.fixture(scope="module")
def table() -> DiscreteSigmas:
    return DiscreteSigmas.from_config(SD15)


def reference_table() -> torch.Tensor:
    """sqrt((1 - alphabar) / alphabar) over SD 1.5's betas, in float64."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    alphabar = np.cumprod(1 - betas)
    return torch.tensor(np.sqrt((1 - alphabar) / alphabar))


def test_the_sigma_table_is_sd15s_in_float64_then_float32(table):
    assert torch.equal(table.sigmas, reference_table().float())
    assert float(table.sigma_max) == pytest.approx(14.614641, abs=1e-6)
    assert float(table.sigma_min) == pytest.approx(0.0291672, abs=1e-7)


def test_normal_is_comfyuis_999_666_333_0_for_four_steps(table):
    """The issue's measured fact: ComfyUI's "normal" runs timesteps 999/666/333/0."""
    scheduler = KSamplerScheduler(sampler="euler", schedule="normal", **SD15)
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [999.0, 666.0, 333.0, 0.0]
    # each through its log (the table's log-sigmas, interpolated at whole timesteps)
    logs = reference_table().log().float()
    expected = [float(logs[t].exp()) for t in (999, 666, 333, 0)] + [0.0]
    assert scheduler.sigmas.tolist() == expected


def test_simple_and_ddim_uniform_stride_through_the_table(table):
    sigmas = reference_table().float()
    simple = [float(sigmas[t]) for t in (999, 749, 499, 249)] + [0.0]
    assert SCHEDULES["simple"](table, 4).tolist() == simple
    ddim = [float(sigmas[t]) for t in (751, 501, 251, 1)] + [0.0]
    assert SCHEDULES["ddim_uniform"](table, 4).tolist() == ddim


def test_sgm_uniform_leaves_the_last_timestep_out_and_interpolates_log_sigma(table):
    logs = reference_table().float().log()
    expected = [999.0, 749.25, 499.5, 249.75]  # linspace(999, 0, 5) without its 0
    values = []
    for t in expected:
        low, w = int(t), t - int(t)
        values.append(float(((1 - w) * logs[low] + w * logs[min(low + 1, 999)]).exp()))
    assert SCHEDULES["sgm_uniform"](table, 4).tolist() == pytest.approx([*values, 0.0], rel=1e-6)


def test_karras_and_exponential_span_the_models_range(table):
    high, low = float(table.sigma_max), float(table.sigma_min)
    karras = SCHEDULES["karras"](table, 3).tolist()
    middle = ((high ** (1 / 7) + low ** (1 / 7)) / 2) ** 7
    assert karras == pytest.approx([high, middle, low, 0.0], rel=1e-6)
    exponential = SCHEDULES["exponential"](table, 3).tolist()
    assert exponential == pytest.approx([high, (high * low) ** 0.5, low, 0.0], rel=1e-5)


def test_beta_takes_beta_quantiles_of_the_timesteps(table):
    sigmas = reference_table().float()
    quantiles = [1.0, 0.75, 0.5, 0.25]
    timesteps = [round(stats.beta.ppf(q, 0.6, 0.6) * 999) for q in quantiles]
    assert timesteps[0] == 999 and timesteps[2] == 500  # symmetric: the median is the middle
    expected = [float(sigmas[t]) for t in timesteps] + [0.0]
    assert SCHEDULES["beta"](table, 4).tolist() == expected


def test_dpm_2_samplers_take_a_step_more_and_drop_the_sigma_before_zero(table):
    longer = SCHEDULES["karras"](table, 5).tolist()
    assert ksampler_sigmas(table, "karras", "dpm_2", 4).tolist() == [*longer[:4], 0.0]
    assert (
        ksampler_sigmas(table, "karras", "euler", 4).tolist()
        == SCHEDULES["karras"](table, 4).tolist()
    )


@pytest.mark.parametrize("sampler", sorted(SOLVERS))
@pytest.mark.parametrize("schedule", SCHEDULE_NAMES)
def test_skipping_steps_skips_whole_steps_of_model_calls(sampler, schedule):
    """What Denoise relies on for img2img: after skipping k steps, the evaluations left are the
    tail of the full list, order x k entries in."""
    scheduler = KSamplerScheduler(sampler=sampler, schedule=schedule, **SD15)
    scheduler.set_timesteps(6)
    full = scheduler.timesteps.tolist()
    evaluations = len(scheduler._evaluations)
    scheduler.set_begin_index(2 * scheduler.order)
    assert scheduler.timesteps.tolist() == full  # kept whole, as diffusers' schedulers do
    assert len(scheduler._evaluations) == evaluations - 2 * scheduler.order
    rest = [float(scheduler.table.timestep(s)) for s in scheduler._evaluations]
    assert rest == full[2 * scheduler.order :]


def test_first_noise_is_scaled_like_comfyui(table):
    scheduler = KSamplerScheduler(sampler="euler", schedule="karras", **SD15)
    scheduler.set_timesteps(4)
    sigma_max = table.sigma_max
    assert float(scheduler.init_noise_sigma) == pytest.approx(float((1 + sigma_max**2) ** 0.5))
    scheduler.set_begin_index(1)  # img2img: plain sigma below the top
    latent, noise = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)
    noised = scheduler.add_noise(latent, noise, scheduler.timesteps[1:2])
    assert torch.allclose(noised, noise * scheduler.sigmas[0])


COMFY_LAST_ALPHABAR = 4.8973451890853435e-08
"""ComfyUI's ``rescale_zero_terminal_snr_sigmas``: the last alphabar after the rescale."""


def zero_snr_reference_table() -> torch.Tensor:
    """diffusers' own ``rescale_zero_terminal_snr`` over SD 1.5's float64 betas, as sigmas, the
    last one from ComfyUI's constant alphabar (the rescale's own last alphabar is 0)."""
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphabar = torch.cumprod(1.0 - rescale_zero_terminal_snr(betas), dim=0)
    assert float(alphabar[-1]) == 0.0
    alphabar[-1] = COMFY_LAST_ALPHABAR
    return ((1.0 - alphabar) / alphabar).sqrt()


ZERO_SNR = SD15 | {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True}


def test_a_zero_snr_models_table_is_the_rescaled_schedule_with_comfyuis_last_sigma(table):
    rescaled = DiscreteSigmas.from_config(ZERO_SNR)
    expected = zero_snr_reference_table().float()
    torch.testing.assert_close(rescaled.sigmas, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(rescaled.log_sigmas, expected.log(), rtol=1e-6, atol=1e-6)
    assert float(rescaled.sigma_max) == pytest.approx(4518.76, abs=0.01)  # 14.61 unrescaled
    assert float(rescaled.sigma_min) == pytest.approx(float(table.sigma_min), rel=1e-6)
    off = DiscreteSigmas.from_config(ZERO_SNR | {"rescale_betas_zero_snr": False})
    assert torch.equal(off.sigmas, table.sigmas)


def test_a_zero_snr_model_is_first_called_at_pure_noise_and_the_recipe_keeps_the_key():
    from nodes.ksampling.recipe import make_comfy_scheduler
    from nodes.tiny import family_config

    model_config = family_config("sd1", "scheduler") | ZERO_SNR | {"timestep_spacing": "trailing"}
    recipe = make_comfy_scheduler(model_config, "euler", "normal", 4)
    assert recipe.config["rescale_betas_zero_snr"] is True
    scheduler = recipe.create()
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [999.0, 666.0, 333.0, 0.0]
    sigma_max = float(zero_snr_reference_table().float()[-1])
    assert float(scheduler.sigmas[0]) == pytest.approx(sigma_max, rel=1e-6)
    assert float(scheduler.init_noise_sigma) == pytest.approx((1 + sigma_max**2) ** 0.5, rel=1e-6)
    # v-prediction at sigma_max: the denoised prediction is about -v, finite
    x, v = torch.randn(1, 4, 2, 2) * float(scheduler.init_noise_sigma), torch.randn(1, 4, 2, 2)
    step = scheduler.step(v, scheduler.timesteps[0], x)
    assert torch.isfinite(step.prev_sample).all()
    torch.testing.assert_close(step.pred_original_sample, -v, rtol=0, atol=1e-3)
    plain = make_comfy_scheduler(family_config("sd1", "scheduler"), "euler", "normal", 4).create()
    assert float(plain.table.sigma_max) == pytest.approx(14.614641, abs=1e-6)
