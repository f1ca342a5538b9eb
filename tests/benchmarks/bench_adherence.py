"""Prompt adherence of the demo model: held-out captions through nodeflow, scored by rule.

Run from the repository root (on demand, not in CI; the CI floor is
``tests/nodes/test_demo_adherence.py``, which calls the same code)::

    python tests/benchmarks/bench_adherence.py [--model PATH] [--lora PATH] [--n 200]
        [--cfg 1 2 4 7.5] [--strengths 0 0.5 1] [--steps 20] [--scheduler euler] [--seed 0]
        [--per-caption 1] [--threads 1] [--device cpu] [--no-write]

``--n`` held-out scenes (``nodes.demo.dataset.is_held_out``: their shape-color-background triples
never occur in training) are drawn from ``random.Random(--seed)``; each caption is rendered by the
standard txt2img graph (``nodes.demo.adherence.adherence_workflow``: LoadCheckpoint, [LoadLoRA,]
TextEncode and TextEncode(""), Scheduler, CFG, EmptyLatent 64x64, Denoise, VAEDecode) with Denoise
seed ``--seed + i`` at every CFG scale, so the scales are compared on the same noise. Each picture
is scored by ``nodes.demo.evaluate.score``. With ``--lora``, the same captions and seeds run again
at the default CFG (7.5) for each strength, and the mean outline score measures the style.

Targets (``nodes/demo/TRAINING.md``): shape-color accuracy (the color the shapes are drawn in,
``color_ok``) and background accuracy >= 90% at CFG 7.5;
accuracy rising from CFG 1 to 4; the LoRA's mean outline score rising with strength.

It prints a markdown section and writes it into BENCHMARKS.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # nodes.demo, when run as a script without an installed package
from report import machine_summary, utc_date, write_section  # noqa: E402

from nodes.demo.adherence import (  # noqa: E402
    DEFAULT_CFG,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    AdherenceRunner,
    Sample,
    accuracy,
    held_out_scenes,
    summarize,
)

SECTION = "## Prompt adherence of the demo model (tests/benchmarks/bench_adherence.py)"
TARGET_ACCURACY = 0.90
RISING_FROM, RISING_TO = 1.0, 4.0
COLUMNS = (
    ("color_ok", "**shape color**"),
    ("background_ok", "**background**"),
    ("shape_ok", "shape"),
    ("shape_and_color_ok", "shape and color"),
    ("count_ok", "count"),
    ("size_ok", "size"),
    ("position_ok", "position"),
    ("caption_ok", "whole caption"),
)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def model_label(model: str) -> str:
    """``--model`` as LoadCheckpoint gets it: an absolute path for a folder given by path, so a
    relative path works from any directory; anything else (``demo``, a models-dir name) as is."""
    return str(Path(model).resolve()) if Path(model).exists() else model


def training_summary(folder: Path) -> str:
    """The model's ``training_summary.json`` in one line, or a note that it has none."""
    path = folder / "training_summary.json"
    if not path.is_file():
        return f"no training_summary.json beside the model ({folder})"
    summary: dict[str, Any] = json.loads(path.read_text())
    if summary.get("grown_from"):
        return grown_summary(summary)
    return "; ".join(_trained_parts(summary) + _decoder_parts(summary))


def grown_summary(summary: dict[str, Any]) -> str:
    """A ``train_grow`` model (demo v2): what it grew from, then each grown run's steps (the run
    it started from, if any, first) and the decoders fine-tuned on the result."""
    base = summary["grown_from"]
    runs = [run for run in (summary.get("started_from_run"), summary) if run]
    steps = " + ".join(str(run.get("step", "?")) for run in runs)
    minutes = sum(run.get("minutes", float("nan")) for run in runs)
    args = summary.get("args", {})
    params = summary.get("parameters", {})
    added = summary.get("attention_levels", {}).get("added", "?")
    parts = [
        "grown from: " + ", ".join(_trained_parts(base)),
        f"attention added at levels {added}, then {steps} steps at batch "
        f"{args.get('batch_size', '?')}, seed {args.get('seed', '?')}, device "
        f"{args.get('device', '?')}, {args.get('threads', '?')} threads, {minutes:.1f} minutes",
        "parameters " + ", ".join(f"{k} {v:,}" for k, v in params.items()),
        f"last run: `{summary.get('command', '?')}`",
    ]
    return "; ".join(parts + _decoder_parts(summary))


