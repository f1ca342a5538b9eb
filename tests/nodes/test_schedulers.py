"""The Scheduler node's few-step options: chosen timesteps and eta, refused where they mean
nothing, with the message naming the scheduler."""

from __future__ import annotations

import pytest
import torch
from objective_bases import V_ZERO_SNR_KEYS

from nodes.schedulers import SCHEDULERS, make_scheduler, parse_timesteps
from nodes.tiny import family_config

SD1 = family_config("sd1", "scheduler")


@pytest.mark.parametrize(
    "text, expected", [("", ()), ("22, 0", (22, 0)), ("999,500,3", (999, 500, 3))]
)
def test_chosen_timesteps_are_read_in_order(text, expected):
    assert parse_timesteps(text) == expected


@pytest.mark.parametrize("text", ["0, 22", "22, 22", "22; 0", "a", "5, -1"])
def test_timesteps_that_no_scheduler_can_run_are_refused(text):
    with pytest.raises(ValueError, match="timesteps"):
        parse_timesteps(text)


def test_chosen_timesteps_set_the_step_count():
    recipe = make_scheduler("lcm", SD1, steps=20, timesteps=(999, 499, 259))
    assert recipe.steps == 3 and recipe.timesteps == (999, 499, 259)


def test_a_scheduler_without_chosen_timesteps_says_so():
    with pytest.raises(ValueError, match=r"'pndm'.*chosen timesteps"):
        make_scheduler("pndm", SD1, steps=4, timesteps=(999, 0))


@pytest.mark.parametrize("name", ["ddim", "tcd"])
def test_eta_is_kept_where_the_step_takes_it(name):
    assert make_scheduler(name, SD1, steps=4, eta=0.3).eta == 0.3


@pytest.mark.parametrize("name", ["lcm", "tcd", "euler", "ddim"])
def test_keys_the_scheduler_ignores_are_dropped_once_not_warned_about_per_picture(
    name, monkeypatch
):
    """SD's PNDM config carries ``skip_prk_steps``, which ``lcm`` and ``tcd`` do not take:
    ``from_config`` ignores it but logged a warning on every ``create`` (once per picture).
    Dropped when the recipe is made, the scheduler built is the same."""
    import inspect

    import diffusers
    from diffusers import configuration_utils

    assert "skip_prk_steps" in SD1
    recipe = make_scheduler(name, SD1, 4)
    warned: list[str] = []
    monkeypatch.setattr(configuration_utils.logger, "warning", lambda m, *a, **k: warned.append(m))
    made = recipe.create()
    assert warned == []
    monkeypatch.undo()
    straight = recipe.cls.from_config(SD1)
    assert recipe.cls is getattr(diffusers, type(straight).__name__)
    taken = set(inspect.signature(recipe.cls.__init__).parameters) - {"self", "kwargs"}
    assert {k: made.config[k] for k in taken} == {k: straight.config[k] for k in taken}
    made.set_timesteps(4)
    straight.set_timesteps(4)
    assert made.timesteps.tolist() == straight.timesteps.tolist()


ZERO_SNR = V_ZERO_SNR_KEYS
"""What a zero-terminal-SNR model's scheduler config says (Lin et al. 2024; demo v2z's)."""
HONOURING = ["ddpm", "ddim", "euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "unipc",
             "lcm", "tcd"]  # fmt: skip
"""The schedulers whose diffusers class takes ``rescale_betas_zero_snr`` (diffusers 0.42)."""
NOT_HONOURING = {
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "consistency": "CMStochasticIterativeScheduler",
}


def zero_snr_alphas_cumprod(config: dict) -> torch.Tensor:
    """diffusers' own rescale (``scheduling_ddim.rescale_zero_terminal_snr``) over SD's betas,
    computed here as alphabar: the last one is 0."""
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

    start, end = config["beta_start"] ** 0.5, config["beta_end"] ** 0.5
    betas = torch.linspace(start, end, config["num_train_timesteps"], dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - rescale_zero_terminal_snr(betas), dim=0)


