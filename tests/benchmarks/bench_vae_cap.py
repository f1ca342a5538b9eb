"""The ceiling a demo VAE sets on adherence: the evaluator's reading of its own reconstructions.

Run from the repository root (on demand, not in CI; ``nodes/demo/vae_cap.py`` holds the
measurement, ``tests/nodes/test_demo_vae_cap.py`` its tests)::

    python tests/benchmarks/bench_vae_cap.py [--vae nodes/demo/model/demo-sd/vae] [--n 200]
        [--seed 0] [--threads 1] [--no-write]
    python tests/benchmarks/bench_vae_cap.py --model FOLDER --no-write   # FOLDER/vae
    python tests/benchmarks/bench_vae_cap.py --style outlined   # the style LoRA's ceiling

``--n`` held-out scenes (the first of ``random.Random(--seed)``, the adherence benchmark's
captions) are rendered, encoded and decoded (the posterior's mode, and a posterior sample as the
U-Net's training latents are drawn) and scored by ``nodes.demo.evaluate.score``. A U-Net cannot
score above these figures through this decoder. ``--style outlined`` draws the same scenes in the
outlined style (the style LoRA's training data) and writes its own section: the outline score and
colour a style LoRA can reach at best through this decoder. It prints a markdown section and
writes it into BENCHMARKS.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from report import machine_summary, utc_date, write_section  # noqa: E402

from nodes.demo.adherence import held_out_scenes  # noqa: E402
from nodes.demo.vae_cap import CHECKS, reconstruction_cap, vae_reconstructor  # noqa: E402

SECTION = "## The demo VAE's ceiling on adherence (tests/benchmarks/bench_vae_cap.py)"
STYLE_SECTION = (
    "## The demo VAE's ceiling on the outlined style (tests/benchmarks/bench_vae_cap.py --style "
    "outlined)"
)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--vae", type=Path, default=REPO / "nodes/demo/model/demo-sd/vae")
    which.add_argument("--model", type=Path, help="a model folder: measures its vae/")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--style",
        choices=("plain", "outlined"),
        default="plain",
        help="draw the scenes in this style (outlined: the style LoRA's data)",
    )
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.model is not None:  # e.g. a train_decoder output or one of its checkpoints
        args.vae = args.model / "vae"

    import diffusers
    import torch
    from diffusers import AutoencoderKL

    torch.set_num_threads(args.threads)
    vae = AutoencoderKL.from_pretrained(args.vae, torch_dtype=torch.float32).eval()
    scenes = [replace(scene, style=args.style) for scene in held_out_scenes(args.n, args.seed)]
    section = SECTION if args.style == "plain" else STYLE_SECTION
    started = time.perf_counter()
    caps = {
        "renders themselves": reconstruction_cap(lambda pixels: pixels, scenes),
        "reconstruction (mode)": reconstruction_cap(vae_reconstructor(vae), scenes),
        "reconstruction (sample)": reconstruction_cap(
            vae_reconstructor(vae, sample=True, seed=args.seed), scenes
        ),
    }
    seconds = time.perf_counter() - started
    header = " | ".join(check.removesuffix("_ok").replace("_", " ") for check in CHECKS)
    rows = [
        f"| pictures | {header} | mean outline score | read as outlined |",
        "|---" * (len(CHECKS) + 3) + "|",
    ]
    for name, cap in caps.items():
        cells = " | ".join(percent(cap["accuracy"][check]) for check in CHECKS)
        rows.append(
            f"| {name} | {cells} | {cap['outline_score']:.3f} | {percent(cap['outlined'])} |"
        )
    mode = caps["reconstruction (mode)"]
    kinds = ", ".join(f"{kind} {percent(value)} ({mode['kind_counts'][kind]})"
                      for kind, value in mode["shape_by_kind"].items())  # fmt: skip
    misread = ", ".join(f"{k} {v}" for k, v in mode["misread"].items()) or "none"
    shown = args.vae.resolve()
    shown = shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])])
    text = "\n".join([
        section,
        "",
        f"- Date: {utc_date()}",
        "- Machine: " + machine_summary(f"torch {torch.__version__}",
                                        f"diffusers {diffusers.__version__}",
                                        f"torch threads {args.threads}"),
        f"- Command: `{command.strip()}`",
        f"- VAE: `{shown}`; {args.n} held-out scenes (`random.Random({args.seed})`, the "
        f"adherence benchmark's), drawn {args.style}; {seconds:.0f} s.",
        "",
        "Share of pictures whose reading matches the caption (position over the "
        f"{sum(s.position is not None for s in scenes)} captions that name one):",
        "",
        *rows,
        "",
        f"Shape read correctly on the mode's reconstructions, by kind (pictures): {kinds}. "
        f"Misread (drawn->read): {misread}.",
        "",
    ])  # fmt: skip
    print(text)
    if args.write:
        write_section(args.markdown, section, text)
        print(f"(written to {args.markdown})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
