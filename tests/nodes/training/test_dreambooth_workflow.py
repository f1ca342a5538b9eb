"""workflows/dreambooth.json runs as shipped (shortened by --set), through the CLI: class
pictures drawn and cached, the U-Net file saved, both renders and the grid written."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from safetensors import safe_open

from nodeflow.cli import main

WORKFLOW = Path(__file__).resolve().parents[3] / "workflows" / "dreambooth.json"


def test_the_dreambooth_workflow_trains_saves_the_unet_and_renders_with_and_without_token(
    tmp_path, capsys
):
    out, models = tmp_path / "out", tmp_path / "models"
    short = ["train.steps=2", "train.batch_size=2", "train.preview_every=1",
             "train.preview_steps=2", "train.class_images=2", "data.size=4",
             "sched.steps=3"]  # fmt: skip
    sets = [arg for value in short for arg in ("--set", value)]
    code = main(["run", str(WORKFLOW), "--output-dir", str(out), "--device", "cpu",
                 "--models-dir", str(models), *sets])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    printed = dict(line.split(": ") for line in capsys.readouterr().out.strip().splitlines())
    assert sorted(printed) == ["save_grid", "save_plain", "save_token"]
    with Image.open(printed["save_token"]) as token, Image.open(printed["save_plain"]) as plain:
        assert token.size == plain.size == (64, 64)
    with Image.open(printed["save_grid"]) as grid:
        assert grid.size == (72 + 2 * 64, 34 + 3 * 64)  # steps 0, 1, 2 of the two prompts
    with safe_open(str(models / "unet" / "demo-dreambooth.safetensors"), "pt") as unet:
        assert "nodeflow.architecture" in unet.metadata()
    assert len(list((models / "training_priors").glob("*.safetensors"))) == 1