@pytest.mark.parametrize("name", HONOURING)
def test_a_zero_snr_model_samples_its_rescaled_schedule_with_each_scheduler_that_has_one(name):
    recipe = make_scheduler(name, SD1 | ZERO_SNR, 4)
    made = recipe.create()
    assert made.config.rescale_betas_zero_snr is True
    assert made.config.prediction_type == "v_prediction"
    expected = zero_snr_alphas_cumprod(SD1)
    # the schedulers with sigmas put a tiny alphabar (2**-24) last, so sigma_max is finite
    assert float(made.alphas_cumprod[-1]) <= 2**-24
    torch.testing.assert_close(made.alphas_cumprod[:-1], expected[:-1], rtol=1e-5, atol=1e-7)
    # without the key, the same scheduler's last alphabar is SD's 0.0047: not pure noise
    plain = make_scheduler(name, SD1 | {"prediction_type": "v_prediction"}, 4).create()
    assert float(plain.alphas_cumprod[-1]) > 4e-3


@pytest.mark.parametrize("name", sorted(NOT_HONOURING))
def test_a_scheduler_without_zero_snr_refuses_such_a_model_by_name(name):
    with pytest.raises(ValueError) as raised:
        make_scheduler(name, SD1 | ZERO_SNR, 4)
    message = str(raised.value)
    assert f"'{name}'" in message and NOT_HONOURING[name] in message
    assert "rescale_betas_zero_snr" in message
    assert all(honouring in message for honouring in HONOURING)
    make_scheduler(name, SD1 | ZERO_SNR | {"rescale_betas_zero_snr": False}, 4)  # key off: fine


def test_a_pndm_config_with_the_key_is_a_zero_snr_model_and_the_default_euler_honours_it(
    tmp_path,
):
    """diffusers writes ``rescale_betas_zero_snr`` into a PNDMScheduler config though PNDM
    ignores it (a fine-tune saved with SD 1.5's scheduler class): the key is what the model was
    trained with, so the Scheduler node's default (euler) samples the rescaled schedule and
    pndm is refused rather than sampling another one."""
    import json

    from diffusers import PNDMScheduler

    from nodes.schedulers import scheduler
    from nodes.types import UNet

    PNDMScheduler.from_config(SD1 | ZERO_SNR).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "PNDMScheduler" and saved["rescale_betas_zero_snr"] is True
    unet = UNet(model=None, scheduler_config=saved)
    recipe = scheduler(unet)  # the node's defaults
    assert recipe.name == "euler"
    made = recipe.create()
    assert float(made.alphas_cumprod[-1]) <= 2**-24
    made.set_timesteps(4)
    assert made.timesteps.tolist() == [999, 749, 499, 249]  # trailing: from pure noise
    with pytest.raises(ValueError, match=r"'pndm' \(PNDMScheduler\)"):
        scheduler(unet, name="pndm")


@pytest.mark.parametrize(
    ("name", "refused"),
    [("ddpm", True), ("ddim", True), ("lcm", True), ("tcd", True), ("euler", False),
     ("euler_ancestral", False), ("dpmpp_2m", False), ("dpmpp_2m_sde", False), ("unipc", False)],
)  # fmt: skip
def test_an_epsilon_model_with_zero_snr_is_refused_where_the_first_step_would_be_nan(name, refused):
    """Zero terminal SNR makes the last alphabar 0 in DDPM, DDIM, LCM and TCD (the others stop
    at 2**-24): there a noise prediction cannot give the picture. diffusers' own scheduler,
    stepped at timestep 999 on a noise prediction, shows it; the recipe refuses those by name."""
    import inspect

    import diffusers

    config = SD1 | ZERO_SNR | {"prediction_type": "epsilon"}
    class_name, overrides = SCHEDULERS[name]
    straight = getattr(diffusers, class_name).from_config(config | overrides)
    straight.set_timesteps(4)
    assert int(straight.timesteps[0]) == 999
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 4, 4, generator=generator) * straight.init_noise_sigma
    eps = torch.randn(1, 4, 4, 4, generator=generator)
    extra = (
        {"generator": generator}
        if "generator" in inspect.signature(straight.step).parameters
        else {}
    )
    stepped = straight.step(eps, straight.timesteps[0], sample, **extra).prev_sample
    assert bool(torch.isfinite(stepped).all()) is not refused
    if refused:
        with pytest.raises(ValueError, match=rf"'{name}' \({class_name}\).*epsilon"):
            make_scheduler(name, config, 4)
    else:
        make_scheduler(name, config, 4)
