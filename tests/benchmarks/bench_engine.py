"""Engine overhead: load, validate, plan and run generated graphs of trivial nodes.

Run from the repository root::

    python tests/benchmarks/bench_engine.py [--sizes N [N ...]] [--repeats R] [--no-write]
    python tests/benchmarks/bench_engine.py --profile   # cProfile of the 1,000-node phases

The nodes are the pure-Python test nodes (``tests/nodeflow/testnodes.py``), which do next to
nothing, so every time measured here is the engine's own overhead. Two kinds of graph:

* ``mixed N``: wide and deep. Chains of depth 10 (a Constant, then Scale and Add nodes, a Show
  output node at the end), N / 10 of them side by side; each Add also takes its ``b`` from the
  node at the same depth in the previous chain, so chains are cross-linked. N nodes in all.
* ``chain N``: one linear chain of depth N: Constant, N - 2 Scale nodes, Show. Shows that cost
  grows with depth linearly, not as depth squared.

Phases, each the median of ``--repeats`` timings (``time.perf_counter``):

* load: ``Workflow.from_json`` of the document;
* validate: ``validate(workflow, catalog)``; plan: ``plan(bound)``; validate+plan: both in a row;
* run cold: ``Executor.run(workflow)`` on a fresh Executor (validation, planning, cache keys,
  every node executed);
* run cached: a second ``run`` of the same workflow on the same Executor (every node a cache hit);
* per node: run cold / number of nodes executed.

It prints a markdown table and writes it as a section of BENCHMARKS.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import math
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "nodeflow"))  # testnodes
import testnodes  # noqa: E402
from report import machine_summary, utc_date, write_section  # noqa: E402

from nodeflow.context import Environment  # noqa: E402
from nodeflow.executor import Executor  # noqa: E402
from nodeflow.graph import plan  # noqa: E402
from nodeflow.plugins import Catalog, load_catalog  # noqa: E402
from nodeflow.validate import validate  # noqa: E402
from nodeflow.workflow import Workflow  # noqa: E402

SECTION = "## Engine overhead (tests/benchmarks/bench_engine.py)"
CHAIN_DEPTH = 10

# Targets (seconds).
TARGET_VALIDATE_PLAN_1000 = 0.100
TARGET_CACHED_1000 = 0.050
TARGET_PER_NODE = 100e-6

PHASES = ["load", "validate", "plan", "validate+plan", "run cold", "run cached"]


# --- graphs ------------------------------------------------------------------------------------


def mixed_graph(n: int) -> dict[str, Any]:
    """``n`` nodes: chains of depth 10 side by side, cross-linked through Add's ``b``."""
    nodes: dict[str, Any] = {}
    chain = 0
    while len(nodes) < n:
        length = min(CHAIN_DEPTH, n - len(nodes))
        if length < 2:  # a lone leftover node: one more Constant feeding nothing
            nodes[f"c{chain}_0"] = {"type": "Constant", "inputs": {"value": chain % 7}}
            break
        previous = f"c{chain}_0"
        nodes[previous] = {"type": "Constant", "inputs": {"value": chain % 7 + 1}}
        for depth in range(1, length - 1):
            node_id = f"c{chain}_{depth}"
            if depth % 2:
                inputs = {"x": {"from": f"{previous}.{out(nodes[previous])}"}, "factor": 0.5}
                nodes[node_id] = {"type": "Scale", "inputs": inputs}
            else:
                inputs = {"a": {"from": f"{previous}.{out(nodes[previous])}"}}
                beside = f"c{chain - 1}_{depth}"
                if chain > 0 and beside in nodes:
                    inputs["b"] = {"from": f"{beside}.{out(nodes[beside])}"}
                nodes[node_id] = {"type": "Add", "inputs": inputs}
            previous = node_id
        nodes[f"c{chain}_show"] = {
            "type": "Show",
            "inputs": {"x": {"from": f"{previous}.{out(nodes[previous])}"}, "title": str(chain)},
        }
        chain += 1
    assert len(nodes) == n, (len(nodes), n)
    return {"version": 1, "nodes": nodes}


def chain_graph(n: int) -> dict[str, Any]:
    """One linear chain of depth ``n``: Constant, n - 2 Scale nodes, Show."""
    nodes: dict[str, Any] = {"n0": {"type": "Constant", "inputs": {"value": 3}}}
    previous = "n0.integer"
    for i in range(1, n - 1):
        nodes[f"n{i}"] = {"type": "Scale", "inputs": {"x": {"from": previous}, "factor": 1.0}}
        previous = f"n{i}.number"
    nodes[f"n{n - 1}"] = {"type": "Show", "inputs": {"x": {"from": previous}}}
    assert len(nodes) == n
    return {"version": 1, "nodes": nodes}


