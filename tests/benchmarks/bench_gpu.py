"""The GPU checks no CPU can show, in one process: fp16 parity, VRAM offloading, U-Net speed.

Run on a machine with a GPU (``tests/benchmarks/gpu_check.sh`` is the one-line device command)::

    python tests/benchmarks/bench_gpu.py --out DIR [--device cuda] [--size 512] [--steps 20]
        [--repeats 5] [--time-budget 300] [--vram-budget SIZE] [--tiny]

and dry-run the whole script on a CPU in about half a minute with ``--tiny --device cpu``.

The model is a real-size SD 1.5 of random weights (the libraries' own initialisation, seeds 0-2)
built in process from the shipped configs (``nodes/configs/sd1``: the 860M U-Net, CLIP-L, the
real VAE) and written as an fp16 diffusers folder in a temporary directory (``gpu_model.py``):
nothing is downloaded. ``--tiny`` uses ``nodes.tiny.make_tiny_sd`` instead. Three checks:

(a) parity: the standard txt2img graph through nodeflow against diffusers'
    ``StableDiffusionPipeline`` on the same folder, device, dtype, scheduler (euler), prompts,
    seed, steps and guidance; max abs difference of the float images (and of the latents before
    decoding) against a stated tolerance: 1e-2 in fp16 (about 2.5 levels of 255; half precision
    keeps 11 bits and a 20-step loop compounds its rounding), 1e-4 in fp32 (DESIGN.md's bound).
    The image difference includes the decoder's precision: nodeflow decodes in fp32 where the
    VAE config asks for ``force_upcast`` (AutoencoderKL's default, so SD 1.5's too), while
    ``StableDiffusionPipeline`` decodes in fp16; the latents' difference is the loop's alone.
(b) VRAM budget: the same graph on a Runtime whose ``vram_budget`` holds the U-Net but not the
    U-Net and any other model together, so the model manager must offload; the offloads, the
    peak ``torch.cuda.max_memory_allocated`` against the unbudgeted run's and the budget, and the
    pixels against the unbudgeted run. On the CPU the policy still runs (offloads, pixels) and
    the peak is skipped: there is no device memory to measure.
(c) speed: warm denoising it/s at CFG (one batch of 2, cond and uncond, per step) through
    nodeflow's Denoise node (only Denoise re-runs: the seed changes, the rest is cached) against
    diffusers' pipeline eager (prompt embeddings given, latents out), interleaved, medians of
    ``--repeats``; plus the bare U-Net's forward rate as the ceiling both approach.

It prints a markdown report and writes ``report.md`` and ``report.json`` to ``--out`` after each
check, so a run stopped by its time limit still hands back what it finished. Exit status: 0 when
no check failed (skips included), 1 when one failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
for extra in (REPO, REPO / "tests" / "nodes"):  # runs uninstalled (the GPU machine); sdgraphs
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))
from gpu_model import component_bytes, write_sd15  # noqa: E402
from report import machine_summary, utc_date  # noqa: E402

SECTION = "## GPU check (tests/benchmarks/bench_gpu.py)"
PROMPT = "a red circle on a blue background"
NEGATIVE = "blurry, green"
SEED = 1234
SCHEDULER = "euler"
SCALE = 7.5
CHECKPOINT = "sd15-random"
TOLERANCES = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}
"""Max abs difference allowed on the float image [0, 1] between nodeflow and diffusers."""
GIB = 2**30


@dataclass
class Check:
    """One check's outcome: ``pass``, ``fail`` or ``skip``, a one-line summary and its figures."""

    status: str
    summary: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    """Everything measured so far; rewritten to ``out`` after each check."""

    out: Path
    meta: dict[str, Any]
    checks: dict[str, Check] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)

    def add(self, name: str, check: Check, *details: str) -> None:
        self.checks[name] = check
        self.extra.extend(details)
        print(f"{name}: {check.status}: {check.summary}", file=sys.stderr, flush=True)
        self.write()

    def markdown(self) -> str:
        meta = self.meta
        lines = [
            SECTION,
            "",
            f"- Date: {meta['date']}",
            f"- Machine: {meta['machine']}",
            f"- Command: `{meta['command']}`",
            f"- Model: {meta['model']}; {meta['size']}x{meta['size']}, {meta['steps']} steps "
            f"{SCHEDULER}, guidance {SCALE}, seed {SEED}, {meta['device']} {meta['dtype']}",
            "",
            "| check | status | result |",
            "|---|---|---|",
        ]
        lines += [f"| {name} | {c.status} | {c.summary} |" for name, c in self.checks.items()]
        return "\n".join([*lines, "", *self.extra]).rstrip() + "\n"

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "report.md").write_text(self.markdown())
        doc = {**self.meta, "checks": {name: asdict(c) for name, c in self.checks.items()}}
        (self.out / "report.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")


