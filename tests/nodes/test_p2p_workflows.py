"""The prompt-to-prompt and attention-map example workflows run as shipped, through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from nodeflow.cli import main

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def run(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[Path]:
    out = tmp_path / "out"
    argv = ["run", str(WORKFLOWS / name), "--output-dir", str(out), "--device", "cpu"]
    argv += ["--models-dir", str(tmp_path / "models"), "--set", "sched.steps=5"]
    code = main(argv)
    assert code == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(line.startswith("save: ") for line in lines)
    return [Path(line.removeprefix("save: ")) for line in lines]


@pytest.mark.parametrize("name", ["p2p_replace.json", "p2p_reweight.json", "p2p_shape.json"])
def test_an_edit_workflow_saves_the_pair(name, tmp_path, capsys) -> None:
    paths = run(name, tmp_path, capsys)
    assert len(paths) == 2  # [source, edit]
    for path in paths:
        with Image.open(path) as png:
            assert png.size == (64, 64)


def test_the_attention_maps_workflow_saves_one_labelled_grid(tmp_path, capsys) -> None:
    (path,) = run("attention_maps.json", tmp_path, capsys)
    with Image.open(path) as png:
        tokens = 8  # "a large red circle on a blue background"
        assert png.size == ((1 + tokens) * 96 + (2 + tokens) * 4, 96 + 16 + 2 * 4)
