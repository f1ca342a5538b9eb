"""Run events: what an executor tells its subscribers, in order.

One run produces ``run.started``; then ``node.cached`` for every planned node that will not run;
then, per executed node, ``node.started``, any ``node.progress``/``node.preview``, and
``node.finished`` or ``node.error``; and last exactly one of ``run.finished``, ``run.failed`` or
``run.cancelled``. The server forwards these as JSON; ``to_json`` is that wire form.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    type: ClassVar[str] = "event"
    run_id: str

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    type: ClassVar[str] = "run.started"
    nodes: list[str] = field(default_factory=list)
    """The planned nodes, in execution order."""


@dataclass(frozen=True)
class NodeCached(Event):
    type: ClassVar[str] = "node.cached"
    node: str = ""
    node_type: str = ""


@dataclass(frozen=True)
class NodeStarted(Event):
    type: ClassVar[str] = "node.started"
    node: str = ""
    node_type: str = ""


@dataclass(frozen=True)
class NodeProgress(Event):
    type: ClassVar[str] = "node.progress"
    node: str = ""
    value: float = 0
    max: float = 1
    metrics: dict[str, float] | None = None
    """Figures a long node reports with its progress (a training node's loss and learning
    rate); None for nodes that report none."""


@dataclass(frozen=True)
class NodePreview(Event):
    """A cheap picture of work in progress; ``image`` is a PIL image (binary on the wire)."""

    type: ClassVar[str] = "node.preview"
    node: str = ""
    step: int = 0
    image: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "run_id": self.run_id, "node": self.node, "step": self.step}


@dataclass(frozen=True)
class NodeFinished(Event):
    type: ClassVar[str] = "node.finished"
    node: str = ""
    node_type: str = ""
    seconds: float = 0.0
    report: dict[str, Any] | None = None
    """What an output node reported (files written, ...); None for other nodes."""


@dataclass(frozen=True)
class NodeError(Event):
    type: ClassVar[str] = "node.error"
    node: str = ""
    node_type: str = ""
    exception_type: str = ""
    message: str = ""
    traceback: str = ""


@dataclass(frozen=True)
class RunFinished(Event):
    type: ClassVar[str] = "run.finished"
    seconds: float = 0.0
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunFailed(Event):
    type: ClassVar[str] = "run.failed"
    node: str = ""
    message: str = ""


@dataclass(frozen=True)
class RunCancelled(Event):
    type: ClassVar[str] = "run.cancelled"
    node: str | None = None
    """The node that was running when the interrupt was noticed, if any."""