# --- the runs --------------------------------------------------------------------------------


@dataclass
class Picture:
    image: Any  # numpy [batch, height, width, 3] in [0, 1]
    latents: Any  # numpy [batch, 4, h, w]
    peak: int | None = None  # bytes, torch.cuda.max_memory_allocated during the run
    seconds: float = 0.0


class Bench:
    """The model folder, the nodeflow catalog and the two ways of drawing a picture."""

    def __init__(self, args: argparse.Namespace, root: Path, device: Any, dtype: Any) -> None:
        import torch

        from nodeflow.plugins import load_catalog
        from nodes import plugin

        self.torch, self.args, self.root, self.device, self.dtype = torch, args, root, device, dtype
        self.models_dir = root / "models"
        self.folder = self.models_dir / "checkpoints" / CHECKPOINT
        # registered directly, not through the entry point: the GPU machine has no install
        self.catalog = load_catalog(entry_points=False, plugins=[("nodes", plugin)])
        if self.catalog.failures:
            raise SystemExit(f"the node pack failed to load: {self.catalog.failures}")
        self.runs = 0

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def runtime(self, vram_budget: int | None = None) -> Any:
        from nodeflow.runtime import Runtime

        name = {self.torch.float16: "fp16", self.torch.bfloat16: "bf16"}.get(self.dtype, "fp32")
        return Runtime(str(self.device), name, vram_budget)

    def executor(self, runtime: Any) -> Any:
        from nodeflow.context import Environment
        from nodeflow.executor import Executor

        self.runs += 1
        out = self.root / f"run{self.runs}"
        env = Environment.from_dirs(self.models_dir, out / "output", out / "input")
        return Executor(self.catalog, env=env, runtime=runtime, previews=False)

    def workflow(self) -> Any:
        from sdgraphs import sd_graph

        size = self.args.size
        return sd_graph(
            prompt=PROMPT,
            negative=NEGATIVE,
            seed=SEED,
            scheduler=SCHEDULER,
            steps=self.args.steps,
            scale=SCALE,
            width=size,
            height=size,
            checkpoint=CHECKPOINT,
            save=False,
        )

    def nodeflow(self, runtime: Any) -> Picture:
        """One full run (load, encode, denoise, decode) on ``runtime``, peak memory measured."""
        executor = self.executor(runtime)
        result, seconds, peak = self.measured(
            lambda: executor.run(self.workflow(), ["denoise", "decode"])
        )
        if not result.ok:
            raise RuntimeError(f"nodeflow run failed: {result.error and result.error.traceback}")
        image = result.values["decode"]["image"].pixels
        latents = result.values["denoise"]["latent"].samples
        return Picture(_np(image), _np(latents), peak, seconds)

    def measured(self, work: Callable[[], Any]) -> tuple[Any, float, int | None]:
        cuda = self.device.type == "cuda"
        self.sync()
        if cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        value = work()
        self.sync()
        seconds = time.perf_counter() - started
        return value, seconds, self.torch.cuda.max_memory_allocated(self.device) if cuda else None

    def pipeline(self) -> Any:
        import diffusers
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

        diffusers.utils.logging.disable_progress_bar()
        pipe = StableDiffusionPipeline.from_pretrained(
            self.folder,
            torch_dtype=self.dtype,
            local_files_only=True,
            safety_checker=None,
            requires_safety_checker=False,
        ).to(self.device)
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        return pipe

    def diffusers(self, pipe: Any, output_type: str, **embeds: Any) -> Any:
        size = self.args.size
        prompts = embeds or {"prompt": PROMPT, "negative_prompt": NEGATIVE}
        return pipe(
            **prompts,
            num_inference_steps=self.args.steps,
            guidance_scale=SCALE,
            width=size,
            height=size,
            output_type=output_type,
            generator=self.torch.Generator("cpu").manual_seed(SEED),
        ).images

    def free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()


