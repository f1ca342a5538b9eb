"""The demo model's LCM-LoRA distillation script (``nodes.demo.train_lcm``): its grid and
boundary conditions agree with ``LCMScheduler``, an interrupted run resumes exactly, and what it
writes is a LoRA that ``LoadLoRA`` fits onto the demo model."""

from __future__ import annotations

import importlib
import itertools
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nodes.demo.lora_layers import ConvLoraPair, target_names
from nodes.loaders import demo_model
from nodes.tiny import family_config


@pytest.fixture(scope="module")
def train_lcm():
    return importlib.import_module("nodes.demo.train_lcm")


def test_the_solver_grid_is_the_lcm_schedulers_grid(train_lcm):
    from diffusers import LCMScheduler

    scheduler = LCMScheduler.from_config(family_config("sd1", "scheduler"))
    scheduler.set_timesteps(50)  # all of original_inference_steps: the whole grid
    grid = train_lcm.ddim_solver_timesteps(1000, 50)
    assert sorted(scheduler.timesteps.tolist()) == grid.tolist()


def test_the_boundary_scalings_are_the_lcm_schedulers(train_lcm):
    from diffusers import LCMScheduler

    scheduler = LCMScheduler.from_config(family_config("sd1", "scheduler"))
    timesteps = torch.tensor([0, 19, 499, 999])
    c_skip, c_out = train_lcm.boundary_scalings(timesteps)
    for i, t in enumerate(timesteps.tolist()):
        expected_skip, expected_out = scheduler.get_scalings_for_boundary_condition_discrete(t)
        assert c_skip[i].item() == pytest.approx(float(expected_skip), rel=1e-6)
        assert c_out[i].item() == pytest.approx(float(expected_out), rel=1e-6, abs=1e-9)
    assert c_skip[0].item() == 1.0 and c_out[0].item() == 0.0  # the identity at t = 0


def _run(train_lcm, out: Path, steps: int) -> None:
    train_lcm.main(
        ["--base", str(demo_model()), "--out", str(out), "--steps", str(steps),
         "--batch-size", "2", "--rank", "2", "--save-every", "2", "--threads", "1",
         "--device", "cpu", "--log-every", "100"]
    )  # fmt: skip


