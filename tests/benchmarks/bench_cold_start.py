"""The first picture: a whole ``nodeflow run workflows/txt2img.json``, cold and warm, in fresh
processes, where its time goes, and a large single file's load against a ComfyUI-style load.

Run from the repository root::

    python tests/benchmarks/bench_cold_start.py [--repeats 5] [--before REV] [--no-large]

Each measurement runs in a fresh Python process, as a user's command does:

* ``run``: ``nodeflow run workflows/txt2img.json`` (the shipped demo model, 64x64, 20 euler
  steps) in an empty folder. *cold*: with a fresh ``NODEFLOW_HOME`` (nothing nodeflow caches
  there yet); *warm*: the same command again in a new process with that home. Wall time of the
  whole process and its CPU time (user + sys, all threads), and the per-node times it prints.
  ``nodeflow nodes`` and ``nodeflow validate workflows/txt2img.json`` likewise.
* ``phases``: one process timing the steps of a run one after the other: importing the engine,
  loading the catalog (every plugin's entry point), importing torch, importing the model classes a
  run uses (diffusers' U-Net, VAE and euler scheduler, transformers' CLIP text model and
  tokenizer), building the CLIP tokenizer from the shipped merges (what a single-file checkpoint
  needs; in a fresh home, then again from that home as a new process would), loading the demo
  folder (model construction and weights), and the first and second U-Net calls.
* ``imports``: ``python -X importtime`` of the same run, the import time summed by top-level
  package, and which of the heavy optional packages a run imported.
* ``large``: a real-size SD 1.5-architecture single file (random weights stored in fp16, 2.1 GB,
  original layout; written to a temporary folder) loaded to run in fp32 on the CPU, by nodeflow
  (what LoadCheckpoint does with a file: ``ModelManager.get`` of ``_load_single_file``, which
  calls ``nodes.single_file.load_checkpoint_file``) and by the
  essential steps of ComfyUI's loader: ``safetensors.torch.load_file`` of the whole file, every
  tensor cast to fp32, the models built without initialising weights (on the meta device) and
  filled by ``load_state_dict(assign=True)``. Imports are done before the clock starts on both
  sides; the file is read from the page cache (just written).

``--before REV`` also measures the code of git revision ``REV`` (unpacked into a temporary folder
with ``git archive`` and put first on ``PYTHONPATH``), interleaved with this checkout run by run,
so the two share the machine's state; the ratios come from the same run. Minimums and medians of
``--repeats`` runs are reported: on a shared machine the minimum is the better estimate of the
cost, the median of what a user sees.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))

from report import machine_summary, utc_date, write_section  # noqa: E402

SECTION = "## Cold start (tests/benchmarks/bench_cold_start.py)"
WORKFLOW = "workflows/txt2img.json"
HEAVY = (
    "torch",
    "diffusers",
    "transformers",
    "peft",
    "scipy",
    "scipy.stats",
    "scipy.optimize",
    "torch.distributed",
    "torch._dynamo",
    "accelerate",
    "aiohttp",
    "sympy",
)
"""Modules whose presence after a command is reported."""

CLI = r"""
import time
started = time.time()
import json, os, sys
from nodeflow.cli import main
code = main()
ended = time.time()
names = json.loads(os.environ["BENCH_HEAVY"])
ran = [m for m in names if m in sys.modules and not vars(sys.modules[m]).get(
    "__nodeflow_deferred__")]  # deferred by nodes.hf: imported, its code not run
with open(os.environ["BENCH_OUT"], "w") as f:
    json.dump({"started": started, "main_ended": ended, "modules": sorted(ran)}, f)
sys.exit(code)
"""

PHASES = r"""
import json, os, sys, time
marks = []
last = [time.perf_counter(), time.process_time()]
def mark(name):
    now = [time.perf_counter(), time.process_time()]
    marks.append((name, now[0] - last[0], now[1] - last[1]))
    last[:] = [time.perf_counter(), time.process_time()]

import nodeflow.cli
mark("import the engine (nodeflow.cli)")
from nodeflow.plugins import load_catalog
load_catalog()
mark("load the catalog (plugin entry points)")
import torch
mark("import torch")
try:
    from nodes import hf
    diffusers, transformers = hf.diffusers(), hf.transformers()
except ImportError:  # code from before nodes.hf
    import diffusers, transformers
