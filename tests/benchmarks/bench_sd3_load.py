"""Loading a real-size SD3-Medium single file (``sd3_medium.safetensors`` layout): time and peak
memory over the weights, as stored (fp16) and stored in fp8.

Run from the repository root::

    python tests/benchmarks/bench_sd3_load.py [--no-write]

It writes the real SD3-Medium architecture (2B-parameter MMDiT from ``nodes/configs/sd3/``,
16-channel VAE; random fp16 weights; the original layout Stability publishes, without text
encoders, 4.3 GB) to a temporary folder, then loads it in a fresh subprocess per mode with
``nodes.sd3_single_file.load_sd3_file``: models built on the meta device, the file's tensors
assigned from the memory-mapped file (fp16: no copy); ``fp8`` reads every linear weight of the
transformer straight into float8_e4m3fn, releasing the mapped pages it came from (``nodes.fp8``).
Peak memory is the process's peak resident set
(``VmHWM``) minus its resident set just before loading; every weight is read once after loading
(mapped pages are read when first touched), and the peak taken then too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))

from report import machine_summary, utc_date, write_section  # noqa: E402

SECTION = "## SD3-Medium single-file loading (tests/benchmarks/bench_sd3_load.py)"


def write_sd3_medium(path: Path) -> None:
    """Random fp16 weights of the real SD3-Medium transformer and VAE, in the original layout."""
    import torch
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from safetensors.torch import save_file

    from nodes.ldm_layout import vae_to_ldm
    from nodes.mmdit_layout import sd3_to_original
    from nodes.single_file import UNET_PREFIX, VAE_PREFIX, family_config

    torch.manual_seed(0)
    transformer_config = family_config("sd3", "transformer")
    transformer_config.pop("_class_name")
    with torch.device("meta"):
        transformer = SD3Transformer2DModel.from_config(transformer_config)
        vae = AutoencoderKL.from_config(family_config("sd3", "vae"))
    state: dict[str, Any] = {}
    for prefix, convert, model in (
        (UNET_PREFIX, sd3_to_original, transformer),
        (VAE_PREFIX, vae_to_ldm, vae),
    ):
        weights = {
            k: torch.randn(v.shape, dtype=torch.float16) * 0.02
            for k, v in model.state_dict().items()
        }
        state |= {prefix + k: v.contiguous() for k, v in convert(weights).items()}
    save_file(state, path, metadata={"format": "pt"})


CHILD = r"""
import json, sys, time
from pathlib import Path

def rss_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])

import torch, diffusers, transformers
from nodes.sd3_single_file import load_sd3_file
mode, path = sys.argv[1], Path(sys.argv[2])
torch.set_num_threads(2)
before = rss_kb("VmRSS:")
start = time.perf_counter()
unet, _, vae = load_sd3_file(path, torch.float16, fp8=mode == "fp8")
seconds = time.perf_counter() - start
load_peak = (rss_kb("VmHWM:") - before) / 1024
models = [unet.model, vae.model]
with torch.inference_mode():
    for model in models:
        for p in model.parameters():
            p.float().sum() if p.dtype == torch.float8_e4m3fn else p.sum()
touched = time.perf_counter() - start
params = sum(p.numel() * p.element_size() for m in models for p in m.parameters())
print(json.dumps({"seconds": seconds, "touched_seconds": touched, "load_peak_mb": load_peak,
                  "peak_mb": (rss_kb("VmHWM:") - before) / 1024, "model_mb": params / 1e6}))
"""


def measure(mode: str, path: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sd3-medium-random.safetensors"
        started = time.perf_counter()
        write_sd3_medium(path)
        size_mb = path.stat().st_size / 1e6
        print(f"wrote {size_mb:.0f} MB in {time.perf_counter() - started:.0f} s", flush=True)
        rows = []
        for mode in ("fp16", "fp8"):
            runs = [measure(mode, path) for _ in range(args.repeats)]
            best = min(runs, key=lambda r: r["touched_seconds"])
            rows.append((mode, best, max(r["peak_mb"] for r in runs)))
            print(mode, best, flush=True)

    import diffusers
    import torch

    lines = [
        SECTION,
        "",
        f"- Date: {utc_date()}",
        "- Machine: "
        + machine_summary(f"torch {torch.__version__}", f"diffusers {diffusers.__version__}"),
        "- Command: `python tests/benchmarks/bench_sd3_load.py`",
        f"- File: SD3-Medium architecture (MMDiT 24 blocks, 1536 wide; 16-channel VAE), random "
        f"fp16 weights, Stability's original layout without text encoders, {size_mb:,.0f} MB, "
        "read from the page cache (just written). Each load in a fresh process; best of "
        f"{args.repeats}. Peak: peak resident set minus the resident set before loading.",
        "- fp16: `load_sd3_file` (meta-device models, the file's tensors assigned from the "
        "memory-mapped file). fp8: the transformer's linear weights read straight into "
        "float8_e4m3fn, one at a time, the mapped pages released after each (`nodes.fp8`), "
        "computed in fp16.",
        "",
        "| stored as | load | load + read every weight once | weights in memory | "
        "peak after load | peak after reading all | peak / weights |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, best, peak in rows:
        lines.append(
            f"| {mode} | {best['seconds']:.2f} s | {best['touched_seconds']:.2f} s | "
            f"{best['model_mb']:,.0f} MB | {best['load_peak_mb']:,.0f} MB | {peak:,.0f} MB | "
            f"{peak / best['model_mb']:.2f}x |"
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", SECTION, text)


if __name__ == "__main__":
    main()
