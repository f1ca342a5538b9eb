"""Style LoRAs side by side: outline score, colour and whole caption per strength, same captions.

Run from the repository root (on demand, not in CI; the CI floor is
``tests/nodes/test_demo_style_adherence.py``, which calls the same code)::

    python tests/benchmarks/bench_style_lora.py --lora old=build/old.safetensors \\
        --lora new=nodes/demo/model/demo-style.safetensors [--n 200] [--strengths 0 0.5 1]
        [--cfg 7.5] [--steps 20] [--seed 0] [--threads 1] [--no-write]

Why a second benchmark beside ``bench_adherence.py``: that one scores one LoRA after a whole CFG
sweep; comparing two LoRAs (or screening a training run's saves, ``--n 50 --strengths 1
--no-write``) needs several LoRAs on the same captions and seeds, without the sweep. Each
``--lora LABEL=PATH`` is run through the standard txt2img graph (``nodes.demo.adherence``:
LoadCheckpoint ``demo``, LoadLoRA, CFG, euler, VAEDecode) at every strength, Denoise seed
``--seed + i`` for caption ``i``. Strength 0 is the base model whatever the LoRA (its patches are
scaled by zero), so it is drawn once, with the first LoRA, and shown as one shared row.

It prints a markdown section and writes it into BENCHMARKS.md (``--no-write`` to skip).
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
from report import machine_summary, utc_date, write_section  # noqa: E402

from nodes.demo.adherence import AdherenceRunner, Sample, held_out_scenes, summarize  # noqa: E402

SECTION = "## demo-style v2 (tests/benchmarks/bench_style_lora.py)"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def labelled(text: str) -> tuple[str, Path]:
    """``LABEL=PATH`` (or a bare path, labelled by its stem) for ``--lora``."""
    label, _, path = text.rpartition("=")
    return (label or Path(path).stem), Path(path).resolve()


def row(label: str, strength: float, samples: Sequence[Sample]) -> str:
    summary = summarize(samples)
    outlined = sum(s.result["style"] == "outlined" for s in samples) / len(samples)
    cells = [
        label,
        f"{strength:g}",
        str(len(samples)),
        f"**{summary['outline_score']:.3f}**",
        percent(outlined),
        f"**{percent(summary['color_ok'])}**",
        percent(summary["shape_ok"]),
        percent(summary["background_ok"]),
        percent(summary["caption_ok"]),
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--lora",
        type=labelled,
        action="append",
        required=True,
        metavar="LABEL=PATH",
        help="a style LoRA file; give it once per LoRA",
    )
    parser.add_argument("--model", default="demo", help="LoadCheckpoint's path (default: demo)")
    parser.add_argument("--n", type=int, default=200, help="held-out captions")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scheduler", default="euler")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args(argv)  # fmt: skip
    import diffusers
    import torch

    torch.set_num_threads(args.threads)
    scenes = held_out_scenes(args.n, args.seed)
    started = time.perf_counter()
    rows: list[str] = []
    for index, (label, path) in enumerate(args.lora):
        runner = AdherenceRunner(args.model, lora=str(path), steps=args.steps,
                                 scheduler=args.scheduler)  # fmt: skip
        for strength in args.strengths:
            if strength == 0 and index > 0:
                continue  # the base model, already drawn with the first LoRA
            samples = runner.run(scenes, cfg=args.cfg, seed=args.seed, strength=strength)
            shown = "base (any LoRA)" if strength == 0 else label
            rows.append(row(shown, strength, samples))
            print(rows[-1], file=sys.stderr, flush=True)
        runner.close()
    minutes = (time.perf_counter() - started) / 60
    command = "python tests/benchmarks/bench_style_lora.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    files = "; ".join(
        f"{label}: `{path.relative_to(REPO) if path.is_relative_to(REPO) else path}` "
        f"({path.stat().st_size / 1000:.0f} kB)"
        for label, path in args.lora
    )
    text = "\n".join([
        SECTION,
        "",
        f"- Date: {utc_date()}",
        "- Machine: " + machine_summary(f"torch {torch.__version__}",
                                        f"diffusers {diffusers.__version__}",
                                        f"torch threads {args.threads}"),
        f"- Command: `{command.strip()}`",
        f"- LoRAs: {files}",
        f"- Settings: model `{args.model}`, {args.n} held-out captions "
        f"(`held_out_scenes({args.n}, {args.seed})`, the adherence benchmark's), Denoise seed "
        f"{args.seed} + caption index at every strength, {args.scheduler} {args.steps} steps, "
        f"CFG {args.cfg:g}, 64x64; scored by `nodes.demo.evaluate.score`. {minutes:.1f} minutes.",
        "",
        "| LoRA | strength | pictures | **mean outline score** | read as outlined "
        "| **shape color** | shape | background | whole caption |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])  # fmt: skip
    print(text)
    if args.write:
        write_section(args.markdown, SECTION, text)
        print(f"(written to {args.markdown})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