for name in ("UNet2DConditionModel", "AutoencoderKL", "EulerDiscreteScheduler"):
    getattr(diffusers, name)
for name in ("CLIPTextModel", "CLIPTokenizer"):
    getattr(transformers, name)
mark("import the model classes (diffusers, transformers)")
from nodes import clip_vocab
clip_vocab.clip_tokenizer()
mark("CLIP tokenizer from the shipped merges (fresh home)")
clip_vocab.clip_tokenizer.cache_clear()
clip_vocab.clip_tokenizer()
mark("CLIP tokenizer again (home filled, as a new process)")
from nodes.loaders import BUILT_IN, _load_diffusers_folder
parts = _load_diffusers_folder(BUILT_IN["demo"], torch.float32, "auto")
mark("load the demo folder (build models, read weights)")
unet = parts.unet.model
x = torch.randn(2, unet.config.in_channels, 8, 8)
context = torch.randn(2, 77, unet.config.cross_attention_dim)
with torch.inference_mode():
    unet(x, 999, encoder_hidden_states=context)
    mark("first U-Net call (batch 2, 8x8 latents)")
    unet(x, 999, encoder_hidden_states=context)
    mark("second U-Net call")
print(json.dumps(marks))
"""

LARGE = r"""
import json, sys, time
method, path, tokenizer_folder = sys.argv[1], sys.argv[2], sys.argv[3]
import torch
try:
    from nodes import hf
    diffusers, transformers = hf.diffusers(), hf.transformers()
except ImportError:
    import diffusers, transformers
import safetensors.torch
from nodes.ldm_layout import unet_to_diffusers, vae_to_diffusers
from nodeflow.runtime.models import ModelManager
from nodes.loaders import _load_single_file
from nodes.single_file import family_config
unet_class, vae_class = diffusers.UNet2DConditionModel, diffusers.AutoencoderKL
text_class, text_config = transformers.CLIPTextModel, transformers.CLIPTextConfig
def rss_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
before = rss_mb("VmRSS:")
start, cpu = time.perf_counter(), time.process_time()
if method == "nodeflow":  # what LoadCheckpoint does with a file, less resolving its name
    manager = ModelManager(budget_bytes=None, device="cpu")
    parts = manager.get(path, lambda: _load_single_file(path, torch.float32, "auto", False))
    models = [parts.unet.model, parts.vae.model, *parts.text_encoder.models]
