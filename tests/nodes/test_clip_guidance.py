"""CLIPGuidance: the CLIP term's gradient against finite differences, and the nodes through the
executor on the demo model with a tiny random CLIP of the real architecture."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodeflow.workflow import Workflow
from nodes.clip_guidance import CLIPTerm
from nodes.clip_model import CLIP, load_clip_folder, text_features
from nodes.gradient_guidance import GuidancePoint, with_gradient_terms

PROMPT = "a large red circle on a blue background"


def write_tiny_clip(folder: Path) -> Path:
    """A random ``CLIPModel`` (both towers, 32x32 pictures), the real CLIP tokenizer and a
    preprocessor config, as ``save_pretrained`` writes them."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from nodes.clip_vocab import clip_tokenizer

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "projection_dim": 8},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
                       "projection_dim": 8},
        projection_dim=8,
    )  # fmt: skip
    CLIPModel(config).save_pretrained(folder)
    clip_tokenizer().save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
        image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3],
    ).save_pretrained(folder)  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("models") / "checkpoints" / "tiny-clip")


def tiny_vae() -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL(
        block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
        layers_per_block=1, scaling_factor=0.5,
    ).double().eval().requires_grad_(False)  # fmt: skip


def test_the_clip_term_gradient_matches_finite_differences(clip_folder: Path) -> None:
    """grad of cos(CLIP(decode(x0_hat(x_t))), CLIP(prompt)) in x_t, with the noise fixed, and
    its fold into the noise for VP latents (eps - sqrt(1 - abar) s grad)."""
    from diffusers import DDIMScheduler

    from nodes.single_file import family_config

    loaded = load_clip_folder(clip_folder)
    clip = CLIP(loaded.model.double(), loaded.tokenizer, loaded.processor)
    vae = tiny_vae()
    term = CLIPTerm(clip, vae, text_features(clip, [PROMPT]).double(), scale=50.0)
    ddim = DDIMScheduler.from_config(family_config("sd1", "scheduler"))
    ddim.set_timesteps(10)
    timestep = ddim.timesteps[6]
    alpha_bar = float(ddim.alphas_cumprod[int(timestep)])
    generator = torch.Generator().manual_seed(2)
    latents = torch.randn((1, 4, 2, 2), generator=generator, dtype=torch.float64) * 0.3
    noise = torch.randn((1, 4, 2, 2), generator=generator, dtype=torch.float64) * 0.3

    def similarity(x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(term.log_prob(GuidancePoint(x, timestep, alpha_bar, noise)).sum())

    h = 1e-6
    gradient = torch.zeros_like(latents)
    for i in range(latents.numel()):
        step = torch.zeros(latents.numel(), dtype=torch.float64)
        step[i] = h
        step = step.view_as(latents)
        gradient.view(-1)[i] = (similarity(latents + step) - similarity(latents - step)) / (2 * h)

    guided = with_gradient_terms((term,), noise, latents, timestep, ddim)
    expected = noise - math.sqrt(1 - alpha_bar) * 50.0 * gradient
    assert gradient.abs().max() > 1e-4
    torch.testing.assert_close(guided, expected, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def executor(sd_catalog: Any, runtime: Any, clip_folder: Path) -> Executor:
    models = clip_folder.parents[1]
    env = Environment.from_dirs(models, models.parent / "output", models.parent / "input")
    return Executor(sd_catalog, env=env, runtime=runtime)


def workflow(guided: bool, *, scale: float = 0.0, prompt: str = PROMPT) -> Workflow:
    nodes: dict[str, Any] = {
        "model": {"type": "LoadCheckpoint", "inputs": {"path": "demo"}},
        "pos": {"type": "TextEncode", "inputs": {"text_encoder": {"from": "model.text_encoder"},
                                                 "text": PROMPT}},
        "neg": {"type": "TextEncode", "inputs": {"text_encoder": {"from": "model.text_encoder"},
                                                 "text": ""}},
        "sched": {"type": "Scheduler", "inputs": {"unet": {"from": "model.unet"},
                                                  "name": "euler", "steps": 3}},
        "cfg": {"type": "CFG", "inputs": {"unet": {"from": "model.unet"},
                                          "positive": {"from": "pos.conditioning"},
                                          "negative": {"from": "neg.conditioning"}, "scale": 5}},
        "empty": {"type": "EmptyLatent", "inputs": {"width": 64, "height": 64}},
        "denoise": {"type": "Denoise", "inputs": {"guider": {"from": "cfg.guider"},
                                                  "scheduler": {"from": "sched.scheduler"},
                                                  "latent": {"from": "empty.latent"}, "seed": 3}},
        "decode": {"type": "VAEDecode", "inputs": {"vae": {"from": "model.vae"},
                                                   "latent": {"from": "denoise.latent"}}},
    }  # fmt: skip
    if guided:
        nodes["clip"] = {"type": "LoadCLIP", "inputs": {"path": "tiny-clip"}}
        nodes["guide"] = {
            "type": "CLIPGuidance",
            "inputs": {"guider": {"from": "cfg.guider"}, "clip": {"from": "clip.clip"},
                       "vae": {"from": "model.vae"}, "prompt": prompt, "scale": scale},
        }  # fmt: skip
        nodes["denoise"]["inputs"]["guider"] = {"from": "guide.guider"}
    return Workflow.from_json({"version": 1, "nodes": nodes})


def pixels(executor: Executor, flow: Workflow) -> torch.Tensor:
    result = executor.run(flow, targets=["decode"])
    assert result.status == "finished", result.error
    return result.values["decode"]["image"].pixels


def test_clip_guidance_through_the_executor(executor: Executor) -> None:
    plain = pixels(executor, workflow(False))
    assert torch.equal(plain, pixels(executor, workflow(True, scale=0.0)))
    guided = pixels(executor, workflow(True, scale=2000.0))
    assert (guided - plain).abs().max() > 1e-3


def test_an_empty_prompt_fails_naming_the_node_and_input(executor: Executor) -> None:
    result = executor.run(workflow(True, scale=1.0, prompt="  "), targets=["decode"])
    assert result.status == "failed" and result.error.node == "guide"
    assert "input 'prompt'" in result.error.message
