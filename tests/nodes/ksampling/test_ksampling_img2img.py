"""ComfyUI's img2img template, imported, against k-diffusion from ComfyUI's documented start:
VAEEncode keeps the posterior's mode (its ``DiagonalGaussianRegularizer`` samples nothing), the
noise is the first draw of a CPU generator seeded with the seed, scaled by the first sigma of
the last ``steps`` steps of an ``int(steps / denoise)``-step schedule, added to that latent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import test_ksampling_oracle as oracle
import torch
from PIL import Image as PILImage
from test_ksampling_oracle import TOLERANCE, comfy_sigmas, decoded, reference_latents

from nodeflow.imports import load_document
from nodeflow.plugins import load_catalog

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "comfyui" / "img2img_api.json"
SIZE = 32
k, denoiser = oracle.k, oracle.denoiser  # the oracle's fixtures: k-diffusion and its denoiser


def test_comfyuis_img2img_template_imported_gives_the_k_diffusion_picture(
    k, denoiser, pipe, make_executor, tmp_path
):
    prompt = json.loads(FIXTURE.read_text())
    prompt["14"]["inputs"]["ckpt_name"] = "tiny.safetensors"
    sampler = prompt["3"]["inputs"]
    sampler.update(sampler_name="euler", scheduler="karras", denoise=0.6, steps=3)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    rgb = np.stack([x, y, 1 - x * y], axis=-1)
    (tmp_path / "input").mkdir()
    PILImage.fromarray((rgb * 255).astype(np.uint8)).save(tmp_path / "input" / "example.png")

    workflow = load_document(prompt, load_catalog().loaders).workflow
    assert workflow.to_json()["nodes"]["12"]["inputs"]["posterior"] == "mean"
    result = make_executor().run(workflow, targets=["8"])
    assert result.ok, result.error and result.error.traceback
    actual = result.values["8"]["image"].pixels.numpy()

    picture = np.asarray(PILImage.open(tmp_path / "input" / "example.png"), dtype=np.float32)
    pixels = torch.from_numpy(picture / 255.0).permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        start = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
    total = int(3 / 0.6)
    sigmas = comfy_sigmas(k, denoiser, "karras", "euler", total)[-4:]
    expected = reference_latents(
        k, denoiser, pipe, "euler", sigmas, sampler["seed"], start=start,
        prompt=prompt["6"]["inputs"]["text"], negative=prompt["7"]["inputs"]["text"],
        scale=sampler["cfg"], size=SIZE,
    )  # fmt: skip
    image = decoded(pipe, expected).permute(0, 2, 3, 1).numpy()
    assert actual.shape == image.shape
    difference = float(np.abs(actual - image).max())
    assert difference <= TOLERANCE, f"max |difference| on the image {difference:.3g}"
