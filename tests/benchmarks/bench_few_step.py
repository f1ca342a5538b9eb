"""Speed against adherence: the demo model distilled into an LCM-LoRA (``demo-lcm``) at 1, 2, 4
and 8 LCM steps, against the base demo model at 4, 8 and 20 Euler steps.

Run from the repository root (on demand, not in CI)::

    python tests/benchmarks/bench_few_step.py --lora build/demo-lcm/demo-lcm.safetensors
        [--n 200] [--lcm-steps 1 2 4 8] [--base-steps 4 8 20] [--lcm-cfg 1] [--cfg 7.5]
        [--sampler-only-steps 1 2 4 8]
        [--seed 0] [--threads 1] [--device cpu] [--no-write]

The same ``--n`` held-out captions and Denoise seeds (``seed + i``) go through the standard
txt2img graph (``nodes.demo.adherence``) for every setting: the base with the ``euler`` scheduler
at CFG ``--cfg``, the LoRA with the ``lcm`` scheduler at ``--lcm-cfg`` (1: one U-Net pass per
step, the guidance distilled into the LoRA). ``--sampler-only-steps`` adds rows of the base
with the ``lcm`` scheduler at ``--lcm-cfg`` and no LoRA: what the sampler alone does, so the
LoRA's own share of the LCM rows shows. Each picture is scored by
``nodes.demo.evaluate.score`` (whole caption and per attribute); the wall time per picture is the
time of the workflow runs after a warm-up run (model loading excluded; each caption's one small
text-encoder pass included, the same for every setting).

Target (issue 17): ``demo-lcm`` at 4 steps reaches at least 90% of the base's 20-step
whole-caption score in at most a quarter of its time per picture. It prints a markdown section
and writes it into BENCHMARKS.md (``--no-write`` to skip).
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

SECTION = (
    "## Few-step sampling: demo-lcm against the demo model (tests/benchmarks/bench_few_step.py)"
)
COLUMNS = (
    ("caption_ok", "**whole caption**"),
    ("color_ok", "shape color"),
    ("background_ok", "background"),
    ("shape_ok", "shape"),
    ("count_ok", "count"),
    ("size_ok", "size"),
    ("position_ok", "position"),
)
SCORE_SHARE, TIME_SHARE = 0.90, 0.25
"""demo-lcm at 4 steps: at least 90% of the base's 20-step score in at most 25% of its time."""


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


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


def lora_training(path: str) -> str:
    """What the LoRA file says about its training (``train_lcm`` writes it), in one line."""
    import json

    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        recorded = (f.metadata() or {}).get("nodeflow_training")
    if recorded is None:
        return "not recorded in the file"
    args = json.loads(recorded)
    keys = ("step", "batch_size", "rank", "lr", "ema", "guidance_min", "guidance_max", "threads")
    return ", ".join(f"{k} {args[k]}" for k in keys if k in args)


def row(label: str, samples: list[Sample], seconds: float) -> str:
    summary = summarize(samples)
    cells = " | ".join(percent(summary[key]) for key, _ in COLUMNS)
    return f"| {label} | {len(samples)} | {cells} | {seconds:.3f} |"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", default="demo", help="the base model (LoadCheckpoint path)")
    parser.add_argument("--lora", required=True, help="the demo-lcm LoRA file")
    parser.add_argument("--n", type=int, default=200, help="held-out captions")
    parser.add_argument("--lcm-steps", type=int, nargs="*", default=[1, 2, 4, 8])
    parser.add_argument(
        "--base-steps", type=int, nargs="*", default=[4, 8, 20],
        help="none to score only the LoRA (screening saves)",
    )  # fmt: skip
    parser.add_argument(
        "--sampler-only-steps", type=int, nargs="*", default=[],
        help="also the base with the lcm scheduler at --lcm-cfg and no LoRA, at these steps",
    )  # fmt: skip
    parser.add_argument("--cfg", type=float, default=7.5, help="the base's CFG scale")
    parser.add_argument("--lcm-cfg", type=float, default=1.0, help="the LoRA's guidance scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python tests/benchmarks/bench_few_step.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    import diffusers
    import torch

    torch.set_num_threads(args.threads)
    lora = str(Path(args.lora).resolve())
    scenes = held_out_scenes(args.n, args.seed)
    started = time.perf_counter()
    results: dict[tuple[str, int], tuple[list[Sample], float]] = {}
    for steps in args.base_steps:
        runner = AdherenceRunner(args.model, steps=steps, scheduler="euler", device=args.device)
        results[("base", steps)] = measure(runner, scenes, args.cfg, args.seed, f"base {steps}")
        runner.close()
    for steps in args.lcm_steps:
        runner = AdherenceRunner(
            args.model, lora=lora, steps=steps, scheduler="lcm", device=args.device
        )
        label = f"demo-lcm {steps}"
        results[("lcm", steps)] = measure(runner, scenes, args.lcm_cfg, args.seed, label)
        runner.close()
    for steps in args.sampler_only_steps:
        runner = AdherenceRunner(args.model, steps=steps, scheduler="lcm", device=args.device)
        label = f"no LoRA, lcm {steps}"
        results[("sampler", steps)] = measure(runner, scenes, args.lcm_cfg, args.seed, label)
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
        f"- LoRA: `{lora}` (nodes.demo.train_lcm: {lora_training(lora)})",
        f"- Settings: {args.n} held-out captions, Denoise seed {args.seed} + caption index for "
        f"every setting; base: euler at CFG {args.cfg:g}; demo-lcm: lcm at guidance "
        f"{args.lcm_cfg:g}; 64x64. {minutes:.1f} minutes in all.",
        "",
        f"| setting | pictures | {header} | s/picture |",
        "|---" * (len(COLUMNS) + 3) + "|",
    ]
    for (kind, steps), (samples, seconds) in results.items():
        name = {
            "base": f"base, euler {steps} steps",
            "lcm": f"demo-lcm, lcm {steps} steps",
            "sampler": f"base without the LoRA, lcm {steps} steps",
        }[kind]
        lines.append(row(name, samples, seconds))
    lines += ["", verdict(results), ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.markdown, SECTION, text)
    return 0


def verdict(results: dict[tuple[str, int], tuple[list[Sample], float]]) -> str:
    """The issue's target, with its figures, or why it was not measured."""
    if ("base", 20) not in results or ("lcm", 4) not in results:
        return "- Target: not measured (needs base 20 steps and demo-lcm 4 steps)"
    base, base_time = results[("base", 20)]
    fast, fast_time = results[("lcm", 4)]
    base_score = summarize(base)["caption_ok"] or 0.0
    fast_score = summarize(fast)["caption_ok"] or 0.0
    score_share = fast_score / base_score if base_score else float("nan")
    time_share = fast_time / base_time if base_time else float("nan")
    met = score_share >= SCORE_SHARE and time_share <= TIME_SHARE
    return (
        f"- Target (demo-lcm at 4 steps >= {SCORE_SHARE:.0%} of the base's 20-step whole-caption "
        f"score in <= {TIME_SHARE:.0%} of its time): score {score_share:.1%} of the base's, time "
        f"{time_share:.1%} of the base's: {'met' if met else 'NOT met'}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
