"""The time half of issue 17's target, measured interleaved: demo-lcm at 4 ``lcm`` steps against
the base demo model at 20 Euler steps, picture by picture in turn.

Run from the repository root (on demand, not in CI)::

    python tests/benchmarks/bench_few_step_timing.py [--lora nodes/demo/model/demo-lcm.safetensors]
        [--n 40] [--threads 1]

``bench_few_step.py`` times each setting in its own block of pictures, one after another; on a
shared machine whose load moves during the run, the block that ran while the load was lower looks
faster. Here both runners are loaded first and then render caption ``i`` in turn (base, LoRA,
base, LoRA, ...), so a change of load lands on both alike. The per-picture time is the workflow
run, as in ``bench_few_step.py`` (model loading and warm-up excluded). Prints a markdown summary;
writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from nodes.demo.adherence import DEFAULT_CFG, AdherenceRunner, held_out_scenes  # noqa: E402
from nodes.demo.dataset import caption  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lora", default=str(REPO / "nodes/demo/model/demo-lcm.safetensors"))
    parser.add_argument("--n", type=int, default=40, help="held-out captions (seed 0)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    base = AdherenceRunner("demo", steps=20, scheduler="euler")
    fast = AdherenceRunner("demo", lora=str(Path(args.lora).resolve()), steps=4, scheduler="lcm")
    base.images("warm-up", cfg=DEFAULT_CFG)
    fast.images("warm-up", cfg=1.0)
    times: dict[str, list[float]] = {"base": [], "lcm": []}
    for index, scene in enumerate(held_out_scenes(args.n)):
        text = caption(scene)
        for name, runner, cfg in (("base", base, DEFAULT_CFG), ("lcm", fast, 1.0)):
            started = time.perf_counter()
            runner.images(text, cfg=cfg, seed=index)
            times[name].append(time.perf_counter() - started)
    ratios = [f / b for b, f in zip(times["base"], times["lcm"], strict=True)]
    mean = {name: statistics.fmean(values) for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.n} captions interleaved, torch threads {args.threads}")
    print("| setting | mean s/picture | median s/picture |\n|---|---|---|")
    print(
        f"| base, euler 20 steps, CFG {DEFAULT_CFG:g} | {mean['base']:.3f} | {median['base']:.3f} |"
    )
    print(f"| demo-lcm, lcm 4 steps, guidance 1 | {mean['lcm']:.3f} | {median['lcm']:.3f} |")
    print(
        f"\ntime share (mean over mean) {mean['lcm'] / mean['base']:.1%}; median of the "
        f"per-caption shares {statistics.median(ratios):.1%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
