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
