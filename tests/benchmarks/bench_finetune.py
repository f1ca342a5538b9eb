"""The fine-tuning trade-off, measured: style rising, and where prompt adherence starts to fall.

Run from the repository root (on demand, not in CI; about an hour on the 2-core machine)::

    python tests/benchmarks/bench_finetune.py [--checkpoints 0 100 300 1000 3000] [--n 50]
        [--batch-size 8] [--lr 1e-3] [--rank 4] [--scenes 2000] [--threads 1] [--no-write]

One fine-tuning run of the built-in demo model toward the outlined style, through the nodes a
user runs (LoadCheckpoint ``demo`` -> DemoSceneDataset outlined -> TrainLoRA, constant learning
rate), stopped at each checkpoint: the run to 300 steps resumes TrainLoRA's saved state of the
run to 100, and so on (with a constant schedule a resumed run equals the straight one, which
``tests/nodes/training/test_train_lora.py`` holds), so the checkpoints are one run. Each
checkpoint's LoRA (step 0: the base model) then renders ``--n`` held-out captions
(``nodes.demo.adherence``: the standard txt2img graph, CFG 7.5, euler 20 steps, Denoise seed
``i``, the same for every checkpoint) and every picture is scored by ``nodes.demo.evaluate``:

* style: the mean outline score (the share of the shapes' area that is background inside them,
  ~0 filled, ~0.3-0.6 outlined) and the share of pictures read as outlined;
* adherence: the whole caption read back right (count, shape, color, size, position,
  background), and shape color alone.

Batch 8 (not train_lora's 32) keeps 3,000 steps affordable on two shared CPU cores (about half a
second a step at one thread). Everything is resumable: the training state lives under
``build/bench_finetune/``, each checkpoint's scores in ``results.json``; a rerun continues.
It writes its section of BENCHMARKS.md and ``docs/finetune_tradeoff.png`` (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from report import machine_summary, utc_date, write_section  # noqa: E402

SECTION = "## Fine-tuning trade-off (tests/benchmarks/bench_finetune.py)"
WORK = REPO / "build" / "bench_finetune"
PLOT = REPO / "docs" / "finetune_tradeoff.png"
LORA_NAME = "finetune-outlined"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[0, 100, 300, 1000, 3000])
    parser.add_argument("--n", type=int, default=50, help="held-out captions per checkpoint")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--scenes", type=int, default=2000, help="outlined training scenes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


def training_workflow(args: argparse.Namespace, steps: int) -> Any:
    """LoadCheckpoint demo -> DemoSceneDataset outlined -> TrainLoRA to ``steps`` (resuming)."""
    from nodeflow.builder import WorkflowBuilder

    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="demo")
    data = b.add("DemoSceneDataset", id="data", style="outlined", size=args.scenes,
                 seed=args.seed)  # fmt: skip
    b.add("TrainLoRA", id="train", unet=model.unet, text_encoder=model.text_encoder,
          vae=model.vae, dataset=data.dataset, name=LORA_NAME, steps=steps,
          batch_size=args.batch_size, learning_rate=args.lr, schedule="constant",
          rank=args.rank, alpha=float(args.rank), seed=args.seed, save_every=100,
          preview_every=0, resume=True)  # fmt: skip
    return b.build()


def train(args: argparse.Namespace) -> dict[int, float]:
    """Train through every checkpoint (resuming), copying each LoRA out; seconds per stretch."""
    from nodeflow.context import Environment
    from nodeflow.executor import Executor
    from nodeflow.plugins import load_catalog
    from nodeflow.runtime import Runtime

    env = Environment.from_dirs(WORK / "models", WORK / "output", WORK / "input")
    executor = Executor(load_catalog(), env=env, runtime=Runtime("cpu"), previews=False)
    timings: dict[int, float] = json.loads((WORK / "timings.json").read_text()) if (
        WORK / "timings.json").is_file() else {}  # fmt: skip
    timings = {int(k): v for k, v in timings.items()}
    for steps in sorted(s for s in args.checkpoints if s > 0):
        copy = WORK / f"lora-{steps}.safetensors"
        if copy.is_file():
            continue
        started = time.perf_counter()
        result = executor.run(training_workflow(args, steps), targets=["train"])
        if not result.ok:
            raise RuntimeError(result.error.traceback if result.error else result.status)
        timings[steps] = time.perf_counter() - started
        shutil.copyfile(WORK / "models" / "loras" / f"{LORA_NAME}.safetensors", copy)
        (WORK / "timings.json").write_text(json.dumps(timings))
        print(f"trained to {steps} steps ({timings[steps]:.0f} s)", flush=True)
    return timings


def evaluate(args: argparse.Namespace) -> dict[int, dict[str, Any]]:
    """Each checkpoint's scores on the held-out captions (kept in results.json)."""
    from nodes.demo.adherence import AdherenceRunner, held_out_scenes, summarize

    path = WORK / "results.json"
    results = {int(k): v for k, v in json.loads(path.read_text()).items()} if path.is_file() \
        else {}  # fmt: skip
    scenes = held_out_scenes(args.n, seed=args.seed)
    for steps in args.checkpoints:
        if steps in results and results[steps]["pictures"] == args.n:
            continue
        lora = None if steps == 0 else str(WORK / f"lora-{steps}.safetensors")
        runner = AdherenceRunner(model="demo", lora=lora)
        samples = runner.run(scenes, seed=args.seed, strength=None if lora is None else 1.0)
        outlined = sum(s.result["style"] == "outlined" for s in samples) / len(samples)
        results[steps] = summarize(samples) | {
            "outlined": outlined,
            "s_per_picture": runner.seconds / len(samples),
        }
        runner.close()
        path.write_text(json.dumps(results, indent=1))
        print(f"step {steps}: {json.dumps(results[steps])}", flush=True)
    return results


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def table(results: dict[int, dict[str, Any]], n: int) -> str:
    lines = [
        "| steps | pictures | **mean outline score** | read as outlined | **whole caption** "
        "| shape color | shape | background | ± 1 SE (whole caption) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for steps in sorted(results):
        r = results[steps]
        p = r["caption_ok"] or 0.0
        se = math.sqrt(p * (1 - p) / n)
        lines.append(
            f"| {steps} | {r['pictures']} | **{r['outline_score']:.3f}** | {_pct(r['outlined'])} "
            f"| **{_pct(r['caption_ok'])}** | {_pct(r['color_ok'])} | {_pct(r['shape_ok'])} "
            f"| {_pct(r['background_ok'])} | {100 * se:.1f} pt |"
        )
    return "\n".join(lines)


def plot(results: dict[int, dict[str, Any]], out: Path) -> None:
    """Two panels, checkpoints evenly spaced: percentages (read as outlined, whole caption,
    shape color) and the mean outline score. PIL only (matplotlib is not installed)."""
    from PIL import Image, ImageDraw

    steps = sorted(results)
    width, height, left, right, top, gap, panel = 560, 400, 56, 150, 24, 40, 150
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    span = width - left - right

    def x_of(i: int) -> float:
        return left + span * i / max(1, len(steps) - 1)

    def frame(y0: int, label: str, ticks: list[tuple[float, str]]) -> None:
        draw.rectangle((left, y0, left + span, y0 + panel), outline="black")
        draw.text((left, y0 - 14), label, fill="black")
        for fraction, text in ticks:
            y = y0 + panel - fraction * panel
            draw.line((left - 4, y, left, y), fill="black")
            draw.text((4, y - 6), text, fill="black")
        for i, s in enumerate(steps):
            draw.line((x_of(i), y0 + panel, x_of(i), y0 + panel + 4), fill="black")
            draw.text((x_of(i) - 10, y0 + panel + 6), str(s), fill="black")

    def series(y0: int, values: list[float], top_value: float, color: str, name: str,
               row: int) -> None:  # fmt: skip
        points = [(x_of(i), y0 + panel - v / top_value * panel) for i, v in enumerate(values)]
        draw.line(points, fill=color, width=2)
        for x, y in points:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=color)
        draw.line((left + span + 12, y0 + 10 + 16 * row, left + span + 28, y0 + 10 + 16 * row),
                  fill=color, width=2)  # fmt: skip
        draw.text((left + span + 32, y0 + 4 + 16 * row), name, fill="black")

    y1 = top
    frame(y1, "share of held-out pictures (%)", [(f, f"{int(f * 100)}%") for f in (0, 0.5, 1)])
    for row, (key, color, name) in enumerate((("outlined", "#d81b60", "read as outlined"),
                                              ("caption_ok", "#1e88e5", "whole caption"),
                                              ("color_ok", "#43a047", "shape color"))):  # fmt: skip
        series(y1, [results[s][key] or 0.0 for s in steps], 1.0, color, name, row)
    y2 = top + panel + gap + 10
    outline = [results[s]["outline_score"] for s in steps]
    ceiling = max(0.1, math.ceil(max(outline) * 10) / 10)
    frame(y2, "mean outline score", [(f, f"{f * ceiling:.2f}") for f in (0, 0.5, 1)])
    series(y2, outline, ceiling, "#d81b60", "outline score", 0)
    draw.text((left + span // 2 - 60, height - 16), "fine-tuning steps (batch 8)", fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from nodes.loaders import quiet_hub_libraries

    quiet_hub_libraries()
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings = train(args)
    results = evaluate(args)
    minutes = (time.perf_counter() - started) / 60
    trained = sum(timings.values())
    last = max(s for s in args.checkpoints)
    text = "\n".join([
        SECTION, "",
        f"- Date: {utc_date()}",
        f"- Machine: {machine_summary()}",
        "- Command: `python tests/benchmarks/bench_finetune.py "
        + " ".join(sys.argv[1:]) + "`",
        f"- Fine-tuning: the built-in demo model through DemoSceneDataset (outlined, {args.scenes}"
        f" scenes, seed {args.seed}) -> TrainLoRA (rank {args.rank}, alpha {args.rank}, lr "
        f"{args.lr} constant, batch {args.batch_size}, attention projections), one run resumed "
        f"at each checkpoint; {trained / 60:.1f} minutes of training to {last} steps "
        f"({trained / max(1, last):.2f} s/step at {args.threads} thread(s)); batch 8 so 3,000 "
        "steps fit the CPU budget.",
        f"- Evaluation: {args.n} held-out captions (`held_out_scenes({args.n})`), CFG 7.5, euler "
        "20 steps, Denoise seed = caption index (the same noise at every checkpoint), scored by "
        "`nodes.demo.evaluate.score`; LoRA strength 1.",
        f"- Wall time in all (this invocation): {minutes:.1f} minutes.", "",
        table(results, args.n), "",
        "![outline score and adherence over fine-tuning](docs/finetune_tradeoff.png)",
    ])  # fmt: skip
    print(text, flush=True)
    if not args.no_write:
        plot(results, PLOT)
        write_section(REPO / "BENCHMARKS.md", SECTION, text)


if __name__ == "__main__":
    main()
