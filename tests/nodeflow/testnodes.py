"""A pure-Python test plugin: tiny nodes that record their calls, registered like any plugin."""

from __future__ import annotations

import time
import weakref
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import Field

from nodeflow import Context, FileKind, Widget, hookimpl, node, socket_type
from nodeflow.workflow import Workflow

CALLS: list[str] = []
"""Every executed node id, in order (tests clear it)."""
MADE: dict[str, weakref.ref] = {}
"""A weak reference to the last value each Constant or Scale node made (to observe freeing)."""


def _made(ctx: Context, value: Number) -> Number:
    MADE[ctx.node_id] = weakref.ref(value)
    return value


@socket_type(color="#2196f3")
class Number:
    """A number wrapped so it only travels along links."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Number({self.value})"


@socket_type(color="#e91e63", parents=("Number",))
class Integer(Number):
    """A whole number; can feed any Number input."""


class Halves(NamedTuple):
    low: Number
    high: Number


@node("Constant", category="math")
def constant(ctx: Context, value: Annotated[int, Field(ge=-1000, le=1000)] = 0) -> Integer:
    """A constant number."""
    CALLS.append(ctx.node_id)
    return _made(ctx, Integer(value))


@node("Add", category="math")
def add(ctx: Context, a: Number, b: Number | None = None) -> Number:
    """a + b (b defaults to 0)."""
    CALLS.append(ctx.node_id)
    return Number(a.value + (b.value if b else 0))


@node("Scale", category="math", version=2)
def scale(
    ctx: Context,
    x: Number,
    factor: Annotated[float, Field(ge=-10, le=10, multiple_of=0.5)] = 1.0,
    mode: Literal["mul", "div"] = "mul",
) -> Number:
    """x * factor (or x / factor)."""
    CALLS.append(ctx.node_id)
    return _made(ctx, Number(x.value * factor if mode == "mul" else x.value / factor))


@node("Split", category="math")
def split(ctx: Context, x: Number) -> Halves:
    """Two halves of x."""
    CALLS.append(ctx.node_id)
    return Halves(Number(x.value / 2), Number(x.value / 2))


@node("ToInt", category="math")
def to_int(ctx: Context, x: Number) -> int:
    """x as a plain INT, which can feed a widget turned into an input."""
    CALLS.append(ctx.node_id)
    return int(x.value)


@node("Label", category="text")
def label(ctx: Context, text: Annotated[str, Widget(multiline=True)] = "") -> str:
    """Some text."""
    CALLS.append(ctx.node_id)
    return text


@node("Show", category="output", output_node=True)
def show(ctx: Context, x: Number, title: str = "") -> dict:
    """Report a number."""
    CALLS.append(ctx.node_id)
    return {"value": x.value, "title": title}


@node("Slow", category="math")
def slow(ctx: Context, x: Number, steps: int = 10, delay: float = 0.0) -> Number:
    """Count to ``steps``, reporting progress (an interrupt point) at each."""
    CALLS.append(ctx.node_id)
    for step in range(steps):
        time.sleep(delay)
        ctx.progress(step + 1, steps)
    return Number(x.value)


@node("Fail", category="debug")
def fail(ctx: Context, x: Number, message: str = "boom") -> Number:
    """Always raises."""
    CALLS.append(ctx.node_id)
    raise RuntimeError(message)


@node("Volatile", category="debug", cache="never")
def volatile(ctx: Context) -> Integer:
    """Never cached: runs every time."""
    CALLS.append(ctx.node_id)
    return Integer(len(CALLS))


@node("Sleep", category="debug")
def sleep(ctx: Context, x: Number, seconds: float = 0.5, seed: int = 0) -> Number:
    """Sleep ``seconds`` (standing in for GPU time), an interrupt point every 10 ms."""
    CALLS.append(ctx.node_id)
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.01))
        ctx.check_interrupted()
    return Number(x.value + seed)


@node("Mark", category="output", output_node=True)
def mark(ctx: Context, x: Number, prefix: str = "marks/mark") -> dict:
    """Write a file holding the run id into the output folder (counting up, as SaveImage)."""
    CALLS.append(ctx.node_id)
    folder = ctx.env.output_dir / Path(prefix).parent
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(prefix).name
    counter = 1 + sum(1 for _ in folder.glob(f"{stem}_*.txt"))
    path = folder / f"{stem}_{counter:05d}.txt"
    path.write_text(f"{ctx.run_id} {x.value}")
    subfolder = path.parent.relative_to(ctx.env.output_dir).as_posix()
    return {
        "images": [{"filename": path.name, "subfolder": subfolder, "type": "output"}],
        "files": [str(path)],
    }


def _file_state(values, env) -> list:
    stat = Path(values["path"]).stat()
    return [values["path"], stat.st_size, stat.st_mtime_ns]


@node("ReadNumber", category="io", fingerprint=_file_state)
def read_number(ctx: Context, path: Annotated[str, Widget(files="input")]) -> Number:
    """A number read from a text file; editing the file re-runs it."""
    CALLS.append(ctx.node_id)
    return Number(float(Path(path).read_text()))


@node("Files", category="io", output_node=True)
def files(
    path: Annotated[str, Widget(files="input")],
    path_2: Annotated[str, Widget(files="input")] = "",
) -> dict:
    """Report two file names (validation checks them; nothing reads them)."""
    return {"files": [path, path_2]}


INPUT_FILES = FileKind(
    lambda env: [env.input_dir, env.models_dir / "numbers"],
    built_in={"zero": "the number 0, built in"},
    what="number file",
)
"""Where ``Widget(files="input")`` names are found: the input dir, then models/numbers."""


@hookimpl
def nodeflow_types():
    return [Number, Integer]


@hookimpl
def nodeflow_nodes():
    return [
        constant, add, scale, split, to_int, label, show, slow, fail, volatile, read_number, files,
        sleep, mark,
    ]  # fmt: skip


@hookimpl
def nodeflow_loaders():
    return {"input": INPUT_FILES}


def catalog() -> Any:
    """This plugin's catalog, built anew: what a worker in another process loads."""
    import sys

    from nodeflow.plugins import load_catalog

    return load_catalog(entry_points=False, plugins=[("testnodes", sys.modules[__name__])])


def make_workflow(nodes: dict[str, Any]) -> Workflow:
    """``{"id": ("Type", {inputs})}`` with ``"@node.output"`` strings standing for links."""
    document: dict[str, Any] = {"version": 1, "nodes": {}}
    for node_id, (node_type, inputs) in nodes.items():
        document["nodes"][node_id] = {
            "type": node_type,
            "inputs": {
                k: {"from": v[1:]} if isinstance(v, str) and v.startswith("@") else v
                for k, v in inputs.items()
            },
        }
    return Workflow.from_json(document)
