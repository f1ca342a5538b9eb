"""The noise-aware CLIP (GLIDE's noised CLIP): its folder format, its guidance term's gradient
against finite differences in both scheduler forms, CLIPGuidance with it through the executor,
and the demo training script (deterministic, resumable).

Expected shifts come from the papers' formulas with a finite-difference gradient and the
schedulers' own ``alphas_cumprod`` / ``sigmas``, never from the code under test."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodeflow.workflow import Workflow
from nodes.clip_guidance import NoisedCLIPTerm
from nodes.clip_model import CLIP, image_features, load_clip_folder, text_features
from nodes.gradient_guidance import GuidancePoint, with_gradient_terms
from nodes.noised_clip import IMAGE_TOWER, NoisedImageTower, TowerConfig, save_image_tower
from nodes.single_file import family_config

PROMPT = "a large red circle on a blue background"
SHAPE = (2, 4, 8, 8)


def write_tiny_noised_clip(folder: Path, *, in_channels: int = 4) -> Path:
    """A random text tower (real CLIP tokenizer, projection 8) beside a random image tower."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from nodes.clip_vocab import clip_tokenizer

    torch.manual_seed(0)
    text = CLIPTextModelWithProjection(
        CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, projection_dim=8)
    )  # fmt: skip
    text.save_pretrained(folder)
    clip_tokenizer().save_pretrained(folder)
    config = TowerConfig(projection=8, in_channels=in_channels, width=8, groups=4, grid=2)
    save_image_tower(NoisedImageTower(config), torch.tensor(2.0), folder / IMAGE_TOWER)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("noised") / "models"
    write_tiny_noised_clip(root / "checkpoints" / "tiny-noised-clip")
    write_tiny_noised_clip(root / "checkpoints" / "three-channel", in_channels=3)
    return root


def double_clip(folder: Path) -> CLIP:
    loaded = load_clip_folder(folder)
    return CLIP(loaded.model.double(), loaded.tokenizer, None, source=loaded.source)


def scheduler(name: str, steps: int = 10) -> Any:
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    cls = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}[name]
    made = cls.from_config(family_config("sd1", "scheduler"))
    made.set_timesteps(steps)
    return made