def _np(tensor: Any) -> Any:
    return tensor.detach().float().cpu().numpy() if hasattr(tensor, "detach") else tensor


def max_diff(a: Any, b: Any) -> float:
    import numpy as np

    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def finite(*arrays: Any) -> bool:
    import numpy as np

    return all(bool(np.isfinite(a).all()) for a in arrays)


def gib(n: int | None) -> str:
    """Bytes for people: GiB from one GiB up, MiB below (the tiny models' budgets)."""
    if n is None:
        return "n/a"
    return f"{n / GIB:.2f} GiB" if abs(n) >= GIB else f"{n / 2**20:.1f} MiB"


# --- the checks ------------------------------------------------------------------------------


def check_parity(bench: Bench, pipe: Any, reference: Picture, tolerance: float) -> Check:
    """diffusers' pictures (float image, then latents) against nodeflow's ``reference``.

    Where nodeflow decodes in fp32 (``force_upcast``) and the pipeline in half precision,
    diffusers' latents are also decoded in fp32, so the report tells the loop's difference
    from the decoder's precision."""
    image = bench.diffusers(pipe, "np")
    latents = bench.diffusers(pipe, "latent")
    upcast = bool(getattr(pipe.vae.config, "force_upcast", False))
    upcast = upcast and bench.dtype == bench.torch.float16  # as nodes.vae decides
    same_decoder = decode_fp32(pipe, latents) if upcast else None
    return parity_verdict(reference, Picture(image, _np(latents)), tolerance, same_decoder)


def decode_fp32(pipe: Any, latents: Any) -> Any:
    """diffusers' latents decoded as the pipeline decodes them, but by its VAE in fp32."""
    import torch

    vae = pipe.vae
    torch.nn.Module.to(vae, torch.float32)  # not diffusers' .to, which warns about casting
    try:
        with torch.inference_mode():
            image = vae.decode(latents.float() / vae.config.scaling_factor, return_dict=False)[0]
        return pipe.image_processor.postprocess(image, output_type="np")
    finally:
        torch.nn.Module.to(vae, latents.dtype)


def parity_verdict(
    nodeflow: Picture, diffusers: Picture, tolerance: float, same_decoder: Any = None
) -> Check:
    """Pass when both pictures are finite and their float images within ``tolerance``.

    ``same_decoder``: diffusers' latents decoded in fp32, as nodeflow decodes them; its
    difference is reported, and the verdict stays on the pipeline's own picture."""
    data: dict[str, Any] = {
        "max_abs_diff_image": max_diff(nodeflow.image, diffusers.image),
        "max_abs_diff_latents": max_diff(nodeflow.latents, diffusers.latents),
        "tolerance": tolerance,
        "finite": finite(nodeflow.image, diffusers.image, nodeflow.latents, diffusers.latents),
        "nodeflow_decodes_in_fp32": same_decoder is not None,
    }
    ok = data["finite"] and data["max_abs_diff_image"] <= tolerance  # False for NaN
    summary = (
        f"max abs diff image {data['max_abs_diff_image']:.2e} (tolerance {tolerance:g}), "
        f"latents {data['max_abs_diff_latents']:.2e}"
    )
    if not data["finite"]:
        summary += "; NOT FINITE (NaN or inf)"
    if same_decoder is not None:
        data["max_abs_diff_image_fp32_decoder"] = max_diff(nodeflow.image, same_decoder)
        summary += (
            "; nodeflow decodes in fp32 (the VAE's force_upcast), diffusers' "
            "StableDiffusionPipeline in fp16: with diffusers' latents decoded in fp32 too, "
            f"{data['max_abs_diff_image_fp32_decoder']:.2e}"
        )
    return Check("pass" if ok else "fail", summary, data)