def test_an_interrupted_run_resumes_to_the_same_lora(train_lcm, tmp_path):
    _run(train_lcm, tmp_path / "straight", 4)
    _run(train_lcm, tmp_path / "resumed", 2)
    _run(train_lcm, tmp_path / "resumed", 4)
    straight = load_file(tmp_path / "straight" / "demo-lcm.safetensors")
    resumed = load_file(tmp_path / "resumed" / "demo-lcm.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    ups = [v for k, v in straight.items() if k.endswith("lora_up.weight")]
    assert any(v.abs().max() > 0 for v in ups)  # it trained: up starts at zero


def test_the_distilled_lora_fits_the_demo_model(train_lcm, tmp_path):
    from nodes.demo.train_demo import load_base
    from nodes.lora import read_lora_file, resolve_lora

    _run(train_lcm, tmp_path / "run", 1)
    lora = read_lora_file(tmp_path / "run" / "demo-lcm.safetensors")
    unet = load_base(demo_model(), torch.device("cpu")).unet
    resolved = resolve_lora(lora, {"unet": unet})
    assert len(resolved["unet"]) == len(lora.entries) > 0


def test_the_rate_decays_from_lr_to_lr_final_by_the_last_step(train_lcm):
    args = train_lcm.parse_args(["--base", "b", "--out", "o", "--steps", "100",
                                 "--lr", "1e-3", "--lr-final", "1e-4"])  # fmt: skip
    rates = [train_lcm.learning_rate(step, args) for step in range(101)]
    assert rates[0] == pytest.approx(1e-3) and rates[100] == pytest.approx(1e-4)
    assert rates[50] == pytest.approx(5.5e-4)  # the cosine's midpoint
    assert all(a >= b for a, b in itertools.pairwise(rates))
    constant = train_lcm.parse_args(["--base", "b", "--out", "o", "--lr", "2e-3"])
    assert {train_lcm.learning_rate(step, constant) for step in (0, 10, 3000)} == {2e-3}


def test_resnet_targets_train_conv_pairs_that_load_lora_computes_alike(train_lcm, tmp_path):
    """``--targets all`` adds LoRA pairs on the ResNet convolutions and time projections; the
    file it writes must make ``LoadLoRA``'s patched U-Net compute what the trainer's did."""
    from safetensors.torch import save_file

    from nodes.demo.train_demo import load_base
    from nodes.demo.train_lora import kohya_state
    from nodes.lora import LoraPatch, patched, read_lora_file, resolve_lora

    torch.manual_seed(0)
    trained = load_base(demo_model(), torch.device("cpu")).unet
    lora = train_lcm.DualLora(trained, 4, 4.0, target_names("all"))
    convs = [n for n, p in lora.pairs().items() if isinstance(p, ConvLoraPair)]
    assert any(n.endswith(".conv1") for n in convs) and any("upsamplers" in n for n in convs)
    assert any(n.endswith("time_emb_proj") for n in lora.names)
    with torch.no_grad():  # up starts at zero: give every pair a delta, fp16-exact like the file
        for pair in lora.pairs().values():
            pair.up.weight.normal_(0, 0.05)
            for weight in (pair.up.weight, pair.down.weight):
                weight.copy_(weight.half().float())
    save_file(kohya_state(lora.pairs()), tmp_path / "all.safetensors")
    sample = torch.randn(1, 4, 16, 16)
    context = torch.randn(1, 77, 64)
    timestep = torch.tensor([499])
    with torch.no_grad():
        lora.mode = "online"
        expected = trained(sample, timestep, encoder_hidden_states=context).sample
        lora.mode = "off"
        plain = trained(sample, timestep, encoder_hidden_states=context).sample

    fresh = load_base(demo_model(), torch.device("cpu")).unet
    weights = resolve_lora(read_lora_file(tmp_path / "all.safetensors"), {"unet": fresh})["unet"]
    assert len(weights) == len(lora.names)
    patch = LoraPatch(target="unet", weights=weights, strength=1.0, source="all.safetensors")
    with torch.no_grad(), patched(fresh, [patch]):
        got = fresh(sample, timestep, encoder_hidden_states=context).sample
    assert (expected - plain).abs().max() > 1e-2  # the pairs change the output
    assert (got - expected).abs().max() < 1e-4


# --- the teacher's objective (train_demo.objective_of) ----------------------------------------


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    from objective_bases import write_bases

    return write_bases(tmp_path_factory.mktemp("objective-bases"))


def _micro_run(train_lcm, base: Path, out: Path, steps: int) -> dict:
    return train_lcm.main(
        ["--base", str(base), "--out", str(out), "--steps", str(steps), "--batch-size", "2",
         "--rank", "2", "--save-every", "100", "--threads", "1", "--device", "cpu",
         "--log-every", "100"]
    )  # fmt: skip


@pytest.mark.parametrize("objective", ["epsilon", "v-zero-snr"])
def test_the_distillation_loss_follows_the_teachers_objective(
    train_lcm, bases, objective, tmp_path, monkeypatch
):
    """``main`` hands the loss the base's schedule and prediction type, and the loss is LCM's,
    recomputed here from the formulas: x_t = sqrt(abar) x0 + sqrt(1 - abar) eps; the teacher's
    x0 and eps from its output (epsilon: x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar), the loss
    as before this change; v: x0 = sqrt(abar) x_t - sqrt(1 - abar) v, eps = sqrt(1 - abar) x_t +
    sqrt(abar) v), each guided; one DDIM step to t - k; the consistency function c_skip x +
    c_out x0 of the online LoRA at t and of the EMA LoRA at t - k; the pseudo-Huber distance.
    The solver's grid here is {499, 999}, so t = 999 (abar = 0 under zero SNR) is drawn."""
    from objective_bases import sd_alphas_cumprod

    from nodes.demo.train_demo import load_base

    zero = objective == "v-zero-snr"
    abar = sd_alphas_cumprod(zero_terminal_snr=zero)
    seen = {}

    def spy(*args, **kwargs):
        seen["alphas"], seen["velocity"] = args[5], args[9]
        return real(*args, **kwargs)

    real = train_lcm.distillation_loss
    monkeypatch.setattr(train_lcm, "distillation_loss", spy)
    assert _micro_run(train_lcm, bases[objective], tmp_path / "run", 1)["objective"] == objective
    monkeypatch.undo()
    torch.testing.assert_close(seen["alphas"], abar)
    assert seen["velocity"] is zero
    assert zero == (abar[-1].item() == 0.0)

    torch.manual_seed(0)
    unet = load_base(bases[objective], torch.device("cpu")).unet
    lora = train_lcm.DualLora(unet, 2, 2.0)
    with torch.no_grad():  # online, EMA and teacher (no LoRA) all differ
        for pairs in (lora.online, lora.ema):
            for pair in pairs.values():
                pair.up.weight.normal_(0, 0.1)
    args = train_lcm.parse_args(["--base", "b", "--out", "o"])
    latents, context, empty = torch.randn(4, 4, 8, 8), torch.randn(4, 77, 8), torch.randn(1, 77, 8)
    solver = torch.tensor([499, 999])
    with torch.no_grad():
        got = train_lcm.distillation_loss(
            unet, lora, latents, context, empty, abar, solver, args,
            torch.Generator().manual_seed(7), zero,
        )  # fmt: skip

        generator = torch.Generator().manual_seed(7)
        start = solver[torch.randint(0, 2, (4,), generator=generator)]
        previous = (start - 500).clamp(min=0)  # the grid starts at k - 1: its step ends at 0
        eps = torch.randn(latents.shape, generator=generator)
        scale = (5.0 + 4.0 * torch.rand((4,), generator=generator)).view(-1, 1, 1, 1)
        assert 999 in start.tolist()

        def coefficients(t):
            return abar[t].sqrt().view(-1, 1, 1, 1), (1 - abar[t]).sqrt().view(-1, 1, 1, 1)

        def x0_eps(output, x, t):
            a, s = coefficients(t)
            if zero:
                return a * x - s * output, s * x + a * output
            return (x - s * output) / a, output

        def consistency(x, t, x0):  # LCM's boundary scalings: sigma_data 0.5, t scaled by 10
            scaled = 10.0 * t.float().view(-1, 1, 1, 1)
            return 0.25 / (scaled**2 + 0.25) * x + scaled / (scaled**2 + 0.25).sqrt() * x0

        def run(mode, x, t, ctx):
            lora.mode = mode
            return unet(x, t, encoder_hidden_states=ctx).sample

        a, s = coefficients(start)
        noisy = a * latents + s * eps
        student = consistency(
            noisy, start, x0_eps(run("online", noisy, start, context), noisy, start)[0]
        )
        x0_c, eps_c = x0_eps(run("off", noisy, start, context), noisy, start)
        x0_u, eps_u = x0_eps(run("off", noisy, start, empty.expand_as(context)), noisy, start)
        x0 = x0_u + scale * (x0_c - x0_u)
        eps_guided = eps_u + scale * (eps_c - eps_u)
        a_prev, s_prev = coefficients(previous)
        solved = a_prev * x0 + s_prev * eps_guided
        target_x0 = x0_eps(run("ema", solved, previous, context), solved, previous)[0]
        target = consistency(solved, previous, target_x0)
        expected = (((student - target) ** 2 + 0.001**2).sqrt() - 0.001).mean()
    assert torch.isfinite(got)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_a_zero_snr_lcm_lora_says_its_schedule_and_samples_through_load_lora(
    train_lcm, bases, tmp_path, sd_catalog, runtime
):
    """Two steps distilled from the zero-SNR v-prediction micro base: the run folder's scheduler
    is LCM's with the base's keys, the file names the objective, and ``LoadLoRA`` applies it in
    a 2-step ``lcm`` graph at guidance 1 on that base (changing its pictures)."""
    import json

    import numpy as np
    from objective_bases import sample_with_lora
    from safetensors import safe_open

    base = bases["v-zero-snr"]
    summary = _micro_run(train_lcm, base, tmp_path / "run", 2)
    assert summary["step"] == 2 and summary["objective"] == "v-zero-snr"
    config = json.loads((tmp_path / "run" / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "LCMScheduler"
    assert config["prediction_type"] == "v_prediction" and config["rescale_betas_zero_snr"]
    assert config["timestep_spacing"] == "trailing" and config["original_inference_steps"] == 50
    lora_file = tmp_path / "run" / "demo-lcm.safetensors"
    with safe_open(lora_file, framework="pt") as f:
        assert f.metadata()["nodeflow_objective"] == "v-zero-snr"
    sample = {"scheduler": "lcm", "scale": 1.0}
    with_lora = sample_with_lora(sd_catalog, runtime, base, lora_file, tmp_path, 1.0, **sample)
    without = sample_with_lora(sd_catalog, runtime, base, lora_file, tmp_path, 0.0, **sample)
    print(
        f"LCM-LoRA at strength 1 vs 0: max pixel difference {np.abs(with_lora - without).max():.2e}"
    )
    assert np.isfinite(with_lora).all() and np.abs(with_lora - without).max() > 0


def test_an_epsilon_teacher_with_zero_snr_is_refused_naming_its_config(train_lcm, bases, tmp_path):
    import shutil

    from objective_bases import edit_scheduler_config

    folder = tmp_path / "eps-zero-snr"
    shutil.copytree(bases["epsilon"], folder)
    path = edit_scheduler_config(folder, {"rescale_betas_zero_snr": True})
    with pytest.raises(ValueError, match="rescale_betas_zero_snr True") as refused:
        _micro_run(train_lcm, folder, tmp_path / "run", 1)
    assert str(path) in str(refused.value) and not (tmp_path / "run").exists()


def test_a_run_saved_on_one_objective_is_not_continued_on_another(train_lcm, bases, tmp_path):
    _micro_run(train_lcm, bases["epsilon"], tmp_path / "run", 1)
    assert (tmp_path / "run" / "state.json").is_file()
    with pytest.raises(ValueError, match="'epsilon' teacher; --base is 'v-zero-snr'") as refused:
        _micro_run(train_lcm, bases["v-zero-snr"], tmp_path / "run", 2)
    assert str(tmp_path / "run" / "state.json") in str(refused.value)
