"""nodeflow's pictures against ComfyUI's own, for the same ComfyUI workflow on the same file.

A development check, not run in CI (which has no ComfyUI). Run from the repository root, with
ComfyUI's source in DIR and a Python that can run it (its own venv)::

    python tests/benchmarks/compare_comfyui.py --comfyui DIR --comfy-python PATH \
        [--work build/comfy-compare] [--cases default,euler_a_karras,...] [--size 256] \
        [--steps 4] [--write-benchmarks]

It writes (once) an SD 1.5 checkpoint of the real architecture with random weights (diffusers'
and transformers' own initialisation, seed 0, stored in fp16 in the original single-file layout,
2.1 GB) under ``WORK/models/checkpoints``. Each case is ComfyUI's default text-to-image workflow
in API format (CheckpointLoaderSimple, two CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode,
SaveImage) with its sampler, scheduler, denoise (img2img: LoadImage + VAEEncode) and batch size
changed. ComfyUI runs it with its own executor (``comfyui_runner.py``: ``--cpu``, fp32, plus
``--fp32-text-enc`` except in the cases that keep ComfyUI's CPU default, an fp16 text encoder);
nodeflow imports the same JSON and runs it on the same file, fp32 on the CPU. Compared: the float
images before 8 bits (max |difference| in 1/255) and the saved PNGs (max difference in levels).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))

from report import machine_summary, utc_date, write_section  # noqa: E402

SECTION = "## Pixels against ComfyUI itself (tests/benchmarks/compare_comfyui.py)"
CHECKPOINT = "sd15-random.safetensors"
POSITIVE = "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,"
NEGATIVE = "text, watermark"
SEED = 156680208700286  # ComfyUI's default workflow's seed
INPUT_IMAGE = "compare-input.png"


@dataclass(frozen=True)
class Case:
    name: str
    sampler: str = "euler"
    scheduler: str = "normal"
    denoise: float = 1.0
    batch: int = 1
    fp16_text: bool = False
    """Keep ComfyUI's CPU default (an fp16 text encoder) instead of ``--fp32-text-enc``."""


CASES = {
    case.name: case
    for case in (
        Case("default"),
        Case("default_fp16_text", fp16_text=True),
        Case("euler_a_karras", "euler_ancestral", "karras"),
        Case("dpmpp_2m_karras", "dpmpp_2m", "karras"),
        Case("dpmpp_2m_sde_exponential", "dpmpp_2m_sde", "exponential"),
        Case("ddim_uniform", "ddim", "ddim_uniform"),
        Case("uni_pc_normal", "uni_pc", "normal"),
        Case("img2img_0.6", denoise=0.6),
        Case("batch_2", batch=2),
    )
}


def comfy_prompt(case: Case, size: int, steps: int) -> dict[str, Any]:
    """ComfyUI's default workflow (API format, its node ids) with the case's settings."""
    prompt: dict[str, Any] = {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": SEED, "steps": steps, "cfg": 8.0, "sampler_name": case.sampler,
            "scheduler": case.scheduler, "denoise": case.denoise, "model": ["4", 0],
            "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "5": {"class_type": "EmptyLatentImage",
              "inputs": {"width": size, "height": size, "batch_size": case.batch}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage",
              "inputs": {"filename_prefix": case.name, "images": ["8", 0]}},
    }  # fmt: skip
    if case.denoise < 1:
        del prompt["5"]
        prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": INPUT_IMAGE}}
        prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
        prompt["3"]["inputs"]["latent_image"] = ["11", 0]
    return prompt


# --- inputs ----------------------------------------------------------------------------------


def write_checkpoint(path: Path) -> None:
    """Real SD 1.5 shapes, random weights from the libraries' own initialisation (so norms are
    ones and the picture has structure), stored in fp16 in the original layout."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodes.ldm_layout import unet_to_ldm, vae_to_ldm
    from nodes.single_file import family_config, hf_text_state

    state: dict[str, Any] = {}
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(family_config("sd1", "unet"))
    for key, value in unet_to_ldm(_half(unet)).items():
        state[f"model.diffusion_model.{key}"] = value
    del unet
    vae = AutoencoderKL.from_config(family_config("sd1", "vae"))
    for key, value in vae_to_ldm(_half(vae)).items():
        state[f"first_stage_model.{key}"] = value
    del vae
    text = CLIPTextModel(CLIPTextConfig(**family_config("sd1", "text_encoder")))
    for key, value in hf_text_state(_half(text)).items():
        state[f"cond_stage_model.transformer.{key}"] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, path, metadata={"format": "pt"})


def _half(model: Any) -> dict[str, Any]:
    return {k: v.detach().half() for k, v in model.state_dict().items()}


def write_input(path: Path, size: int) -> None:
    """A picture with structure for img2img: colour gradients and a disc."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size] / size
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.06).astype(float)
    rgb = np.stack([x, y, 0.5 * (1 - disc) + disc * 0.9], axis=-1)
    Image.fromarray((rgb * 255).round().astype(np.uint8)).save(path)


