"""txt2img, nodeflow against diffusers' StableDiffusionPipeline, on the same tiny model (CPU).

Run from the repository root::

    python tests/benchmarks/bench_txt2img.py [--steps N] [--size PX [PX ...]] [--repeats R]

Everything runs in one process, on one tiny model folder (``nodes.tiny.make_tiny_sd``), with the
same prompt, negative prompt, seed, scheduler (euler), steps, guidance scale and size:

1. diffusers, warm: one warm-up call, then the median of ``--repeats`` pipeline calls.
2. nodeflow, warm: the standard txt2img graph (``tests/nodes/sdgraphs.py``, no SaveImage, target
   ``decode``) on a fresh Executor per run that shares one Runtime. The model stays loaded in the
   Runtime's model manager, but no output cache serves the result, so text encoding, denoising and
   decoding all run, as in the pipeline call. The two are interleaved (A, B, A, B, ...) against
   drift on a busy machine, and checked once to draw the same picture (max abs diff <= 1e-4).
3. Seed-only rerun: on one Executor (with SaveImage), a full run, then the same workflow with only
   the Denoise seed changed; which nodes re-ran, and the time against the full run.
4. A fully cached rerun of the unchanged workflow.

It prints markdown tables and writes them as a section of BENCHMARKS.md (``--no-write`` to skip).
Ratios are measured in the same process and run; absolute times hold only for the machine used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "nodes"))  # sdgraphs
from report import machine_summary, utc_date, write_section  # noqa: E402

SECTION = "## txt2img: nodeflow vs diffusers (tests/benchmarks/bench_txt2img.py)"
PROMPT = "a red circle on a blue background"
NEGATIVE = "blurry, green"
SEED = 1234
SCHEDULER = "euler"
SCALE = 7.5
TOLERANCE = 1e-4
TARGET_RATIO = 1.05


@dataclass
class SizeResult:
    size: int
    diffusers: list[float] = field(default_factory=list)
    nodeflow: list[float] = field(default_factory=list)
    diffusers_cpu: list[float] = field(default_factory=list)
    nodeflow_cpu: list[float] = field(default_factory=list)
    max_diff: float = float("nan")
    full: list[float] = field(default_factory=list)
    seed_only: list[float] = field(default_factory=list)
    cached: list[float] = field(default_factory=list)
    seed_executed: list[str] = field(default_factory=list)
    cached_executed: list[str] = field(default_factory=list)

    @property
    def paired(self) -> list[float]:
        return [b / a for a, b in zip(self.diffusers, self.nodeflow, strict=True)]


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f}"


def spread(values: list[float]) -> str:
    return f"{min(values) * 1000:.1f}–{max(values) * 1000:.1f}"


def ratio(numerator: list[float], denominator: list[float]) -> float:
    return statistics.median(numerator) / statistics.median(denominator)


class Bench:
    def __init__(self, root: Path, steps: int) -> None:
        import diffusers
        import torch
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

        from nodeflow.plugins import load_catalog
        from nodeflow.runtime import Runtime
        from nodes.tiny import make_tiny_sd

        diffusers.utils.logging.disable_progress_bar()
        self.torch = torch
        self.root = root
        self.steps = steps
        self.models_dir = root / "models"
        tiny = self.models_dir / "checkpoints" / "tiny"
        make_tiny_sd(tiny, seed=0)

        self.pipe = StableDiffusionPipeline.from_pretrained(
            tiny, local_files_only=True, safety_checker=None, requires_safety_checker=False
        )
        self.pipe.set_progress_bar_config(disable=True)
        config = json.loads((tiny / "scheduler" / "scheduler_config.json").read_text())
        self.pipe.scheduler = EulerDiscreteScheduler.from_config(config)

        self.catalog = load_catalog()
        if self.catalog.failures:
            raise SystemExit(f"plugins failed to load: {self.catalog.failures}")
        self.runtime = Runtime("cpu")
        self.runs = 0

    # --- the two contestants ---------------------------------------------------------------

    def diffusers(self, size: int) -> tuple[float, float, Any]:
        generator = self.torch.Generator("cpu").manual_seed(SEED)
        cpu = time.process_time()
        started = time.perf_counter()
        images = self.pipe(
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
            num_inference_steps=self.steps,
            guidance_scale=SCALE,
            width=size,
            height=size,
            generator=generator,
            output_type="np",
        ).images
        return time.perf_counter() - started, time.process_time() - cpu, images

    def executor(self) -> Any:
        from nodeflow.context import Environment
        from nodeflow.executor import Executor

        self.runs += 1
        out = self.root / f"run{self.runs}"
        env = Environment.from_dirs(self.models_dir, out / "output", out / "input")
        return Executor(self.catalog, env=env, runtime=self.runtime)

    def workflow(self, size: int, *, save: bool) -> Any:
        from sdgraphs import sd_graph

        return sd_graph(
            prompt=PROMPT,
            negative=NEGATIVE,
            seed=SEED,
            scheduler=SCHEDULER,
            steps=self.steps,
            scale=SCALE,
            width=size,
            height=size,
            save=save,
        )

    @staticmethod
    def timed_run(executor: Any, workflow: Any, targets: list[str] | None = None) -> Any:
        cpu = time.process_time()
        started = time.perf_counter()
        result = executor.run(workflow, targets=targets)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        if not result.ok:
            raise SystemExit(f"nodeflow run failed: {result.error and result.error.traceback}")
        return seconds, cpu, result

    def nodeflow(self, size: int) -> tuple[float, float, Any]:
        executor = self.executor()  # fresh output cache; the Runtime keeps the model loaded
        workflow = self.workflow(size, save=False)
        seconds, cpu, result = self.timed_run(executor, workflow, ["decode"])
        expected = ["model", "pos", "neg", "sched", "cfg", "empty", "denoise", "decode"]
        if sorted(result.executed) != sorted(expected) or result.cached:
            raise SystemExit(f"expected every node to run, got {result.executed}")
        return seconds, cpu, result.values["decode"]["image"].pixels.numpy()

    # --- the measurements ------------------------------------------------------------------

    def measure(self, size: int, repeats: int) -> SizeResult:
        import numpy as np

        result = SizeResult(size)
        *_, reference = self.diffusers(size)  # warm-up (and the nodeflow model load below)
        *_, actual = self.nodeflow(size)
        if actual.shape != reference.shape:
            raise SystemExit(f"shapes differ: {actual.shape} vs {reference.shape}")
        result.max_diff = float(np.abs(actual - reference).max())
        if result.max_diff > TOLERANCE:
            raise SystemExit(f"not the same picture: max abs diff {result.max_diff:.2e}")

        for _ in range(repeats):
            seconds, cpu, _ = self.diffusers(size)
            result.diffusers.append(seconds)
            result.diffusers_cpu.append(cpu)
            seconds, cpu, _ = self.nodeflow(size)
            result.nodeflow.append(seconds)
            result.nodeflow_cpu.append(cpu)

        saved = self.workflow(size, save=True)
        for index in range(repeats):
            executor = self.executor()
            full, *_ = self.timed_run(executor, saved)
            reseeded = saved.with_values({("denoise", "seed"): SEED + 1 + index})
            seed_only, _, rerun = self.timed_run(executor, reseeded)
            cached, _, again = self.timed_run(executor, reseeded)
            result.full.append(full)
            result.seed_only.append(seed_only)
            result.cached.append(cached)
            result.seed_executed = list(rerun.executed)
            result.cached_executed = list(again.executed)
        return result


# --- reporting -------------------------------------------------------------------------------


def warm_table(results: list[SizeResult], steps: int) -> str:
    lines = [
        "| size | steps | diffusers ms (median, min–max) | nodeflow ms (median, min–max) "
        "| **nodeflow/diffusers** (medians) | median of paired ratios | ratio of minimums "
        "| CPU-time ratio (medians) | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.size}x{r.size} | {steps} | {ms(r.diffusers)} ({spread(r.diffusers)}) "
            f"| {ms(r.nodeflow)} ({spread(r.nodeflow)}) "
            f"| **{ratio(r.nodeflow, r.diffusers):.3f}** | {statistics.median(r.paired):.3f} "
            f"| {min(r.nodeflow) / min(r.diffusers):.3f} "
            f"| {ratio(r.nodeflow_cpu, r.diffusers_cpu):.3f} | {r.max_diff:.1e} |"
        )
    return "\n".join(lines)


def rerun_table(results: list[SizeResult]) -> str:
    lines = [
        "| size | full run ms (with SaveImage) | seed-only rerun ms | seed-only/full "
        "| nodes re-run | fully cached rerun ms | cached/full | nodes re-run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.size}x{r.size} | {ms(r.full)} ({spread(r.full)}) "
            f"| {ms(r.seed_only)} ({spread(r.seed_only)}) | {ratio(r.seed_only, r.full):.3f} "
            f"| {', '.join(r.seed_executed) or '(none)'} "
            f"| {ms(r.cached)} ({spread(r.cached)}) | {ratio(r.cached, r.full):.4f} "
            f"| {', '.join(r.cached_executed) or '(none)'} |"
        )
    return "\n".join(lines)


def machine() -> str:
    import diffusers
    import torch

    return machine_summary(
        f"torch threads {torch.get_num_threads()}",
        f"torch {torch.__version__}",
        f"diffusers {diffusers.__version__}",
    )


def section(command: str, results: list[SizeResult], args: argparse.Namespace) -> str:
    verdicts = []
    for r in results:
        value = ratio(r.nodeflow, r.diffusers)
        verdict = "within" if value <= TARGET_RATIO else "OVER"
        verdicts.append(f"{r.size}x{r.size}: {value:.3f} ({verdict} the {TARGET_RATIO} target)")
    return "\n".join(
        [
            SECTION,
            "",
            f"- Date: {utc_date()}",
            f"- Machine: {machine()}",
            f"- Command: `{command}`",
            f"- Settings: tiny random SD model (`nodes.tiny.make_tiny_sd`), scheduler "
            f"{SCHEDULER}, {args.steps} steps, guidance {SCALE}, seed {SEED}, prompt "
            f"{PROMPT!r}, negative {NEGATIVE!r}, fp32 CPU, {args.repeats} repeats, medians "
            "(min–max in brackets).",
            "- Caveat: a small shared machine (2 cores) where other processes may be running; "
            "absolute times are only as measured on this CPU in this run. Compare the ratios, "
            "which come from interleaved measurements in the same process.",
            "",
            "Warm txt2img, same work on both sides: diffusers `StableDiffusionPipeline(...)` "
            "(one warm-up call first) against a nodeflow run of the standard graph on a fresh "
            "Executor per run sharing one Runtime (model loaded, output cache empty, so prompt "
            "encoding, denoising and decoding all run). Measurements alternate diffusers, "
            "nodeflow, diffusers, ...; the pictures agree to the max abs diff shown. Paired "
            "ratios divide each nodeflow run by the diffusers run just before it; the CPU-time "
            "ratio uses `time.process_time()` (this process, all threads), which other "
            "processes on the machine disturb less than wall time.",
            "",
            warm_table(results, args.steps),
            "",
            f"nodeflow/diffusers: {'; '.join(verdicts)}.",
            "",
            "Reruns on one Executor (graph with SaveImage): a full run, then only the Denoise "
            "seed changed, then the same workflow again unchanged (fully cached).",
            "",
            rerun_table(results),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--size", type=int, nargs="+", default=[64], help="picture sizes (square), e.g. 64 128"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the section into BENCHMARKS.md",
    )
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    command = "python tests/benchmarks/bench_txt2img.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )

    with tempfile.TemporaryDirectory(prefix="bench-txt2img-") as tmp:
        root = Path(tmp)
        os.environ["NODEFLOW_HOME"] = str(root / "home")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        bench = Bench(root, args.steps)
        results = []
        for size in args.size:
            print(f"measuring {size}x{size} ...", file=sys.stderr, flush=True)
            results.append(bench.measure(size, args.repeats))

    text = section(command.strip(), results, args)
    print(text)
    if args.write:
        write_section(args.markdown, SECTION, text)
        print(f"(written to {args.markdown})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
