"""The GPU check (bench_gpu.py) dry-run on the CPU, so it is known to work before a GPU is lent.

The script is run once per session on a machine lent for minutes; an error found there costs
the whole check. Here it runs end to end with ``--tiny --device cpu`` (fp32, where parity is held
to DESIGN.md's 1e-4), and its verdicts are shown to be able to fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_gpu  # noqa: E402


@pytest.mark.slow
def test_the_tiny_dry_run_passes_every_check_and_reports_the_gpu_only_part_as_skipped(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    command = [sys.executable, str(HERE / "bench_gpu.py"), "--tiny", "--device", "cpu"]
    command += ["--threads", "1", "--steps", "2", "--repeats", "2", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").read_text().startswith(bench_gpu.SECTION)
    assert report["device"] == "cpu" and report["dtype"] == "fp32"
    checks = report["checks"]
    assert [c["status"] for c in checks.values()] == ["pass", "pass", "pass"], checks

    parity = checks["(a) fp32 parity"]["data"]
    assert parity["tolerance"] == 1e-4
    assert parity["finite"] and parity["max_abs_diff_image"] <= 1e-4

    vram = checks["(b) VRAM budget"]
    assert vram["data"]["offloads"] >= 1
    assert vram["data"]["max_abs_diff_image"] <= 1e-4
    assert vram["data"]["peak_budgeted"] is None
    assert "peak memory: skipped (no CUDA device" in vram["summary"]

    speed = checks["(c) speed"]["data"]
    assert speed["repeats"] == 2
    assert all(rate > 0 for rate in speed["it_per_s"].values())


def test_parity_fails_beyond_the_tolerance_and_on_nan() -> None:
    image = np.full((1, 8, 8, 3), 0.5, dtype=np.float32)
    latents = np.zeros((1, 4, 4, 4), dtype=np.float32)
    same = bench_gpu.Picture(image, latents)

    def verdict(other: np.ndarray) -> str:
        picture = bench_gpu.Picture(other, latents)
        return bench_gpu.parity_verdict(same, picture, 1e-4).status

    assert verdict(image + 5e-5) == "pass"
    assert verdict(image + 2e-4) == "fail"
    broken = image.copy()
    broken[0, 0, 0, 0] = np.nan
    assert verdict(broken) == "fail"

    # the fp32-decoder figure is a diagnosis beside the verdict, not a second chance
    picture = bench_gpu.Picture(image + 2e-4, latents)
    check = bench_gpu.parity_verdict(same, picture, 1e-4, same_decoder=image)
    assert check.status == "fail"
    assert check.data["max_abs_diff_image_fp32_decoder"] == 0.0


def test_the_offload_check_fails_without_offloads_or_on_other_pixels() -> None:
    image = np.full((1, 8, 8, 3), 0.5, dtype=np.float32)
    picture = bench_gpu.Picture(image, None, peak=100)
    stats = {"offloads": 1, "events": ["offload U-Net"], "resident_at_end": 10}

    def status(other: bench_gpu.Picture, **changes: object) -> str:
        return bench_gpu.check_vram(20, other, picture, stats | changes, 1e-2).status

    assert status(bench_gpu.Picture(image, None, peak=50)) == "pass"
    assert status(bench_gpu.Picture(image, None, peak=50), offloads=0) == "fail"
    assert status(bench_gpu.Picture(image + 0.1, None, peak=50)) == "fail"
    assert status(bench_gpu.Picture(image, None, peak=100)) == "fail"  # the peak did not drop
