"""Loading a full-size single-file checkpoint: time, throughput (MB/s) and peak memory.

Run from the repository root::

    python tests/benchmarks/bench_single_file.py [--family sd1] [--no-write]

It writes a checkpoint of the real SD 1.5 architecture (860M-parameter U-Net, CLIP ViT-L text
encoder, VAE; random fp16 weights, 2.1 GB, original CompVis layout) to a temporary folder, then
loads it in fresh subprocesses, one per method, so each peak is the loader's own:

* nodeflow: ``nodes.single_file.load_checkpoint_file`` (models built on the meta device; a
  tensor kept in the file's dtype is assigned straight from the memory-mapped file, one that
  changes dtype is read alone into a buffer, converted, and the buffer dropped);
* naive: ``safetensors.torch.load_file`` of the whole file, then each model built with random
  initialisation and filled with ``load_state_dict`` (the weights exist twice, and the random
  initialisation costs time).

Both load as fp16 (the file's dtype, no conversion) and as fp32 (each tensor converted once).
Peak memory is the process's peak resident set (``VmHWM``) minus its resident set just before
loading (after imports). safetensors maps the file, so weights that need no dtype change are
read when first touched; every load is therefore also timed up to having read each weight once,
and its peak taken then (mapped pages count in the resident set). The file was just written, so
it is read from the page cache: the figures are the loader's cost, not the disk's.
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

SECTION = "## Single-file checkpoint loading (tests/benchmarks/bench_single_file.py)"


def write_checkpoint(path: Path, family: str) -> None:
    """A real-size checkpoint with random fp16 weights, in the original single-file layout."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodes.ldm_layout import unet_to_ldm, vae_to_ldm
    from nodes.single_file import family_config, hf_text_state

    torch.manual_seed(0)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(family_config(family, "unet"))
        vae = AutoencoderKL.from_config(family_config(family, "vae"))
        text = CLIPTextModel(CLIPTextConfig(**family_config(family, "text_encoder")))
    parts = (
        ("model.diffusion_model.", unet_to_ldm(_random_fp16(unet))),
        ("first_stage_model.", vae_to_ldm(_random_fp16(vae))),
        ("cond_stage_model.transformer.", hf_text_state(_random_fp16(text))),
    )
    state = {prefix + k: v.contiguous() for prefix, part in parts for k, v in part.items()}
    save_file(state, path, metadata={"format": "pt"})


def _random_fp16(model: Any) -> dict[str, Any]:
    """Random fp16 weights of a meta-device model's shapes (the values do not matter here)."""
    import torch

    return {
        k: torch.randn(v.shape, dtype=torch.float16) * 0.02 for k, v in model.state_dict().items()
    }


CHILD = r"""
import json, sys, time, resource
from pathlib import Path

def rss_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])

import torch, safetensors.torch, diffusers, transformers
from nodes.single_file import load_checkpoint_file, family_config, hf_text_state
from nodes.ldm_layout import unet_to_diffusers, vae_to_diffusers
method, path, dtype_name = sys.argv[1], sys.argv[2], sys.argv[3]
dtype = getattr(torch, dtype_name)
torch.set_num_threads(2)
before = rss_kb("VmRSS:")
start = time.perf_counter()
if method == "nodeflow":
    loaded = load_checkpoint_file(path, dtype)
    models = [loaded.unet, loaded.vae, *loaded.text_encoders]
else:
    state = safetensors.torch.load_file(path)
    def part(prefix):
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    unet_state = unet_to_diffusers(part("model.diffusion_model."))
    vae_state = vae_to_diffusers(part("first_stage_model."))
    text_state = part("cond_stage_model.transformer.text_model.")
    unet = diffusers.UNet2DConditionModel.from_config(family_config("sd1", "unet"))
    unet.to(dtype).load_state_dict(unet_state)
    vae = diffusers.AutoencoderKL.from_config(family_config("sd1", "vae"))
    vae.to(dtype).load_state_dict(vae_state)
    config = transformers.CLIPTextConfig(**family_config("sd1", "text_encoder"))
    text = transformers.CLIPTextModel(config)
    text.to(dtype).load_state_dict(text_state)
    models = [unet, vae, text]
seconds = time.perf_counter() - start
load_peak = (rss_kb("VmHWM:") - before) / 1024
# Memory-mapped weights are read from the file when first touched: touch every one, so the
# figures below include reading all of them.
with torch.inference_mode():
    for model in models:
        for p in model.parameters():
            p.sum()
touched = time.perf_counter() - start
params = sum(p.numel() * p.element_size() for m in models for p in m.parameters())
print(json.dumps({"seconds": seconds, "touched_seconds": touched, "load_peak_mb": load_peak,
                  "peak_mb": (rss_kb("VmHWM:") - before) / 1024, "model_mb": params / 1e6}))
"""


def measure(method: str, path: Path, dtype: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, method, str(path), dtype],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="sd1", choices=["sd1"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sd15-random.safetensors"
        started = time.perf_counter()
        write_checkpoint(path, args.family)
        size_mb = path.stat().st_size / 1e6
        print(f"wrote {size_mb:.0f} MB in {time.perf_counter() - started:.0f} s", flush=True)
        rows = []
        for dtype in ("float16", "float32"):
            for method in ("nodeflow", "naive"):
                runs = [measure(method, path, dtype) for _ in range(args.repeats)]
                best = min(runs, key=lambda r: r["touched_seconds"])
                peak = max(r["peak_mb"] for r in runs)
                rows.append((method, dtype, best, peak))
                print(method, dtype, best, peak, flush=True)

    import diffusers
    import safetensors
    import torch

    lines = [
        SECTION,
        "",
        f"- Date: {utc_date()}",
        "- Machine: "
        + machine_summary(
            f"torch {torch.__version__}",
            f"diffusers {diffusers.__version__}",
            f"safetensors {safetensors.__version__}",
        ),
        "- Command: `python tests/benchmarks/bench_single_file.py`",
        f"- File: SD 1.5 architecture, random fp16 weights, original layout, {size_mb:,.0f} MB, "
        "read from the page cache (just written). Each load in a fresh process; time is the "
        f"best of {args.repeats}, peak the largest (peak resident set minus the resident set "
        "before loading, after imports).",
        "- nodeflow: `load_checkpoint_file` (meta-device models; tensors in the file's dtype "
        "assigned from the memory-mapped file, others read one at a time and converted). "
        "naive: `safetensors.torch.load_file`, models built with random initialisation, "
        "`load_state_dict` (copies).",
        "",
        "| method | dtype | load | load + read every weight once | throughput (file MB/s, "
        "load + read) | weights in memory | peak after load | peak after reading all | "
        "peak / weights |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, dtype, best, peak in rows:
        lines.append(
            f"| {method} | {dtype} | {best['seconds']:.2f} s | {best['touched_seconds']:.2f} s | "
            f"{size_mb / best['touched_seconds']:,.0f} | {best['model_mb']:,.0f} MB | "
            f"{best['load_peak_mb']:,.0f} MB | {peak:,.0f} MB | {peak / best['model_mb']:.2f}x |"
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", SECTION, text)


if __name__ == "__main__":
    main()