def check_vram(
    budget: int,
    budgeted: Picture,
    unbudgeted: Picture,
    runtime: dict[str, Any],
    tolerance: float,
) -> Check:
    diff = max_diff(budgeted.image, unbudgeted.image)
    data = {
        "budget_bytes": budget,
        "peak_budgeted": budgeted.peak,
        "peak_unbudgeted": unbudgeted.peak,
        "max_abs_diff_image": diff,
        "bit_identical": diff == 0.0,
        **runtime,
    }
    problems = []
    if runtime["offloads"] < 1:
        problems.append("nothing was offloaded")
    if not diff <= tolerance:  # NaN too
        problems.append(f"pixels differ from the unbudgeted run by {diff:.2e}")
    if runtime["resident_at_end"] > budget:
        problems.append("weights on the device over the budget at the end")
    summary = (
        f"budget {gib(budget)}: {runtime['offloads']} offloads "
        f"({', '.join(runtime['events'][:8])}); pixels vs unbudgeted: max abs diff {diff:.1e}"
        f"{' (bit-identical)' if diff == 0 else ''}"
    )
    if budgeted.peak is None:
        summary += "; peak memory: skipped (no CUDA device to measure)"
    else:
        assert unbudgeted.peak is not None
        data["activations_over_budget"] = budgeted.peak - budget
        summary += (
            f"; peak allocated {gib(budgeted.peak)} vs {gib(unbudgeted.peak)} unbudgeted "
            f"({gib(budgeted.peak - budget)} over the weights' budget: activations)"
        )
        if budgeted.peak >= unbudgeted.peak:
            problems.append("the budget did not lower the peak")
    if problems:
        summary += "; FAILED: " + "; ".join(problems)
    return Check("fail" if problems else "pass", summary, data)


def check_speed(bench: Bench, pipe: Any, runtime: Any, deadline: float) -> tuple[Check, str]:
    torch, steps, repeats = bench.torch, bench.args.steps, bench.args.repeats
    executor = bench.executor(runtime)
    workflow = bench.workflow()
    embeds = dict(
        zip(
            ("prompt_embeds", "negative_prompt_embeds"),
            pipe.encode_prompt(PROMPT, bench.device, 1, True, NEGATIVE),
            strict=True,
        )
    )

    def nodeflow(seed: int, warm_up: bool = False) -> None:
        result = executor.run(workflow.with_values({("denoise", "seed"): seed}), ["denoise"])
        if not result.ok or (result.executed != ["denoise"] and not warm_up):
            raise RuntimeError(
                f"expected Denoise alone to run, got {result.executed}: "
                f"{result.error and result.error.traceback}"
            )

    unet, size = pipe.unet, bench.args.size // pipe.vae_scale_factor
    sample = torch.randn(
        2, unet.config.in_channels, size, size, device=bench.device, dtype=bench.dtype
    )
    context = torch.cat([embeds["negative_prompt_embeds"], embeds["prompt_embeds"]])

    def bare_unet() -> None:
        with torch.inference_mode():
            for t in range(steps):
                unet(sample, 999 - t, encoder_hidden_states=context, return_dict=False)

    nodeflow(SEED, warm_up=True)  # warm-up: loads and caches everything upstream of Denoise
    bench.diffusers(pipe, "latent", **embeds)
    bare_unet()
    times: dict[str, list[float]] = {"nodeflow": [], "diffusers": [], "unet": []}
    for index in range(repeats):
        if index >= 2 and time.monotonic() > deadline:
            break
        times["diffusers"].append(
            bench.measured(lambda: bench.diffusers(pipe, "latent", **embeds))[1]
        )
        times["nodeflow"].append(bench.measured(lambda i=index: nodeflow(SEED + 1 + i))[1])
        times["unet"].append(bench.measured(bare_unet)[1])
    rates = {name: steps / statistics.median(values) for name, values in times.items()}
    ratio = statistics.median(times["nodeflow"]) / statistics.median(times["diffusers"])
    data = {
        "it_per_s": rates,
        "seconds": times,
        "nodeflow_over_diffusers_time": ratio,
        "repeats": len(times["nodeflow"]),
    }
    summary = (
        f"{rates['nodeflow']:.2f} it/s nodeflow Denoise vs {rates['diffusers']:.2f} it/s "
        f"diffusers eager (time ratio {ratio:.3f}); bare U-Net {rates['unet']:.2f} it/s"
    )
    table = "\n".join(
        [
            "Speed, warm, CFG batch 2 per step, medians (min–max) of "
            f"{len(times['nodeflow'])} interleaved runs of {steps} steps:",
            "",
            "| what | it/s (median) | seconds per run (min–max) |",
            "|---|---|---|",
            *(
                f"| {label} | {rates[name]:.2f} | {min(times[name]):.3f}–{max(times[name]):.3f} |"
                for name, label in (
                    ("nodeflow", "nodeflow Denoise node (executor included)"),
                    ("diffusers", "diffusers pipeline, embeds in, latents out"),
                    ("unet", "bare U-Net forward (batch 2), no scheduler"),
                )
            ),
            "",
        ]
    )
    return Check("pass", summary, data), table