# --- the two runs ----------------------------------------------------------------------------


def run_comfyui(args: argparse.Namespace, cases: list[Case], work: Path) -> None:
    """ComfyUI on every case: one process per text-encoder setting, the model loaded once."""
    for fp16_text in (False, True):
        group = [case for case in cases if case.fp16_text == fp16_text]
        if not group:
            continue
        command = [
            str(args.comfy_python), str(ROOT / "tests" / "benchmarks" / "comfyui_runner.py"),
            "--comfyui", str(args.comfyui), "--models", str(work / "models"),
            "--input", str(work / "input"), "--output", str(work / "comfyui"),
        ]  # fmt: skip
        for case in group:
            command += ["--prompt", str(work / "prompts" / f"{case.name}.json")]
        if not fp16_text:
            command.append("--fp32-text-enc")
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"ComfyUI failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        names = ", ".join(case.name for case in group)
        print(f"comfyui {names}: {time.perf_counter() - start:.0f} s", file=sys.stderr)


def run_nodeflow(cases: list[Case], work: Path) -> dict[str, float]:
    """nodeflow on every case's imported JSON, in this process (the model loads once)."""
    import numpy as np

    from nodeflow.context import Environment
    from nodeflow.executor import Executor
    from nodeflow.imports import load_path
    from nodeflow.plugins import load_catalog
    from nodeflow.runtime import Runtime

    catalog = load_catalog()
    runtime = Runtime("cpu", "fp32")  # one model manager: the checkpoint loads once
    seconds = {}
    for case in cases:
        out = work / "nodeflow" / case.name
        out.mkdir(parents=True, exist_ok=True)
        env = Environment.from_dirs(work / "models", out, work / "input")
        executor = Executor(catalog, env=env, runtime=runtime, previews=False)
        imported = load_path(work / "prompts" / f"{case.name}.json", catalog.loaders)
        workflow = imported.workflow
        decode = [k for k, n in workflow.nodes.items() if n.type == "VAEDecode"]
        saves = [k for k, n in workflow.nodes.items() if n.type == "SaveImage"]
        start = time.perf_counter()
        result = executor.run(workflow, targets=decode + saves)
        if not result.ok:
            raise SystemExit(f"nodeflow failed on {case.name}: {result.error}")
        seconds[case.name] = time.perf_counter() - start
        pixels = result.values[decode[0]]["image"].pixels.numpy().astype(np.float32)
        np.save(out / f"{case.name}.npy", pixels, allow_pickle=False)
        print(f"nodeflow {case.name}: {seconds[case.name]:.0f} s", file=sys.stderr)
    return seconds


# --- comparing -------------------------------------------------------------------------------