def out(entry: dict[str, Any]) -> str:
    return {"Constant": "integer", "Scale": "number", "Add": "number"}[entry["type"]]


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Result:
    graph: str
    nodes: int
    times: dict[str, float] = field(default_factory=dict)
    executed: int = 0

    @property
    def per_node(self) -> float:
        return self.times["run cold"] / max(self.executed, 1)


SAMPLE_SECONDS = 0.02
"""A timing sample repeats a fast call until it lasts about this long (at most 200 calls)."""


def median_time(fn: Callable[..., Any], repeats: int, setup: Callable[[], Any] | None = None):
    """Median over ``repeats`` samples of the time of one ``fn()`` (or ``fn(setup())``, setup not
    timed); and the last result. Each sample times a batch of calls and divides, so calls of a
    few microseconds are not lost in timer and scheduling noise."""
    started = time.perf_counter()
    result = fn(setup()) if setup else fn()
    once = time.perf_counter() - started
    batch = max(1, min(200, math.ceil(SAMPLE_SECONDS / max(once, 1e-9))))
    times = []
    for _ in range(repeats):
        args = [setup() for _ in range(batch)] if setup else None
        gc.collect()
        if args is None:
            started = time.perf_counter()
            for _ in range(batch):
                result = fn()
        else:
            started = time.perf_counter()
            for arg in args:
                result = fn(arg)
        times.append((time.perf_counter() - started) / batch)
        del args
    return statistics.median(times), result


class Bench:
    def __init__(self, root: Path) -> None:
        self.catalog: Catalog = load_catalog(entry_points=False, plugins=[("testnodes", testnodes)])
        assert not self.catalog.failures, self.catalog.failures
        self.env = Environment.from_dirs(root / "models", root / "output", root / "input")

    def executor(self) -> Executor:
        testnodes.CALLS.clear()
        testnodes.MADE.clear()
        return Executor(self.catalog, env=self.env)

    def measure(self, graph: str, document: dict[str, Any], repeats: int) -> Result:
        catalog = self.catalog
        result = Result(graph, len(document["nodes"]))
        t = result.times
        t["load"], workflow = median_time(lambda: Workflow.from_json(document), repeats)
        t["validate"], (bound, issues) = median_time(lambda: validate(workflow, catalog), repeats)
        assert bound is not None, issues
        t["plan"], the_plan = median_time(lambda: plan(bound), repeats)
        assert len(the_plan.order) == result.nodes

        def validate_and_plan() -> Any:
            bound, _ = validate(workflow, catalog)
            return plan(bound)

        t["validate+plan"], _ = median_time(validate_and_plan, repeats)
        t["run cold"], run = median_time(lambda ex: ex.run(workflow), repeats, self.executor)
        assert run.ok, run.error
        result.executed = len(run.executed)
        assert result.executed == result.nodes, (result.executed, result.nodes)

        def warm_executor() -> Executor:
            executor = self.executor()
            assert executor.run(workflow).ok
            return executor

        t["run cached"], rerun = median_time(lambda ex: ex.run(workflow), repeats, warm_executor)
        assert rerun.ok and not rerun.executed and len(rerun.cached) == result.nodes
        return result


def profile(bench: Bench, document: dict[str, Any], label: str) -> str:
    """cProfile of validate+plan, a cold run and a cached run of ``document``: the nodeflow
    functions with the largest cumulative share."""
    workflow = Workflow.from_json(document)
    out_text = io.StringIO()
    for phase, fn in [
        ("validate+plan", lambda: plan(validate(workflow, bench.catalog)[0])),
        ("run cold", lambda: bench.executor().run(workflow)),
        ("run cached", None),
    ]:
        if fn is None:
            executor = bench.executor()
            executor.run(workflow)
            fn = lambda executor=executor: executor.run(workflow)  # noqa: E731
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(5):
            fn()
        profiler.disable()
        stats = pstats.Stats(profiler, stream=out_text)
        total = stats.total_tt
        print(f"\n### {label}: {phase} (5 runs, {total * 1000:.1f} ms in all)", file=out_text)
        stats.sort_stats("cumulative").print_stats(r"nodeflow|networkx|pydantic|json|hashlib", 25)
    return out_text.getvalue()


# --- reporting ---------------------------------------------------------------------------------


def fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def table(results: list[Result]) -> str:
    head = ["graph", "nodes", *PHASES, "per executed node"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r.graph, str(r.nodes), *(fmt(r.times[p]) for p in PHASES), fmt(r.per_node)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_table(results: list[Result]) -> str:
    """Time at 1,000 nodes / time at 100 nodes, per phase (about 10 means linear)."""
    by = {(r.graph, r.nodes): r for r in results}
    head = ["growth, 100 → 1,000 nodes", *PHASES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for graph in ("mixed", "chain"):
        small, large = by.get((graph, 100)), by.get((graph, 1000))
        if small and large:
            cells = [f"{graph} (1000/100)"]
            cells += [f"{large.times[p] / small.times[p]:.1f}×" for p in PHASES]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(results: list[Result]) -> list[tuple[str, bool]]:
    by = {(r.graph, r.nodes): r for r in results}
    found: list[tuple[str, bool]] = []
    for graph in ("mixed", "chain"):
        r = by.get((graph, 1000))
        if r is None:
            continue
        vp, cached = r.times["validate+plan"], r.times["run cached"]
        found.append(
            (
                f"validate + plan, {graph} 1,000 nodes: {fmt(vp)} (target < 100 ms)",
                vp < TARGET_VALIDATE_PLAN_1000,
            )
        )
        found.append(
            (
                f"fully cached rerun, {graph} 1,000 nodes: {fmt(cached)} (target < 50 ms)",
                cached < TARGET_CACHED_1000,
            )
        )
    for graph in ("mixed", "chain"):
        # At 1,000 nodes the per-run costs are spread thin; at 10 they dominate (see the table).
        r = by.get((graph, 1000))
        if r is not None:
            found.append(
                (
                    f"per executed trivial node, {graph} 1,000 nodes: {fmt(r.per_node)} "
                    "(target < 100 µs)",
                    r.per_node < TARGET_PER_NODE,
                )
            )
    for graph in ("mixed", "chain"):
        small, large = by.get((graph, 100)), by.get((graph, 1000))
        if small and large:
            ratios = {p: large.times[p] / small.times[p] for p in PHASES}
            phase, top = max(ratios.items(), key=lambda kv: kv[1])
            what = "depth" if graph == "chain" else "node count"
            found.append(
                (
                    f"linear in {what} ({graph}): largest 1000/100 ratio {top:.1f}× ({phase}); "
                    "target about 10× (100× would be quadratic)",
                    top < 20,
                )
            )
    return found


def machine() -> str:
    return machine_summary(sys.implementation.name)


def section(command: str, results: list[Result], repeats: int) -> str:
    checks = verdicts(results)
    return "\n".join(
        [
            SECTION,
            "",
            f"- Date: {utc_date()}",
            f"- Machine: {machine()}",
            f"- Command: `{command}`",
            f"- Method: per phase, the median of {repeats} samples (`time.perf_counter`, "
            "`gc.collect()` before each), a sample timing a batch of calls lasting about 20 ms "
            "(one call where a call takes longer) divided by the batch size; pure-Python test "
            "nodes that do next to nothing, so the "
            "times are the engine's overhead. `mixed N`: chains of depth 10 "
            "(Constant → Scale/Add → Show), N/10 side by side, cross-linked through Add's `b`. "
            "`chain N`: one linear chain of depth N (Constant → N−2 Scale → Show). "
            "`run cold`: `Executor.run(workflow)` on a fresh Executor (validation, planning, "
            "cache keys and every node executed); `run cached`: the same workflow again on "
            "the same Executor (every node a cache hit); per executed node = run cold / nodes.",
            "- Caveat: a small shared machine where other processes may be running (see the "
            "load average); absolute times hold only for this machine and run, and on a busy "
            "machine they vary by ±50% or more from run to run.",
            "",
            table(results),
            "",
            ratio_table(results),
            "",
            "Targets:",
            "",
            *(f"- {'met' if ok else 'MISSED'}: {text}" for text, ok in checks),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--no-write", dest="write", action="store_false", help="do not touch BENCHMARKS.md"
    )
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument(
        "--profile", action="store_true", help="print a cProfile of the 1,000-node phases only"
    )
    args = parser.parse_args(argv)
    command = "python tests/benchmarks/bench_engine.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )

    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        bench = Bench(Path(tmp))
        if args.profile:
            print(profile(bench, mixed_graph(1000), "mixed 1000"))
            print(profile(bench, chain_graph(1000), "chain 1000"))
            return 0
        # Warm up imports, pydantic and the interpreter on a small graph first.
        bench.measure("mixed", mixed_graph(100), 2)
        results = []
        for graph, build in (("mixed", mixed_graph), ("chain", chain_graph)):
            for n in args.sizes:
                print(f"measuring {graph} {n} ...", file=sys.stderr, flush=True)
                results.append(bench.measure(graph, build(n), args.repeats))

    text = section(command.strip(), results, args.repeats)
    print(text)
    if args.write:
        write_section(args.markdown, SECTION, text)
        print(f"wrote the section to {args.markdown}", file=sys.stderr)
    return 0 if all(ok for _, ok in verdicts(results)) else 1


if __name__ == "__main__":
    sys.exit(main())