# --- the whole run ---------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md/json")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument(
        "--dtype",
        choices=("auto", *TOLERANCES),
        default="auto",
        help="auto: fp16 on cuda, fp32 on the cpu (fp16 there dry-runs the half-precision path)",
    )
    parser.add_argument("--size", type=int, help="picture side (default 512; --tiny 64)")
    parser.add_argument("--steps", type=int, help="denoising steps (default 20; --tiny 4)")
    parser.add_argument("--repeats", type=int, help="timed runs per side (default 5; --tiny 3)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs: a CPU dry run")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=300.0,
        help="seconds; a check that would start later is skipped",
    )
    parser.add_argument("--vram-budget", help="for (b); default: the U-Net plus half the VAE")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--work", type=Path, help="model folder's parent (default: a temp dir)")
    args = parser.parse_args(argv)
    args.size = args.size or (64 if args.tiny else 512)
    args.steps = args.steps or (4 if args.tiny else 20)
    args.repeats = args.repeats or (3 if args.tiny else 5)
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse(argv)
    deadline = started + args.time_budget
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    dtype_name = args.dtype if args.dtype != "auto" else "fp16" if cuda else "fp32"
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    report = Report(
        args.out,
        {
            "date": utc_date(),
            "command": "python tests/benchmarks/bench_gpu.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": machine(cuda),
            "device": args.device,
            "dtype": dtype_name,
            "size": args.size,
            "steps": args.steps,
            "tiny": args.tiny,
            "model": "tiny SD 1.x (nodes.tiny)"
            if args.tiny
            else "real-size SD 1.5 (860M U-Net, CLIP-L, SD VAE), random weights, fp16 files",
        },
    )
    names = (f"(a) {dtype_name} parity", "(b) VRAM budget", "(c) speed")
    if cuda and not torch.cuda.is_available():
        for name in names:
            report.add(name, Check("skip", "skipped: --device cuda, but CUDA is not available"))
        print(report.markdown())
        return 0
    device = torch.device(args.device)
    tolerance = TOLERANCES[dtype_name]

    with tempfile.TemporaryDirectory(prefix="bench-gpu-", dir=args.work) as tmp:
        root = Path(tmp)
        os.environ["NODEFLOW_HOME"] = str(root / "home")
        bench = Bench(args, root, device, dtype)
        built = time.perf_counter()
        if args.tiny:
            from nodes.tiny import make_tiny_sd

            make_tiny_sd(bench.folder, seed=0)
        else:
            write_sd15(bench.folder, device)
        report.meta["model_build_seconds"] = round(time.perf_counter() - built, 1)
        sizes = component_bytes(bench.folder, dtype)
        report.meta["component_bytes"] = sizes
        budget = _budget(args.vram_budget, sizes)

        run_checks(report, bench, budget, tolerance, deadline, names)
    report.meta["total_seconds"] = round(time.monotonic() - started, 1)
    report.write()
    print(report.markdown())
    return 1 if any(c.status == "fail" for c in report.checks.values()) else 0