def _trained_parts(summary: dict[str, Any]) -> list[str]:
    """A ``train_demo`` run (and the run it resumed) as summary phrases."""
    args = summary.get("args", {})
    params = summary.get("parameters", {})
    previous = summary.get("resumed_from")
    vae_steps = (previous or summary).get("args", {}).get("vae_steps", "?")
    steps = args.get("steps", "?")
    minutes = summary.get("minutes", float("nan"))
    if previous:  # a --resume run: the first run's steps and time, then this one's
        steps = f"{previous['args'].get('steps', '?')} + {steps} (resumed)"
        minutes += previous.get("minutes", float("nan"))
    minutes += sum(run.get("minutes", float("nan")) for run in _decoders(summary))
    parts = [
        f"{vae_steps} VAE + {steps} diffusion steps at batch "
        f"{args.get('batch_size', '?')}, seed {args.get('seed', '?')}, device "
        f"{args.get('device', '?')}, {args.get('threads', '?')} threads"
        + (", micro architecture" if args.get("micro") == "True" else ""),
        f"{minutes:.1f} minutes in all",
        "parameters " + ", ".join(f"{k} {v:,}" for k, v in params.items()),
    ]
    if summary.get("adherence"):
        parts.append(
            f"trainer's quick check at CFG {args.get('eval_cfg', '?')} on "
            f"{args.get('eval_samples', '?')} captions (diffusers pipeline): "
            + ", ".join(f"{k} {percent(v)}" for k, v in summary["adherence"].items())
        )
    return parts


def _decoders(summary: dict[str, Any]) -> list[dict[str, Any]]:
    decoders = summary.get("decoder", [])
    return [decoders] if isinstance(decoders, dict) else decoders  # one record per fine-tune


def _decoder_parts(summary: dict[str, Any]) -> list[str]:
    return [f"then the VAE decoder fine-tuned: `{run['command']}`" for run in _decoders(summary)]


def cfg_table(by_cfg: dict[float, list[Sample]], seconds: dict[float, float]) -> str:
    header = " | ".join(title for _, title in COLUMNS)
    lines = [
        f"| CFG | pictures | {header} | mean outline score | s/picture |",
        "|---" * (len(COLUMNS) + 4) + "|",
    ]
    for cfg, samples in by_cfg.items():
        summary = summarize(samples)
        cells = " | ".join(percent(summary[key]) for key, _ in COLUMNS)
        lines.append(
            f"| {cfg:g} | {len(samples)} | {cells} | {summary['outline_score']:.3f} "
            f"| {seconds[cfg] / max(1, len(samples)):.2f} |"
        )
    return "\n".join(lines)


KINDS = ("one shape", "one shape, positioned", "two shapes", "three shapes")


def caption_kind(scene: Any) -> str:
    """Which of ``KINDS`` a held-out scene's caption is: where a model loses whole captions
    differs by kind (position only matters for a positioned single shape; crowding for three)."""
    if scene.count == 1:
        return KINDS[1] if scene.position is not None else KINDS[0]
    return KINDS[scene.count]


def kind_table(by_cfg: dict[float, list[Sample]]) -> str:
    """Whole-caption and shape accuracy per CFG, split by ``caption_kind``."""
    counts = {kind: 0 for kind in KINDS}
    for sample in next(iter(by_cfg.values()), []):
        counts[caption_kind(sample.scene)] += 1
    header = " | ".join(f"{kind} ({counts[kind]})" for kind in KINDS)
    lines = [f"| CFG | {header} |", "|---" * (len(KINDS) + 1) + "|"]
    for cfg, samples in by_cfg.items():
        cells = []
        for kind in KINDS:
            chosen = [s for s in samples if caption_kind(s.scene) == kind]
            whole, shape = accuracy(chosen, "caption_ok"), accuracy(chosen, "shape_ok")
            cells.append(f"{percent(whole)} / {percent(shape)}")
        lines.append(f"| {cfg:g} | {' | '.join(cells)} |")
    return "\n".join(lines)


