"""DDPM against rectified flow at few steps: the U-Net demo (``demo``, epsilon objective),
``demo-sd3`` (rectified-flow MM-DiT) and the U-Net demo with its LCM-LoRA (``demo-lcm``) on the
same held-out captions at 4, 8 and 20 steps.

Run from the repository root (on demand, not in CI)::

    python tests/benchmarks/bench_flow_vs_ddpm.py [--n 200] [--steps 4 8 20]
        [--unet demo] [--unet-cfg 7.5] [--flow demo-sd3] [--flow-cfg 7] [--flow-shift 0]
        [--lora nodes/demo/model/demo-lcm.safetensors | --lora none] [--lora-cfg 1]
        [--seed 0] [--threads 1] [--device cpu] [--no-write]

Both models go through the same standard txt2img graph (``nodes.demo.adherence``: LoadCheckpoint,
TextEncode positive and "", Scheduler ``euler``, CFG, Denoise, VAEDecode): for the U-Net that is
``EulerDiscreteScheduler`` over SD's noise schedule, for SD3 the flow-matching Euler
(``FlowMatchEulerDiscreteScheduler``). The LCM-LoRA rows are the U-Net demo with ``--lora`` at
strength 1 and the ``lcm`` scheduler (LCM's multistep consistency sampler, not Euler) at guidance
``--lora-cfg`` (1: one U-Net pass per step, the guidance distilled into the LoRA), the issue's
"and the LCM-LoRA where it exists". The same captions and Denoise seeds (``seed + i``) serve
every setting, so the comparison is paired. Each picture is scored by
``nodes.demo.evaluate.score`` (whole caption and per attribute); seconds per picture are the wall
time of the workflow runs after a warm-up run (model loading excluded). Parameter counts are read
from the models' safetensors headers (the LoRA's added to the U-Net demo's). It prints a markdown
section and writes it into BENCHMARKS.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from bench_few_step import lora_training  # noqa: E402
from report import machine_summary, utc_date, write_section  # noqa: E402

from nodes.demo.adherence import AdherenceRunner, Sample, held_out_scenes, summarize  # noqa: E402

SECTION = "## Rectified flow against DDPM at few steps (tests/benchmarks/bench_flow_vs_ddpm.py)"
COLUMNS = (
    ("caption_ok", "**whole caption**"),
    ("color_ok", "shape color"),
    ("background_ok", "background"),
    ("shape_ok", "shape"),
    ("count_ok", "count"),
    ("size_ok", "size"),
    ("position_ok", "position"),
)
LCM = "LCM-LoRA on the U-Net (lcm sampler)"
COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae")


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def parameters(folder: Path) -> dict[str, int]:
    """Parameters per component of a diffusers folder, from the safetensors headers (no load)."""
    from safetensors import safe_open

    counts: dict[str, int] = {}
    for part in COMPONENTS:
        total = 0
        for file in sorted((folder / part).glob("*.safetensors")):
            with safe_open(file, framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    shape = f.get_slice(key).get_shape()
                    size = 1
                    for dim in shape:
                        size *= dim
                    total += size
        if total:
            counts[part] = total
    return counts


def lora_parameters(path: Path) -> int:
    """Parameters of a LoRA file, from its safetensors header (no load)."""
    from safetensors import safe_open

    total = 0
    with safe_open(path, framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            size = 1
            for dim in f.get_slice(key).get_shape():
                size *= dim
            total += size
    return total


def describe(counts: dict[str, int]) -> str:
    parts = ", ".join(f"{name} {count / 1e6:.2f} M" for name, count in counts.items())
    return f"{sum(counts.values()) / 1e6:.2f} M ({parts})"


def measure(
    runner: AdherenceRunner, scenes: list, cfg: float, seed: int, label: str
) -> tuple[list[Sample], float]:
    """The scored pictures of one setting and its seconds per picture."""
    runner.images("warm-up", cfg=cfg, seed=seed)  # loads the model outside the timing
    runner.seconds, runner.pictures = 0.0, 0

    def progress(done: int, total: int) -> None:
        if done == total or done % 25 == 0:
            print(f"  {label}: {done}/{total}", file=sys.stderr, flush=True)

    strength = None if runner.lora is None else 1.0
    samples = runner.run(scenes, cfg=cfg, seed=seed, progress=progress, strength=strength)
    return samples, runner.seconds / max(1, runner.pictures)


def row(label: str, samples: list[Sample], seconds: float) -> str:
    summary = summarize(samples)
    cells = " | ".join(percent(summary[key]) for key, _ in COLUMNS)
    return f"| {label} | {len(samples)} | {cells} | {seconds:.3f} |"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=200, help="held-out captions")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 20])
    parser.add_argument("--unet", default="demo", help="the DDPM model (LoadCheckpoint path)")
    parser.add_argument("--unet-cfg", type=float, default=7.5)
    parser.add_argument("--flow", default="demo-sd3", help="the rectified-flow model")
    parser.add_argument("--flow-cfg", type=float, default=7.0)
    parser.add_argument("--flow-shift", type=float, default=0.0, help="0: the model's own (3)")
    parser.add_argument(
        "--lora", default=str(REPO / "nodes/demo/model/demo-lcm.safetensors"),
        help="the LCM-LoRA file for the DDPM model ('none': no LCM rows)",
    )  # fmt: skip
    parser.add_argument("--lora-cfg", type=float, default=1.0, help="the LCM-LoRA's guidance")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python tests/benchmarks/bench_flow_vs_ddpm.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    import diffusers
    import torch

    torch.set_num_threads(args.threads)
    scenes = held_out_scenes(args.n, args.seed)
    started = time.perf_counter()
    models = {
        "DDPM U-Net": (args.unet, args.unet_cfg, 0.0),
        "rectified-flow MM-DiT": (args.flow, args.flow_cfg, args.flow_shift),
    }
    lora = None if args.lora.lower() == "none" else Path(args.lora).resolve()
    if lora is not None:
        models[LCM] = (args.unet, args.lora_cfg, 0.0)
    results: dict[tuple[str, int], tuple[list[Sample], float]] = {}
    sizes: dict[str, tuple[Path, dict[str, int]]] = {}
    # steps outermost, so a change of machine load during the run hits every model alike
    for steps in args.steps:
        for name, (model, cfg, shift) in models.items():
            if name == LCM:
                runner = AdherenceRunner(
                    model, lora=str(lora), steps=steps, scheduler="lcm", device=args.device
                )
            else:
                runner = AdherenceRunner(model, steps=steps, device=args.device, shift=shift)
            if name not in sizes:
                folder = runner.resolved_model()
                counts = parameters(folder)
                if name == LCM:
                    counts["LoRA"] = lora_parameters(lora)
                sizes[name] = (folder, counts)
            label = f"{name} {steps}"
            results[(name, steps)] = measure(runner, scenes, cfg, args.seed, label)
            runner.close()
    minutes = (time.perf_counter() - started) / 60

    header = " | ".join(title for _, title in COLUMNS)
    lines = [
        SECTION,
        "",
        f"- Date: {utc_date()}",
        "- Machine: "
        + machine_summary(
            f"device {args.device}",
            f"torch threads {args.threads}",
            f"torch {torch.__version__}",
            f"diffusers {diffusers.__version__}",
        ),
        f"- Command: `{command.strip()}`",
    ]
    for name, (model, cfg, shift) in models.items():
        folder, counts = sizes[name]
        own = ", shift: the model's own (SD3's 3.0)" if name.startswith("rectified") else ""
        shift_text = f", shift {shift:g}" if shift else own
        where = folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder
        if name == LCM and lora is not None:
            file = lora.relative_to(REPO) if lora.is_relative_to(REPO) else lora
            lines.append(
                f"- {name}: `{model}` ({where}) + `{file}` at strength 1 "
                f"(nodes.demo.train_lcm: {lora_training(str(lora))}), scheduler `lcm`, "
                f"guidance {cfg:g}; "
                f"parameters {describe(counts)}"
            )
            continue
        lines.append(
            f"- {name}: `{model}` ({where}), CFG {cfg:g}{shift_text}; parameters {describe(counts)}"
        )
    lines += [
        f"- Settings: {args.n} held-out captions, Denoise seed {args.seed} + caption index for "
        f"every setting, scheduler `euler` (Euler over SD's noise schedule for the U-Net, "
        f"flow-matching Euler for SD3; `lcm` for the LCM-LoRA rows), 64x64. "
        f"{minutes:.1f} minutes in all.",
        "",
        f"| model, steps | pictures | {header} | s/picture |",
        "|---" * (len(COLUMNS) + 3) + "|",
    ]
    for (name, steps), (samples, seconds) in sorted(
        results.items(), key=lambda kv: (kv[0][0], kv[0][1])
    ):
        lines.append(row(f"{name}, {steps}", samples, seconds))
    lines += ["", retention(results, args.steps, list(models)), ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.markdown, SECTION, text)
    return 0


def retention(
    results: dict[tuple[str, int], tuple[list[Sample], float]], steps: list[int], names: list[str]
) -> str:
    """Each model's whole-caption score at its fewest steps as a share of its score at its most:
    how much of its quality survives cutting the steps."""
    few, many = min(steps), max(steps)
    parts = []
    for name in names:
        low = summarize(results[(name, few)][0])["caption_ok"] or 0.0
        high = summarize(results[(name, many)][0])["caption_ok"] or 0.0
        share = f"{low / high:.0%}" if high else "n/a"
        parts.append(f"{name} keeps {share} ({percent(low)} of {percent(high)})")
    return f"- Whole-caption score at {few} steps as a share of {many} steps: " + "; ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
