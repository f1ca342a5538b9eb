"""The decoder fine-tune (``nodes.demo.train_decoder``): the edge-aware loss charges blurred
edges that MSE barely sees, a step changes only the decoder and is deterministic, and ``main``
writes its checkpoints and keeps them beside the finished model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nodes.demo.train_decoder import decoder_step, main, reconstruction_loss, sobel
from nodes.demo.train_demo import ModelSizes, build_models


def _square(size: int = 8) -> torch.Tensor:
    """A white square on black, ``[1, 3, 32, 32]`` in -1..1: four edges, four corners."""
    pixels = torch.full((1, 3, 32, 32), -1.0)
    pixels[..., 12 : 12 + size, 12 : 12 + size] = 1.0
    return pixels


def _blur(pixels: torch.Tensor) -> torch.Tensor:
    kernel = torch.full((3, 1, 3, 3), 1 / 9)
    padded = torch.nn.functional.pad(pixels, (1, 1, 1, 1), mode="replicate")
    return torch.nn.functional.conv2d(padded, kernel, groups=3)


def test_sobel_sees_edges_and_not_flat_colour_or_the_border():
    assert sobel(torch.full((2, 3, 16, 16), 0.3)).abs().max() == 0
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 1.0  # a vertical edge: only the horizontal gradient answers
    gradients = sobel(step)
    assert gradients.shape == (1, 2, 16, 16)
    assert gradients[0, 0].abs().max() > 0
    assert gradients[0, 1].abs().max() == 0


def test_edge_loss_charges_a_blurred_edge_and_not_an_even_shift():
    square = _square()
    blurred = _blur(square)
    shifted = square + (blurred - square).abs().mean()  # same L1 as the blur, no edge changed
    assert reconstruction_loss(square, square, "edge") == 0
    pixel_l1 = torch.nn.functional.l1_loss(blurred, square)
    assert torch.isclose(reconstruction_loss(shifted, square, "edge"), pixel_l1)
    assert reconstruction_loss(blurred, square, "edge") > 1.5 * pixel_l1
    assert reconstruction_loss(blurred, square, "edge", edge_weight=0) == pytest.approx(
        float(pixel_l1)
    )
    assert reconstruction_loss(blurred, square, "mse") == torch.nn.functional.mse_loss(
        blurred, square
    )
    with pytest.raises(ValueError, match="unknown loss"):
        reconstruction_loss(blurred, square, "ssim")  # type: ignore[arg-type]


def _steps(loss_kind: str, n: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    vae = build_models(ModelSizes.micro(), seed=0).vae
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.decoder.parameters(), lr=1e-2, weight_decay=0)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for _ in range(n):
        decoder_step(vae, pixels, optimizer, generator, loss_kind=loss_kind)  # type: ignore[arg-type]
    return {k: v.clone() for k, v in vae.state_dict().items()}


def test_an_edge_step_is_deterministic_and_changes_only_the_decoder():
    torch.set_num_threads(1)
    before = {
        k: v.clone() for k, v in build_models(ModelSizes.micro(), seed=0).vae.state_dict().items()
    }
    first, second = _steps("edge"), _steps("edge")
    assert first.keys() == second.keys() == before.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    changed = {k for k in first if not torch.equal(first[k], before[k])}
    assert changed and all(k.startswith("decoder.") for k in changed)
    decoder_weights = [k for k in before if k.startswith("decoder.") and k.endswith(".weight")]
    assert sum(k in changed for k in decoder_weights) > len(decoder_weights) // 2
    mse = _steps("mse")
    assert any(not torch.equal(first[k], mse[k]) for k in changed)  # the loss is really used


def test_main_writes_checkpoints_and_keeps_them_beside_the_model(tmp_path: Path):
    model = tmp_path / "model"
    build_models(ModelSizes.micro(), seed=0).vae.save_pretrained(model / "vae")
    (model / "training_summary.json").write_text("{}\n")
    (model / "README.md").write_text("```\npython -m nodes.demo.train_demo\n```\n\nLicense: x\n")
    out = tmp_path / "out"
    args = ["--model", str(model), "--out", str(out), "--steps", "3", "--batch-size", "2",
            "--threads", "1", "--device", "cpu", "--loss", "edge", "--save-every", "2"]  # fmt: skip
    summary = main(args)
    assert (out / "checkpoints" / "step-2" / "vae" / "config.json").exists()
    assert not (out / "checkpoints" / "step-3").exists()  # the final weights are out/vae
    assert (out / "vae" / "config.json").exists()
    assert "--loss edge" in summary["command"]
    assert json.loads((out / "training_summary.json").read_text())["decoder"] == [summary]
    assert "final edge loss" in (out / "README.md").read_text()
    again = tmp_path / "again"  # a second fine-tune keeps the first one's record and note
    second = main([*args[:1], str(out), "--out", str(again), *args[4:8], "--threads", "1",
                   "--device", "cpu", "--loss", "mse"])  # fmt: skip
    assert json.loads((again / "training_summary.json").read_text())["decoder"] == [summary, second]
    card = (again / "README.md").read_text()
    assert "final edge loss" in card and "final mse loss" in card and second["command"] in card


def test_main_fine_tunes_a_demo_sd3_vae_keeping_its_encoder_and_latent_constants(tmp_path: Path):
    """demo-sd3's VAE (16 latent channels, no quant convs, a measured shift and scale) goes
    through the same fine-tune: only decoder weights change, so its latents, and the transformer
    trained on them, stay valid, and the shift and scale it ships with stay as measured."""
    from nodes.demo.train_sd3 import SD3Sizes
    from nodes.demo.train_sd3 import build_models as build_sd3

    vae = build_sd3(SD3Sizes.micro(), seed=0).vae
    vae.register_to_config(shift_factor=0.05, scaling_factor=0.7)
    assert vae.config.latent_channels == 16 and vae.quant_conv is None
    model = tmp_path / "sd3"
    vae.save_pretrained(model / "vae")
    (model / "training_summary.json").write_text("{}\n")
    (model / "README.md").write_text("```\npython -m nodes.demo.train_sd3\n```\n\nLicense: x\n")
    out = tmp_path / "out"
    main(["--model", str(model), "--out", str(out), "--steps", "2", "--batch-size", "2",
          "--threads", "1", "--device", "cpu"])  # fmt: skip
    from diffusers import AutoencoderKL

    tuned = AutoencoderKL.from_pretrained(out / "vae")
    assert tuned.config.shift_factor == 0.05 and tuned.config.scaling_factor == 0.7
    before, after = vae.state_dict(), tuned.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("decoder.") for k in changed)