def finite_difference(function: Any, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    gradient = torch.zeros_like(x)
    flat, out = x.reshape(-1), gradient.reshape(-1)
    for i in range(flat.numel()):
        plus, minus = flat.clone(), flat.clone()
        plus[i] += h
        minus[i] -= h
        out[i] = (function(plus.view_as(x)) - function(minus.view_as(x))) / (2 * h)
    return gradient


def similarity(term: NoisedCLIPTerm, model_latents: torch.Tensor, timestep: Any, alpha_bar: float,
               noise: torch.Tensor) -> float:  # fmt: skip
    with torch.no_grad():
        return float(term.log_prob(GuidancePoint(model_latents, timestep, alpha_bar, noise)).sum())


def test_a_noised_clip_folder_loads_as_a_noise_aware_clip_and_refuses_pictures(models: Path):
    clip = load_clip_folder(models / "checkpoints" / "tiny-noised-clip")
    assert clip.noise_aware and clip.width == 8
    assert text_features(clip, [PROMPT, "a small square"]).shape == (2, 8)
    latents = torch.randn(3, 4, 8, 8)
    assert clip.model.latent_features(latents, torch.tensor([0.0, 500.0, 999.0])).shape == (3, 8)
    with pytest.raises(ValueError, match="noise-aware"):
        image_features(clip, torch.rand(1, 3, 32, 32))


def test_a_tower_file_without_its_metadata_or_with_foreign_tensors_is_refused(tmp_path: Path):
    folder = write_tiny_noised_clip(tmp_path / "clip")
    tensors = load_file(folder / IMAGE_TOWER)
    save_file(tensors, folder / IMAGE_TOWER)  # the config metadata dropped
    with pytest.raises(ValueError, match=r"image_tower\.safetensors.*metadata"):
        load_clip_folder(folder)
    other = write_tiny_noised_clip(tmp_path / "other")
    from safetensors import safe_open

    with safe_open(str(other / IMAGE_TOWER), framework="pt") as handle:
        metadata = handle.metadata()
    save_file({**tensors, "tower.extra": torch.zeros(1)}, other / IMAGE_TOWER, metadata=metadata)
    with pytest.raises(ValueError, match="do not fit"):
        load_clip_folder(other)


def test_vp_latents_shift_the_noise_by_sqrt_one_minus_alphabar_times_the_similarity_gradient(
    models: Path,
) -> None:
    """GLIDE's CLIP guidance in Dhariwal & Nichol's eq. 14 form, one prompt per picture:
    eps_hat = eps - sqrt(1 - abar) s grad_{x_t} cos(f(x_t, t), g(c))."""
    clip = double_clip(models / "checkpoints" / "tiny-noised-clip")
    text = text_features(clip, [PROMPT, "three small green squares on a white background"])
    term = NoisedCLIPTerm(clip, text, scale=40.0)
    ddim = scheduler("ddim")
    timestep = ddim.timesteps[5]
    alpha_bar = float(ddim.alphas_cumprod[int(timestep)])
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(SHAPE, generator=generator, dtype=torch.float64)
    noise = torch.randn(SHAPE, generator=generator, dtype=torch.float64)

    guided = with_gradient_terms((term,), noise, latents, timestep, ddim)

    gradient = finite_difference(lambda x: similarity(term, x, timestep, alpha_bar, noise), latents)
    assert gradient.abs().max() > 1e-3  # the check is not vacuous
    expected = noise - math.sqrt(1 - alpha_bar) * 40.0 * gradient
    torch.testing.assert_close(guided, expected, rtol=0, atol=1e-7)


def test_sigma_scaled_latents_shift_the_noise_by_sigma_times_the_similarity_gradient(
    models: Path,
) -> None:
    """Euler holds x = x0 + sigma eps and the tower reads x / sqrt(sigma^2 + 1) at Euler's
    (fractional) timestep: eps_hat = eps - sigma s grad_x cos(f(x_t, t), g(c))."""
    clip = double_clip(models / "checkpoints" / "tiny-noised-clip")
    term = NoisedCLIPTerm(clip, text_features(clip, [PROMPT]), scale=2.0)
    euler = scheduler("euler")
    timestep = euler.timesteps[3]
    euler._init_step_index(timestep)
    sigma = float(euler.sigmas[euler.step_index])
    generator = torch.Generator().manual_seed(2)
    latents = sigma * torch.randn(SHAPE, generator=generator, dtype=torch.float64)
    noise = torch.randn(SHAPE, generator=generator, dtype=torch.float64)

    guided = with_gradient_terms((term,), noise, latents, timestep, euler)

    scale, alpha_bar = 1 / math.sqrt(sigma**2 + 1), 1 / (1 + sigma**2)
    gradient = finite_difference(
        lambda x: similarity(term, x * scale, timestep, alpha_bar, noise), latents
    )
    assert gradient.abs().max() > 1e-4
    torch.testing.assert_close(guided, noise - sigma * 2.0 * gradient, rtol=0, atol=1e-7)


@pytest.fixture(scope="module")
def executor(sd_catalog: Any, runtime: Any, models: Path) -> Executor:
    env = Environment.from_dirs(models, models.parent / "output", models.parent / "input")
    return Executor(sd_catalog, env=env, runtime=runtime)


def workflow(*, clip: str | None = None, scale: float = 0.0, vae: bool = False) -> Workflow:
    """The demo model, euler 3 steps, unconditional; CLIP-guided when ``clip`` is named."""
    nodes: dict[str, Any] = {
        "model": {"type": "LoadCheckpoint", "inputs": {"path": "demo"}},
        "pos": {"type": "TextEncode", "inputs": {"text_encoder": {"from": "model.text_encoder"},
                                                 "text": ""}},
        "sched": {"type": "Scheduler", "inputs": {"unet": {"from": "model.unet"},
                                                  "name": "euler", "steps": 3}},
        "cfg": {"type": "CFG", "inputs": {"unet": {"from": "model.unet"},
                                          "positive": {"from": "pos.conditioning"},
                                          "negative": {"from": "pos.conditioning"}, "scale": 1}},
        "empty": {"type": "EmptyLatent", "inputs": {"width": 64, "height": 64}},
        "denoise": {"type": "Denoise", "inputs": {"guider": {"from": "cfg.guider"},
                                                  "scheduler": {"from": "sched.scheduler"},
                                                  "latent": {"from": "empty.latent"}, "seed": 3}},
        "decode": {"type": "VAEDecode", "inputs": {"vae": {"from": "model.vae"},
                                                   "latent": {"from": "denoise.latent"}}},
    }  # fmt: skip
    if clip is not None:
        nodes["clip"] = {"type": "LoadCLIP", "inputs": {"path": clip}}
        inputs: dict[str, Any] = {"guider": {"from": "cfg.guider"}, "clip": {"from": "clip.clip"},
                                  "prompt": PROMPT, "scale": scale}  # fmt: skip
        if vae:
            inputs["vae"] = {"from": "model.vae"}
        nodes["guide"] = {"type": "CLIPGuidance", "inputs": inputs}
        nodes["denoise"]["inputs"]["guider"] = {"from": "guide.guider"}
    return Workflow.from_json({"version": 1, "nodes": nodes})


def pixels(executor: Executor, flow: Workflow) -> torch.Tensor:
    result = executor.run(flow, targets=["decode"])
    assert result.status == "finished", result.error
    return result.values["decode"]["image"].pixels


def test_clip_guidance_with_a_noise_aware_clip_needs_no_vae(executor: Executor) -> None:
    plain = pixels(executor, workflow())
    assert torch.equal(plain, pixels(executor, workflow(clip="tiny-noised-clip", scale=0.0)))
    guided = pixels(executor, workflow(clip="tiny-noised-clip", scale=3000.0))
    assert (guided - plain).abs().max() > 1e-3


def test_a_tower_of_other_latents_fails_naming_the_node_and_input(executor: Executor) -> None:
    result = executor.run(workflow(clip="three-channel", scale=1.0), targets=["decode"])
    assert result.status == "failed" and result.error.node == "guide"
    assert "input 'clip'" in result.error.message and "3-channel" in result.error.message


def test_a_picture_clip_without_a_vae_fails_naming_the_input(executor: Executor) -> None:
    result = executor.run(workflow(clip="demo-clip", scale=1.0), targets=["decode"])
    assert result.status == "failed" and result.error.node == "guide"
    assert "input 'vae'" in result.error.message


def _train(out: Path, steps: int) -> None:
    from nodes.demo.train_clip_noised import main

    main(["--out", str(out), "--steps", str(steps), "--batch-size", "4", "--pool", "8",
          "--width", "8", "--warmup", "1", "--save-every", "1", "--eval-scenes", "2"])  # fmt: skip


def test_training_is_deterministic_and_a_resumed_run_matches_an_uninterrupted_one(tmp_path):
    _train(tmp_path / "straight", 2)
    _train(tmp_path / "resumed", 1)
    _train(tmp_path / "resumed", 2)  # picks up its state after step 1
    _train(tmp_path / "again", 2)
    straight = load_file(str(tmp_path / "straight" / IMAGE_TOWER))
    resumed = load_file(str(tmp_path / "resumed" / IMAGE_TOWER))
    again = load_file(str(tmp_path / "again" / IMAGE_TOWER))
    assert straight.keys() == resumed.keys() == again.keys()
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
        assert torch.equal(value, again[key]), key
    clip = load_clip_folder(tmp_path / "straight")
    assert clip.noise_aware and clip.width == 64  # demo-clip's text space