def run_checks(
    report: Report,
    bench: Bench,
    budget: int,
    tolerance: float,
    deadline: float,
    names: tuple[str, str, str],
) -> None:
    """The three checks, each recorded as failed (with its error) when it raises, so one
    broken check on a machine lent once still lets the others report."""
    torch, device = bench.torch, bench.device
    try:  # (b)'s run first, on a clean device, so no other run's weights sit in its peak
        bench.free()
        runtime = bench.runtime(budget)
        budgeted = bench.nodeflow(runtime)
        manager = runtime.models
        stats = {
            "offloads": manager.offloads,
            "events": [f"{kind} {label}" for kind, label in manager.events],
            "resident_at_end": manager.resident_bytes(),
        }
        del runtime, manager
    except Exception as error:
        budgeted = None
        report.add(names[1], failed("the budgeted nodeflow run", error))
    bench.free()
    if device.type == "cuda":  # what the freed run left would sit in the next run's peak
        report.meta["allocated_after_freeing"] = torch.cuda.memory_allocated(device)
    try:
        plain = bench.runtime()
        unbudgeted = bench.nodeflow(plain)
        report.meta["nodeflow_first_run_seconds"] = round(unbudgeted.seconds, 2)
    except Exception as error:
        for name in names:
            if name not in report.checks:
                report.add(name, failed("the unbudgeted nodeflow run", error))
        return
    if budgeted is not None:
        vram = check_vram(budget, budgeted, unbudgeted, stats, tolerance)
    try:
        pipe = bench.pipeline()
    except Exception as error:
        pipe = None
        report.add(names[0], failed("loading diffusers' pipeline", error))
    if pipe is not None:
        report.add(names[0], guarded(lambda: check_parity(bench, pipe, unbudgeted, tolerance)))
    if budgeted is not None:
        report.add(names[1], vram)
    if pipe is None:
        report.add(names[2], Check("skip", "skipped: diffusers' pipeline did not load"))
    elif time.monotonic() > deadline:
        budget_s = bench.args.time_budget
        report.add(names[2], Check("skip", f"skipped: past the {budget_s:g} s time budget"))
    else:
        check, table = guarded_speed(bench, pipe, plain, deadline)
        report.add(names[2], check, *table)


def failed(what: str, error: BaseException) -> Check:
    """A check that could not finish: the error's last line, the traceback on stderr."""
    traceback.print_exception(error)
    return Check("fail", f"FAILED: {what} raised {type(error).__name__}: {error}"[:500])


def guarded(work: Callable[[], Check]) -> Check:
    try:
        return work()
    except Exception as error:
        return failed("the check", error)


def guarded_speed(bench: Bench, pipe: Any, runtime: Any, deadline: float) -> tuple[Check, list]:
    try:
        check, table = check_speed(bench, pipe, runtime, deadline)
        return check, [table]
    except Exception as error:
        return failed("the speed check", error), []


def _budget(text: str | None, sizes: dict[str, int]) -> int:
    """The asked-for budget, else room for the biggest model (the U-Net) and half the smallest:
    the U-Net fits alone but never beside another model, so each switch to or from it
    (text encoder -> U-Net -> VAE) must offload."""
    from nodeflow.runtime import parse_bytes

    if text:
        parsed = parse_bytes(text)
        if parsed is None:
            raise SystemExit("--vram-budget: give a size; 'auto' would not force offloading")
        return parsed
    return max(sizes.values()) + min(sizes.values()) // 2


def machine(cuda: bool) -> str:
    import diffusers
    import torch
    import transformers

    gpu = []
    if cuda and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = [f"{props.name} ({props.total_memory / GIB:.0f} GiB)", f"CUDA {torch.version.cuda}"]
    return machine_summary(
        *gpu,
        f"torch {torch.__version__}",
        f"diffusers {diffusers.__version__}",
        f"transformers {transformers.__version__}",
    )


if __name__ == "__main__":
    raise SystemExit(main())
