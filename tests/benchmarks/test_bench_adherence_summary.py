"""bench_adherence's "Training:" line, read from the shipped model's ``training_summary.json``.

Since demo v2b the shipped summary is a grown run's (``train_grow``): its ``args["steps"]`` is
the schedule's horizon (4000), not the steps trained, and its VAE steps live in the model it grew
from. Read as a ``train_demo`` summary, the line said "? VAE + 4000 diffusion steps".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_adherence  # noqa: E402

SHIPPED = HERE.parents[1] / "nodes" / "demo" / "model" / "demo-sd"


def test_the_shipped_grown_model_is_described_by_its_runs_steps_and_its_base() -> None:
    summary = json.loads((SHIPPED / "training_summary.json").read_text())
    line = bench_adherence.training_summary(SHIPPED)
    run, first = summary["step"], summary["started_from_run"]["step"]
    assert f"then {first} + {run} steps at batch 32" in line
    assert "grown from: 600 VAE + 5000 + 3500 (resumed) diffusion steps" in line
    assert f"unet {summary['parameters']['unet']:,}" in line
    assert line.count("then the VAE decoder fine-tuned") == len(summary["decoder"]) == 3
    assert "4000 diffusion steps" not in line


def test_a_plain_run_keeps_its_one_line(tmp_path: Path) -> None:
    summary = {"args": {"steps": "300", "vae_steps": "50", "batch_size": "8", "seed": "1"},
               "minutes": 2.0, "parameters": {"unet": 10},
               "decoder": {"command": "python -m x", "minutes": 1.0}}  # fmt: skip
    (tmp_path / "training_summary.json").write_text(json.dumps(summary))
    line = bench_adherence.training_summary(tmp_path)
    assert line.startswith("50 VAE + 300 diffusion steps at batch 8, seed 1")
    assert "3.0 minutes in all" in line and "then the VAE decoder fine-tuned: `python -m x`" in line


def test_the_kind_table_splits_whole_captions_by_count_and_position() -> None:
    """Four scenes, one of each kind, read right or wrong by hand; the table's cells are the
    whole-caption / shape shares of each kind's pictures."""
    from nodes.demo.adherence import Sample
    from nodes.demo.dataset import Scene

    def sample(scene: Scene, whole: bool, shape: bool) -> Sample:
        result = {"caption_ok": whole, "shape_ok": shape}
        return Sample(scene, "", 0, 0, 4.0, None, result)

    one = Scene("circle", "red", "white", "large", 1)
    placed = Scene("circle", "red", "white", "large", 1, position="left")
    two = Scene("square", "blue", "white", "small", 2)
    three = Scene("triangle", "green", "white", "small", 3)
    samples = [sample(one, True, True), sample(placed, False, True), sample(placed, True, True),
               sample(two, False, False), sample(three, True, True)]  # fmt: skip
    assert [bench_adherence.caption_kind(s.scene) for s in samples[:2]] == [
        "one shape", "one shape, positioned"
    ]  # fmt: skip
    table = bench_adherence.kind_table({4.0: samples}).splitlines()
    assert table[0] == (
        "| CFG | one shape (1) | one shape, positioned (2) | two shapes (1) | three shapes (1) |"
    )
    assert table[2] == "| 4 | 100.0% / 100.0% | 50.0% / 100.0% | 0.0% / 0.0% | 100.0% / 100.0% |"
