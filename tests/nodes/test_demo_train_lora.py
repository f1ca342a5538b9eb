"""The style-LoRA trainer's layer choice and saves (``nodes.demo.train_lora``,
``nodes.demo.lora_layers``), on a micro demo model the real trainer makes in seconds."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from nodes.demo.lora_layers import PROJECTIONS, RESNET_TARGETS, TARGETS, target_names


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trainer = importlib.import_module("nodes.demo.train_demo")
    out = tmp_path_factory.mktemp("style-micro") / "model"
    steps = ["--steps", "1", "--vae-steps", "1", "--batch-size", "2", "--vae-batch-size", "2"]
    quiet = ["--eval-samples", "0", "--device", "cpu", "--threads", "1", "--log-every", "1000"]
    trainer.main(["--out", str(out), "--micro", *steps, *quiet])
    return out


def test_target_sets_grow_from_projections_to_all() -> None:
    assert target_names("projections") == PROJECTIONS
    assert set(PROJECTIONS) < set(target_names("attention")) == set(TARGETS)
    assert set(target_names("all")) == set(TARGETS) | set(RESNET_TARGETS)
    with pytest.raises(ValueError, match="projections, attention, all"):
        target_names("everything")


def test_the_default_keeps_the_first_loras_layers(micro: Path) -> None:
    lora = importlib.import_module("nodes.demo.train_lora")
    base = lora.load_base(micro, torch.device("cpu"))
    pairs = lora.add_lora(base.unet, rank=2, alpha=2.0)
    assert pairs and all(name.endswith(PROJECTIONS) for name in pairs)


def test_all_targets_train_convolutions_and_saves_go_beside_the_file(
    micro: Path, tmp_path: Path
) -> None:
    from nodes.lora import read_lora_file, resolve_lora

    lora = importlib.import_module("nodes.demo.train_lora")
    out = tmp_path / "style.safetensors"
    common = ["--base", str(micro), "--rank", "2", "--alpha", "2", "--batch-size", "2"]
    lora.main([*common, "--out", str(out), "--targets", "all", "--steps", "2",
               "--save-every", "1", "--device", "cpu", "--threads", "1"])  # fmt: skip
    first, second = lora.save_path(out, 1), lora.save_path(out, 2)
    assert first.name == "style-00001.safetensors" and first.is_file()
    final = load_file(out)
    assert final.keys() == load_file(first).keys()
    assert all(torch.equal(final[k], v) for k, v in load_file(second).items())
    assert not all(torch.equal(final[k], v) for k, v in load_file(first).items())
    with safe_open(second, framework="pt") as f:
        assert json.loads(f.metadata()["nodeflow_training"])["step"] == 2
    assert {v.dtype for k, v in final.items() if not k.endswith(".alpha")} == {torch.float16}
    convs = [k for k, v in final.items() if k.endswith("lora_down.weight") and v.ndim == 4]
    assert any("_conv1." in k for k in convs) and any("proj_in" in k for k in convs)

    base = lora.load_base(micro, torch.device("cpu"))
    resolved = resolve_lora(read_lora_file(out), {"unet": base.unet})
    assert len(resolved["unet"]) == len([k for k in final if k.endswith(".alpha")])


# --- the base's objective (train_demo.objective_of) -------------------------------------------


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from objective_bases import write_bases

    return write_bases(tmp_path_factory.mktemp("objective-bases"))


def _lora_args(base: Path, out: Path, *extra: str) -> list[str]:
    return ["--base", str(base), "--out", str(out), "--rank", "2", "--alpha", "2", "--batch-size",
            "4", "--seed", "3", "--device", "cpu", "--threads", "1", *extra]  # fmt: skip


@pytest.mark.parametrize("objective", ["epsilon", "v-zero-snr"])
def test_a_step_regresses_the_bases_target_under_the_bases_schedule(
    bases: dict[str, Path], objective: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first step's loss, recomputed from the formulas: x_t = sqrt(abar) x0 + sqrt(1 - abar)
    eps with SD's abar (epsilon: the loss as before this change, eps target and Min-SNR 5) or
    abar rescaled to zero terminal SNR (v = sqrt(abar) eps - sqrt(1 - abar) x0, unweighted)."""
    from objective_bases import sd_alphas_cumprod

    from nodes.demo.train_demo import Batcher

    lora = importlib.import_module("nodes.demo.train_lora")
    seen: dict = {}
    real_load, real_step = lora.load_base, lora.diffusion_step

    def load(folder: Path, device: torch.device):
        models = seen["models"] = real_load(folder, device)

        def record(_module, args, _kwargs, output) -> None:
            seen.setdefault("unet", (args[0].clone(), args[1].clone(), output.sample.detach()))

        models.unet.register_forward_hook(record, with_kwargs=True)
        return models

    def step(*args, **kwargs) -> float:
        seen.setdefault("loss", real_step(*args, **kwargs))
        return seen["loss"]

    monkeypatch.setattr(lora, "load_base", load)
    monkeypatch.setattr(lora, "diffusion_step", step)
    out = tmp_path / "style.safetensors"
    assert lora.main(_lora_args(bases[objective], out, "--steps", "1"))["objective"] == objective
    with safe_open(out, framework="pt") as f:
        assert f.metadata()["nodeflow_objective"] == objective

    # the same draws as the trainer: its data seed (seed + 300), then its generator's order
    pixels, _, _ = Batcher(3 + 300, style="outlined")(4)
    generator = torch.Generator().manual_seed(3)
    vae = seen["models"].vae
    with torch.no_grad():
        x0 = vae.encode(pixels).latent_dist.sample(generator) * vae.config.scaling_factor
    eps = torch.randn(x0.shape, generator=generator)
    t = torch.randint(0, 1000, (4,), generator=generator)
    noisy, timesteps, prediction = seen["unet"]
    assert torch.equal(timesteps, t)
    abar = sd_alphas_cumprod(zero_terminal_snr=objective == "v-zero-snr")[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(noisy, abar.sqrt() * x0 + (1 - abar).sqrt() * eps)
    snr = (abar / (1 - abar)).flatten()
    if objective == "epsilon":
        target, weight = eps, snr.clamp(max=5.0) / snr
    else:
        target, weight = abar.sqrt() * eps - (1 - abar).sqrt() * x0, torch.ones(4)
    expected = (((prediction - target) ** 2).mean(dim=(1, 2, 3)) * weight).mean()
    assert seen["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_two_steps_on_a_zero_snr_base_give_a_lora_that_loads_and_changes_its_pictures(
    bases: dict[str, Path], tmp_path: Path, sd_catalog, runtime
) -> None:
    from objective_bases import sample_with_lora

    lora = importlib.import_module("nodes.demo.train_lora")
    out = tmp_path / "zero-style.safetensors"
    lora.main(_lora_args(bases["v-zero-snr"], out, "--steps", "2", "--targets", "all"))
    base = bases["v-zero-snr"]
    with_lora = sample_with_lora(sd_catalog, runtime, base, out, tmp_path, strength=1.0)
    without = sample_with_lora(sd_catalog, runtime, base, out, tmp_path, strength=0.0)
    print(f"LoRA at strength 1 vs 0: max pixel difference {np.abs(with_lora - without).max():.2e}")
    assert np.isfinite(with_lora).all() and np.abs(with_lora - without).max() > 0


def test_an_unsupported_base_is_refused_before_training(
    bases: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    from objective_bases import edit_scheduler_config

    folder = tmp_path / "v-without-zero-snr"
    shutil.copytree(bases["epsilon"], folder)
    path = edit_scheduler_config(folder, {"prediction_type": "v_prediction"})
    lora = importlib.import_module("nodes.demo.train_lora")
    out = tmp_path / "never.safetensors"
    with pytest.raises(ValueError, match="prediction_type 'v_prediction'") as refused:
        lora.main(_lora_args(folder, out, "--steps", "1"))
    assert str(path) in str(refused.value) and not out.exists()