def strength_table(by_strength: dict[float, list[Sample]]) -> str:
    lines = [
        "| LoRA strength | pictures | **mean outline score** | read as outlined "
        "| shape color | background | whole caption |",
        "|---|---|---|---|---|---|---|",
    ]
    for strength, samples in by_strength.items():
        summary = summarize(samples)
        outlined = sum(s.result["style"] == "outlined" for s in samples) / len(samples)
        lines.append(
            f"| {strength:g} | {len(samples)} | **{summary['outline_score']:.3f}** "
            f"| {percent(outlined)} | {percent(summary['color_ok'])} "
            f"| {percent(summary['background_ok'])} "
            f"| {percent(summary['caption_ok'])} |"
        )
    return "\n".join(lines)


def rising(values: Sequence[float | None]) -> bool:
    """Non-decreasing throughout and higher at the end than at the start."""
    known = [v for v in values if v is not None]
    return (
        len(known) == len(values) >= 2
        and all(a <= b for a, b in itertools.pairwise(known))
        and known[-1] > known[0]
    )


def verdicts(
    by_cfg: dict[float, list[Sample]], by_strength: dict[float, list[Sample]] | None
) -> list[str]:
    """One line per target: the figure and whether it is met (or why it was not measured)."""
    lines = []
    default = by_cfg.get(DEFAULT_CFG)
    for key, name in (("color_ok", "shape-color"), ("background_ok", "background")):
        if default is None:
            lines.append(f"- {name} >= 90% at CFG {DEFAULT_CFG:g}: not measured (no CFG 7.5 run)")
            continue
        value = summarize(default)[key]
        met = value is not None and value >= TARGET_ACCURACY
        lines.append(
            f"- {name} >= 90% at CFG {DEFAULT_CFG:g}: {percent(value)}, "
            f"{'met' if met else 'NOT met'}"
        )
    ladder = sorted(c for c in by_cfg if RISING_FROM <= c <= RISING_TO)
    for key, name in (("color_ok", "shape-color"), ("background_ok", "background")):
        if RISING_FROM not in by_cfg or RISING_TO not in by_cfg:
            lines.append(f"- {name} rising from CFG 1 to 4: not measured (needs CFG 1 and 4)")
            continue
        values = [summarize(by_cfg[c])[key] for c in ladder]
        shown = " -> ".join(percent(v) for v in values)
        ok = rising(values)
        lines.append(f"- {name} rising from CFG 1 to 4 ({shown}): {'met' if ok else 'NOT met'}")
    if by_strength is None:
        lines.append("- style score rising with LoRA strength: not measured (no --lora)")
    else:
        means = [summarize(s)["outline_score"] for s in by_strength.values()]
        shown = " -> ".join(f"{v:.3f}" for v in means)
        ok = rising(means)
        lines.append(
            f"- mean outline score rising with LoRA strength ({shown}): "
            f"{'met' if ok else 'NOT met'}"
        )
    return lines