def compare(case: Case, work: Path) -> dict[str, Any]:
    import numpy as np
    from PIL import Image

    ours = np.load(work / "nodeflow" / case.name / f"{case.name}.npy", allow_pickle=False)
    theirs = np.load(work / "comfyui" / case.name / f"{case.name}.npy", allow_pickle=False)
    if ours.shape != theirs.shape:
        raise SystemExit(f"{case.name}: shapes differ, {ours.shape} vs {theirs.shape}")
    pngs_ours = sorted((work / "nodeflow" / case.name).glob("*.png"))
    # ComfyUI's SaveImage keeps the output folder it was made with, and its executor reuses the
    # node between prompts: find each case's PNGs by their name, wherever they landed
    pattern = re.compile(rf"{re.escape(case.name)}_\d{{5}}_\.png")
    pngs_theirs = sorted(p for p in (work / "comfyui").rglob("*.png") if pattern.fullmatch(p.name))
    png_diff = 0
    for mine, other in zip(pngs_ours, pngs_theirs, strict=True):
        a = np.asarray(Image.open(mine).convert("RGB"), dtype=np.int16)
        b = np.asarray(Image.open(other).convert("RGB"), dtype=np.int16)
        png_diff = max(png_diff, int(np.abs(a - b).max()))
    diff = np.abs(ours - theirs)
    return {
        "case": case.name,
        "float_max_255": float(diff.max() * 255),
        "float_mean_255": float(diff.mean() * 255),
        "png_max_levels": png_diff,
        "pngs": len(pngs_ours),
        "spread_255": float(theirs.std() * 255),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI's source folder")
    parser.add_argument("--comfy-python", type=Path, required=True, help="a Python for ComfyUI")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "comfy-compare")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--skip-comfyui", action="store_true", help="reuse ComfyUI's outputs")
    parser.add_argument("--skip-nodeflow", action="store_true", help="reuse nodeflow's outputs")
    parser.add_argument("--write-benchmarks", action="store_true")
    parser.add_argument(
        "--also", type=Path, action="append", default=[],
        help="another work folder whose results.json joins the BENCHMARKS.md table",
    )  # fmt: skip
    args = parser.parse_args()

    cases = [CASES[name] for name in args.cases.split(",")]
    work = args.work.resolve()
    checkpoint = work / "models" / "checkpoints" / CHECKPOINT
    if not checkpoint.exists():
        write_checkpoint(checkpoint)
    (work / "input").mkdir(parents=True, exist_ok=True)
    write_input(work / "input" / INPUT_IMAGE, args.size)
    (work / "prompts").mkdir(exist_ok=True)
    for case in cases:
        prompt = comfy_prompt(case, args.size, args.steps)
        (work / "prompts" / f"{case.name}.json").write_text(json.dumps(prompt, indent=1))
    if not args.skip_comfyui:
        run_comfyui(args, cases, work)
    if not args.skip_nodeflow:
        run_nodeflow(cases, work)
    done = [
        case
        for case in cases
        if all((work / side / case.name / f"{case.name}.npy").exists()
               for side in ("comfyui", "nodeflow"))
    ]  # fmt: skip
    rows = [{**compare(case, work), "size": args.size, "steps": args.steps} for case in done]
    for row in rows:
        print(json.dumps(row))
    (work / "results.json").write_text(json.dumps(rows, indent=1))
    if args.write_benchmarks:
        for other in args.also:
            rows += json.loads((other.resolve() / "results.json").read_text())
        write_section(ROOT / "BENCHMARKS.md", SECTION, report(args, rows))
    return 0


def report(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    commit = (
        subprocess.run(
            ["git", "-C", str(args.comfyui), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        or (args.comfyui / "COMMIT").read_text().strip()
    )
    lines = [
        SECTION,
        "",
        f"- Date: {utc_date()}. Machine: {machine_summary()}. ComfyUI commit: {commit}.",
        "- Model: SD 1.5 architecture, random weights (libraries' initialisation, seed 0), "
        f"fp16 single file (2.1 GB); CFG 8, seed {SEED}, ComfyUI's default prompts; size and "
        "steps per row. Both run fp32 on the CPU; ComfyUI with --cpu --fp32-text-enc unless the "
        "case says fp16_text (its CPU default: CLIP in fp16).",
        "- Float: max and mean |difference| of the decoded images before 8 bits, in 1/255; PNG: "
        "the largest difference between the saved files, in levels; spread: the standard "
        "deviation of ComfyUI's image (a picture, not a flat field), in 1/255.",
        "",
        "| case | size, steps | float max | float mean | PNG max | pictures | spread |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['size']}, {row['steps']} | {row['float_max_255']:.4f} "
            f"| {row['float_mean_255']:.5f} | {row['png_max_levels']} | {row['pngs']} "
            f"| {row['spread_255']:.1f} |"
        )
    lines += ["", *NOTES]
    return "\n".join(lines)


NOTES = [
    "What had to match, on nodeflow's side: ComfyUI's schedules, samplers and noise "
    "(`ComfyScheduler`: one seeded CPU randn over the batch, scaled by sqrt(1 + sigma_max^2) "
    "from the top); SaveImage truncating to 8 bits (an imported SaveImage has "
    "`rounding: truncate`); VAEEncode keeping the posterior's mean, so the seed's first draw is "
    "the noise (an imported VAEEncode has `posterior: mean`); UniPC as ComfyUI runs it. A PNG "
    "may still differ by 1 level where a float value sits on a level boundary. ComfyUI's CPU "
    "default keeps the text encoder in fp16 (the fp16_text row): its image was bit-identical to "
    "the `--fp32-text-enc` one here, because this file stores fp16 weights already; for a file "
    "with fp32 text-encoder weights, compare with `--fp32-text-enc` (nodeflow encodes in fp32).",
]


if __name__ == "__main__":
    sys.exit(main())
