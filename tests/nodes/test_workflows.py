"""The example workflows run as shipped, through the command users type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from nodeflow.cli import main

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
PICTURE_SIZES = {"consistency.json": (32, 32), "ddpm_pixels.json": (32, 32)}
"""Pixel-space workflows make their tiny models' own size; the rest make 64x64."""


@pytest.mark.parametrize(
    "name",
    [
        "txt2img.json",
        "img2img.json",
        "sdxl.json",
        "lora.json",
        "unclip_prior.json",
        "image_variation.json",
        "embed_blend.json",
        "lcm.json",
        "lcm_tiny.json",
        "consistency.json",
        "ddpm_pixels.json",
        "inpaint.json",
        "sd3.json",
        "flux.json",
    ],
)
def test_example_workflow_runs_as_shipped(name, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "run",
            str(WORKFLOWS / name),
            "--output-dir",
            str(out),
            "--device",
            "cpu",
            "--models-dir",
            str(tmp_path / "models"),
            "--set",
            "sched.steps=3",
        ]
    )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("save: ")
    path = Path(printed[0].removeprefix("save: "))
    assert path.parent == out and path.suffix == ".png"
    with Image.open(path) as png:
        assert png.size == PICTURE_SIZES.get(name, (64, 64))
        assert json.loads(png.text["workflow"])["nodes"]["sched"]["inputs"]["steps"] == 3


def test_every_example_workflow_validates(capsys):
    for path in sorted(WORKFLOWS.glob("*.json")):
        assert main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_lora_workflow_changes_the_picture_and_strength_zero_restores_it(tmp_path, capsys):
    """The shipped LoRA workflow really applies its LoRA: at strength 0 it is txt2img exactly."""
    common = ["--device", "cpu", "--models-dir", str(tmp_path / "models"), "--quiet"]
    common += ["--set", "sched.steps=3"]
    pictures = {}
    for name, extra in (
        ("txt2img", []),
        ("lora_on", []),
        ("lora_off", ["--set", "lora.strength_unet=0", "--set", "lora.strength_text_encoder=0"]),
    ):
        source = "txt2img.json" if name == "txt2img" else "lora.json"
        out = tmp_path / name
        code = main(["run", str(WORKFLOWS / source), "--output-dir", str(out), *common, *extra])
        assert code == 0, capsys.readouterr().err
        (path,) = out.glob("*.png")
        with Image.open(path) as png:
            pictures[name] = png.tobytes()
    assert pictures["lora_off"] == pictures["txt2img"]
    assert pictures["lora_on"] != pictures["txt2img"]


@pytest.mark.parametrize(
    "name, size",
    [("hires_fix.json", (128, 128)), ("upscale_x4.json", (64, 64)), ("controlnet.json", (64, 64))],
)
def test_example_workflow_of_its_own_size_runs_as_shipped(name, size, tmp_path, capsys):
    """Workflows whose picture is not the demo's 64x64 (upscalers), and their size."""
    out = tmp_path / "out"
    common = ["--device", "cpu", "--models-dir", str(tmp_path / "models"), "--quiet"]
    code = main(["run", str(WORKFLOWS / name), "--output-dir", str(out), *common,
                 "--set", "sched.steps=3"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    (path,) = out.glob("*.png")
    with Image.open(path) as png:
        assert png.size == size
