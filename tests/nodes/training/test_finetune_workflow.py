"""workflows/finetune_lora.json runs as shipped (shortened by --set), through the CLI."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from nodeflow.cli import main
from nodes.lora import read_lora_file

WORKFLOW = Path(__file__).resolve().parents[3] / "workflows" / "finetune_lora.json"


def test_the_finetune_workflow_trains_saves_the_lora_and_renders_with_it(tmp_path, capsys):
    out, models = tmp_path / "out", tmp_path / "models"
    short = ["train.steps=2", "train.batch_size=2", "train.preview_every=1",
             "train.preview_steps=2", "data.size=4", "sched.steps=3"]  # fmt: skip
    sets = [arg for value in short for arg in ("--set", value)]
    code = main(["run", str(WORKFLOW), "--output-dir", str(out), "--device", "cpu",
                 "--models-dir", str(models), *sets])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    printed = sorted(capsys.readouterr().out.strip().splitlines())
    assert [line.split(": ")[0] for line in printed] == ["save", "save_grid"]
    with Image.open(printed[0].removeprefix("save: ")) as png:
        assert png.size == (64, 64)
    with Image.open(printed[1].removeprefix("save_grid: ")) as grid:
        # three preview rows (steps 0, 1, 2) of three prompts, under a header, beside labels
        assert grid.size == (72 + 3 * 64, 34 + 3 * 64)
    assert read_lora_file(models / "loras" / "demo-outlined.safetensors").entries