else:  # ComfyUI's essential steps
    state = safetensors.torch.load_file(path)
    state = {key: value.to(torch.float32) for key, value in state.items()}
    def part(prefix):
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    models = []
    for make, weights in (
        (lambda: unet_class.from_config(family_config("sd1", "unet")),
         unet_to_diffusers(part("model.diffusion_model."))),
        (lambda: vae_class.from_config(family_config("sd1", "vae")),
         vae_to_diffusers(part("first_stage_model."))),
        (lambda: text_class(text_config(**family_config("sd1", "text_encoder"))),
         part("cond_stage_model.transformer.")),
    ):
        with torch.device("meta"):
            model = make()
        if not any(k.startswith("text_model.") for k in model.state_dict()):
            weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
        missing, unexpected = model.load_state_dict(weights, strict=False, assign=True)
        assert not missing and not unexpected, (missing[:3], unexpected[:3])
        models.append(model.eval().requires_grad_(False))
    transformers.CLIPTokenizer.from_pretrained(tokenizer_folder)  # ComfyUI's ships as files
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
assert all(p.dtype == torch.float32 and not p.is_meta for m in models for p in m.parameters())
print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_mb": rss_mb("VmHWM:") - before}))
"""


@dataclass
class Code:
    """A version of the code to measure: its label and the folders put first on PYTHONPATH."""

    label: str
    root: Path
    source: str
    """Where the code came from, for the report."""
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    phases: list[list[tuple[str, float, float]]] = field(default_factory=list)
    imports: dict[str, float] = field(default_factory=dict)
    modules: dict[str, list[str]] = field(default_factory=dict)

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        paths = [self.root, self.root / "plugins/nodeflow-imageops"]
        paths.append(self.root / "plugins/nodeflow-sweep")
        env = dict(os.environ)
        env.update(
            PYTHONPATH=os.pathsep.join(str(p) for p in paths),
            NODEFLOW_HOME=str(home),
            HF_HUB_OFFLINE="1",
            BENCH_HEAVY=json.dumps(HEAVY),
            **extra,
        )
        for name in ("NODEFLOW_EAGER_IMPORTS", "NODEFLOW_DISABLE_PLUGINS", "BENCH_OUT"):
            if name not in extra:
                env.pop(name, None)
        return env


def timed(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run ``command``; its wall time, CPU time (user + sys of the child) and output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    spawned, start = time.time(), time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall, ended = time.perf_counter() - start, time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall": wall,
        "cpu": cpu,
        "stdout": done.stdout,
        "stderr": done.stderr,
        "spawned": spawned,
        "ended": ended,
    }


def node_times(stderr: str) -> dict[str, float]:
    times = {m[1]: float(m[2]) for m in re.finditer(r"^\s+(\S+) done in ([\d.]+)s", stderr, re.M)}
    finished = re.search(r"^finished in ([\d.]+)s", stderr, re.M)
    if finished:
        times["(executor run)"] = float(finished[1])
    return times


def cli(code: Code, args: list[str], home: Path, cwd: Path) -> dict[str, Any]:
    """A command in a fresh process: its times, the split of its wall time (interpreter start,
    main(), exit) and the heavy modules it imported."""
    out = cwd / "bench-out.json"
    result = timed([sys.executable, "-c", CLI, *args], code.env(home, BENCH_OUT=str(out)), cwd)
    inside = json.loads(out.read_text())
    result["split"] = {
        "start": inside["started"] - result["spawned"],
        "main": inside["main_ended"] - inside["started"],
        "exit": result["ended"] - inside["main_ended"],
    }
    result["modules"] = inside["modules"]
    return result


def measure_commands(codes: list[Code], repeats: int, scratch: Path) -> None:
    workflow = str(ROOT / WORKFLOW)
    for index in range(repeats):
        for code in codes:
            home = scratch / f"home-{code.label}-{index}"
            cwd = scratch / f"cwd-{code.label}-{index}"
            cwd.mkdir()
            for kind in ("cold", "warm"):
                result = cli(code, ["run", workflow], home, cwd)
                result["nodes"] = node_times(result["stderr"])
                code.runs[kind].append(result)
                code.modules["run"] = result["modules"]
            for kind, args in (("nodes", ["nodes"]), ("validate", ["validate", workflow])):
                result = cli(code, args, home, cwd)
                code.runs[kind].append(result)
                code.modules[kind] = result["modules"]
            print(
                f"  {code.label} #{index + 1}: cold {code.runs['cold'][-1]['wall']:.2f} s, "
                f"warm {code.runs['warm'][-1]['wall']:.2f} s",
                flush=True,
            )


def measure_phases(codes: list[Code], repeats: int, scratch: Path) -> None:
    for index in range(repeats):
        for code in codes:
            home = scratch / f"phases-{code.label}-{index}"
            result = timed([sys.executable, "-c", PHASES], code.env(home), scratch)
            code.phases.append(json.loads(result["stdout"].strip().splitlines()[-1]))


def measure_imports(codes: list[Code], repeats: int, scratch: Path) -> None:
    """Self import time (``-X importtime``) summed by top-level package: per package the least
    of ``repeats`` cold runs."""
    for index in range(repeats):
        for code in codes:
            home = scratch / f"imports-{code.label}-{index}"
            cwd = scratch / f"imports-cwd-{code.label}-{index}"
            cwd.mkdir()
            command = [sys.executable, "-X", "importtime", "-c", CLI, "run", str(ROOT / WORKFLOW)]
            result = timed(command, code.env(home, BENCH_OUT=str(cwd / "bench-out.json")), cwd)
            totals: dict[str, float] = defaultdict(float)
            for line in result["stderr"].splitlines():
                match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|(\s*)(\S+)", line)
                if match:
                    totals[match[3].split(".")[0]] += int(match[1]) / 1e6
            for package, seconds in totals.items():
                code.imports[package] = min(code.imports.get(package, seconds), seconds)


def write_large_file(path: Path) -> None:
    from bench_single_file import write_checkpoint

    write_checkpoint(path, "sd1")


def measure_large(codes: list[Code], repeats: int, path: Path, scratch: Path) -> None:
    tokenizer = ROOT / "nodes/demo/model/demo-sd/tokenizer"  # vocab.json and merges.txt
    warm_up = "from nodes.clip_vocab import clip_tokenizer; clip_tokenizer()"
    for code in codes:  # what nodeflow keeps in its home is there, as after a first run
        timed([sys.executable, "-c", warm_up], code.env(scratch / f"large-{code.label}"), scratch)
    for index in range(repeats):
        for code in codes:
            for method in ("nodeflow", "comfyui-style"):
                home = scratch / f"large-{code.label}"
                command = [sys.executable, "-c", LARGE, method, str(path), str(tokenizer)]
                result = timed(command, code.env(home), scratch)
                data = json.loads(result["stdout"].strip().splitlines()[-1])
                code.runs[f"large {method}"].append(data)
            last = code.runs["large nodeflow"][-1]["seconds"]
            base = code.runs["large comfyui-style"][-1]["seconds"]
            print(f"  {code.label} #{index + 1}: nodeflow {last:.2f} s, comfyui-style {base:.2f} s")


# ----- report ---------------------------------------------------------------------------------


def stat(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f}"


def ratio(after: list[float], before: list[float]) -> str:
    medians = statistics.median(after) / statistics.median(before)
    return f"{min(after) / min(before):.2f} / {medians:.2f}"


def report(codes: list[Code], args: argparse.Namespace, large_mb: float | None) -> str:
    from importlib.metadata import version

    labels = [c.label for c in codes]
    lines = [
        SECTION,
        "",
        f"- Date: {utc_date()}",
        "- Machine: "
        + machine_summary(
            *(f"{name} {version(name)}" for name in ("torch", "diffusers", "transformers")),
            f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}",
        ),
        "- Command: `python "
        + " ".join(["tests/benchmarks/bench_cold_start.py", *sys.argv[1:]])
        + "`",
        f"- Code: {'; '.join(f'{c.label}: {c.source}' for c in codes)}",
        f"- Figures are min / median of {args.repeats} runs, each in a fresh process "
        "(interleaved between the code versions); wall = the whole process, CPU = user + sys "
        "of all its threads. Ratios: min/min and median/median.",
        "",
        f"### `nodeflow run {WORKFLOW}` (the shipped demo model, 64x64, 20 steps)",
        "",
        "| command | "
        + " | ".join(f"{label} wall (s)" for label in labels)
        + " | "
        + " | ".join(f"{label} CPU (s)" for label in labels)
        + (" | wall ratio | CPU ratio |" if len(codes) == 2 else " |"),
        "|---|" + "---:|" * (2 * len(codes) + (2 if len(codes) == 2 else 0)),
    ]
    for kind, text in (
        ("cold", "run, cold (fresh NODEFLOW_HOME)"),
        ("warm", "run, warm (second process, same home)"),
        ("nodes", "`nodeflow nodes`"),
        ("validate", f"`nodeflow validate {WORKFLOW}`"),
    ):
        walls = [[r["wall"] for r in c.runs[kind]] for c in codes]
        cpus = [[r["cpu"] for r in c.runs[kind]] for c in codes]
        row = f"| {text} | " + " | ".join(stat(w) for w in walls) + " | "
        row += " | ".join(stat(c) for c in cpus) + " |"
        if len(codes) == 2:
            row += f" {ratio(walls[1], walls[0])} | {ratio(cpus[1], cpus[0])} |"
        lines.append(row)
    lines += [
        "",
        "A run's wall time split (seconds, min / median over cold and warm runs): interpreter "
        "start, `main()` (imports, catalog, the run), and the process's exit after it:",
        "",
        "| part | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(codes),
    ]
    for part, text in (("start", "interpreter start"), ("main", "main()"), ("exit", "exit")):
        cells = [
            stat([r["split"][part] for k in ("cold", "warm") for r in c.runs[k]]) for c in codes
        ]
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per node, as the run prints it (seconds, min / median over cold and warm runs):",
        "",
        "| node | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(codes),
    ]
    names = list(codes[0].runs["cold"][0]["nodes"])
    for name in names:
        cells = []
        for code in codes:
            values = [
                r["nodes"].get(name, float("nan")) for k in ("cold", "warm") for r in code.runs[k]
            ]
            cells.append(stat(values))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### Where a run's time goes (one process, step by step)",
        "",
        "| step | "
        + " | ".join(f"{label} wall (s)" for label in labels)
        + " | "
        + " | ".join(f"{label} CPU (s)" for label in labels)
        + " |",
        "|---|" + "---:|" * (2 * len(codes)),
    ]
    for position, (name, _, _) in enumerate(codes[0].phases[0]):
        walls = [stat([p[position][1] for p in c.phases]) for c in codes]
        cpus = [stat([p[position][2] for p in c.phases]) for c in codes]
        lines.append(f"| {name} | " + " | ".join(walls) + " | " + " | ".join(cpus) + " |")
    packages = sorted(
        {p for c in codes for p in c.imports},
        key=lambda p: -max(c.imports.get(p, 0) for c in codes),
    )
    shown = [p for p in packages if max(c.imports.get(p, 0) for c in codes) >= 0.05]
    lines += [
        "",
        "### Import time of a run, by top-level package",
        "",
        "`-X importtime` of cold runs, each module's own time summed by top-level package; per "
        "package the least of up to 3 runs (so the total is a little below a single run's).",
        "",
        "| package | " + " | ".join(f"{label} (s)" for label in labels) + " |",
        "|---|" + "---:|" * len(codes),
    ]
    for package in shown:
        lines.append(
            f"| {package} | " + " | ".join(f"{c.imports.get(package, 0):.2f}" for c in codes) + " |"
        )
    others = [sum(v for p, v in c.imports.items() if p not in shown) for c in codes]
    lines.append("| (all others) | " + " | ".join(f"{v:.2f}" for v in others) + " |")
    total = [sum(c.imports.values()) for c in codes]
    lines.append("| **total** | " + " | ".join(f"**{v:.2f}**" for v in total) + " |")
    lines += ["", "Heavy modules imported:", ""]
    for code in codes:
        for kind in ("run", "validate", "nodes"):
            found = ", ".join(code.modules.get(kind, [])) or "none"
            lines.append(f"- {code.label}, `{kind}`: {found}")
    if large_mb is not None:
        lines += [
            "",
            f"### A large single file: SD 1.5 architecture, {large_mb:,.0f} MB (fp16 stored), "
            "loaded for fp32 on the CPU",
            "",
            "| code | loader | wall (s) | CPU (s) | peak memory added (MB) "
            "| nodeflow / ComfyUI-style (wall, min / median) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for code in codes:
            base = [r["seconds"] for r in code.runs["large comfyui-style"]]
            for method in ("nodeflow", "comfyui-style"):
                runs = code.runs[f"large {method}"]
                walls = [r["seconds"] for r in runs]
                cell = ratio(walls, base) if method == "nodeflow" else ""
                lines.append(
                    f"| {code.label} | {method} | {stat(walls)} | {stat([r['cpu'] for r in runs])} "
                    f"| {max(r['peak_mb'] for r in runs):,.0f} | {cell} |"
                )
    return "\n".join(lines)


def checkout() -> str:
    def git(*words: str) -> str:
        return subprocess.run(["git", *words], cwd=ROOT, capture_output=True, text=True).stdout

    head = git("rev-parse", "--short", "HEAD").strip() or "?"
    dirty = " with uncommitted changes" if git("status", "--porcelain").strip() else ""
    return f"this checkout, commit {head}{dirty}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--large-repeats", type=int, default=3)
    parser.add_argument("--before", metavar="REV", help="also measure git revision REV")
    parser.add_argument("--no-large", action="store_true", help="skip the large single file")
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nodeflow-cold-") as folder:
        scratch = Path(folder)
        codes = []
        if args.before:
            before = scratch / "before"
            before.mkdir()
            archive = subprocess.run(
                ["git", "archive", args.before], cwd=ROOT, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
            codes.append(Code(f"before ({args.before})", before, f"`git archive {args.before}`"))
        codes.append(Code("after" if args.before else "this checkout", ROOT, checkout()))

        print("run, nodes, validate:", flush=True)
        measure_commands(codes, args.repeats, scratch)
        print("phases, imports:", flush=True)
        measure_phases(codes, args.repeats, scratch)
        measure_imports(codes, min(args.repeats, 3), scratch)
        large_mb = None
        if not args.no_large:
            path = scratch / "sd15-random.safetensors"
            write_large_file(path)
            large_mb = path.stat().st_size / 1e6
            print(f"large file ({large_mb:,.0f} MB):", flush=True)
            measure_large(codes, args.large_repeats, path, scratch)
            path.unlink()
        text = report(codes, args, large_mb)
        shutil.rmtree(scratch, ignore_errors=True)
    print(text)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", SECTION, text)


if __name__ == "__main__":
    main()