def machine(threads: int, device: str) -> str:
    import diffusers
    import torch

    return machine_summary(
        f"device {device}",
        f"torch threads {threads}",
        f"torch {torch.__version__}",
        f"diffusers {diffusers.__version__}",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--model",
        default="demo",
        help="a diffusers folder, or a LoadCheckpoint name; default: the built-in 'demo'",
    )
    parser.add_argument("--lora", default=None, help="a style LoRA file (kohya .safetensors)")
    parser.add_argument("--n", type=int, default=200, help="held-out captions")
    parser.add_argument("--cfg", type=float, nargs="+", default=[1.0, 2.0, 4.0, 7.5])
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--scheduler", default=DEFAULT_SCHEDULER)
    parser.add_argument(
        "--rescale", type=float, default=0.0, help="CFG guidance rescale (0: off; Lin et al.: 0.7)"
    )
    parser.add_argument("--seed", type=int, default=0, help="scene draw and first Denoise seed")
    parser.add_argument(
        "--per-caption", type=int, default=1, help="pictures per caption, as one Denoise batch"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="nodeflow runtime device (cpu, cuda)")
    parser.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the section into BENCHMARKS.md",
    )
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python tests/benchmarks/bench_adherence.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    import torch

    torch.set_num_threads(args.threads)
    model = model_label(args.model)
    lora = str(Path(args.lora).resolve()) if args.lora else None
    scenes = held_out_scenes(args.n, args.seed)

    def progress(label: str) -> Any:
        def report(done: int, total: int) -> None:
            if done == total or done % 25 == 0:
                print(f"  {label}: {done}/{total}", file=sys.stderr, flush=True)

        return report

    started = time.perf_counter()
    runner = AdherenceRunner(
        model, steps=args.steps, scheduler=args.scheduler, device=args.device, rescale=args.rescale
    )
    resolved = runner.resolved_model()
    by_cfg: dict[float, list[Sample]] = {}
    seconds: dict[float, float] = {}
    for cfg in args.cfg:
        before = runner.seconds
        by_cfg[cfg] = runner.run(
            scenes,
            cfg=cfg,
            seed=args.seed,
            per_caption=args.per_caption,
            progress=progress(f"CFG {cfg:g}"),
        )
        seconds[cfg] = runner.seconds - before
    runner.close()

    by_strength: dict[float, list[Sample]] | None = None
    if lora is not None:
        lora_runner = AdherenceRunner(
            model,
            lora=lora,
            steps=args.steps,
            scheduler=args.scheduler,
            device=args.device,
            rescale=args.rescale,
        )
        by_strength = {
            strength: lora_runner.run(
                scenes,
                cfg=DEFAULT_CFG,
                seed=args.seed,
                per_caption=args.per_caption,
                strength=strength,
                progress=progress(f"LoRA strength {strength:g}"),
            )
            for strength in args.strengths
        }
        lora_runner.close()
    minutes = (time.perf_counter() - started) / 60

    lines = [
        SECTION,
        "",
        f"- Date: {utc_date()}",
        f"- Machine: {machine(args.threads, args.device)}",
        f"- Command: `{command.strip()}`",
        f"- Model: `{args.model}` -> `{resolved}`",
        f"- Training: {training_summary(resolved if resolved.is_dir() else resolved.parent)}",
        f"- LoRA: `{lora}`" if lora else "- LoRA: none given (no style rows)",
        f"- Settings: {args.n} held-out captions (`sample_scene(random.Random({args.seed}), "
        f"split='held_out')`), {args.per_caption} picture(s) each, Denoise seed {args.seed} + "
        f"caption index (the same at every CFG and strength), {args.scheduler} {args.steps} "
        f"steps{f', CFG rescale {args.rescale:g}' if args.rescale else ''}, "
        f'negative prompt "", 64x64; scored by `nodes.demo.evaluate.score`. '
        f"{minutes:.1f} minutes in all.",
        "",
        "Per CFG scale (accuracy = share of pictures whose reading matches the caption; "
        "position only over captions that name one):",
        "",
        cfg_table(by_cfg, seconds),
        "",
        "Whole caption / shape accuracy by the caption's kind (captions of each kind in brackets):",
        "",
        kind_table(by_cfg),
        "",
    ]
    if by_strength is not None:
        lines += [
            f"Per LoRA strength at CFG {DEFAULT_CFG:g} (same captions and seeds; outline score: "
            "share of the shapes' filled area that is background inside them, ~0 filled, "
            "~0.3-0.6 outlined):",
            "",
            strength_table(by_strength),
            "",
        ]
    lines += ["Targets (nodes/demo/TRAINING.md):", "", *verdicts(by_cfg, by_strength), ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.markdown, SECTION, text)
        print(f"(written to {args.markdown})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
