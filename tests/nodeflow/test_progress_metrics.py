"""Progress events may carry a node's figures (a training node's loss) to every subscriber."""

from __future__ import annotations

from nodeflow import events as ev
from nodeflow.context import Context, Environment


def _context(sent: list[tuple]) -> Context:
    return Context(
        node_id="n", node_type="T", run_id="r", env=Environment(),
        _emit_progress=lambda *args: sent.append(args),
    )  # fmt: skip


def test_progress_without_metrics_is_reported_as_before() -> None:
    sent: list[tuple] = []
    _context(sent).progress(1, 4)
    assert sent == [(1, 4)]
    assert ev.NodeProgress("r", "n", 1, 4).to_json()["metrics"] is None


def test_progress_metrics_reach_the_event_and_its_wire_form() -> None:
    sent: list[tuple] = []
    _context(sent).progress(2, 4, {"loss": 0.25})
    assert sent == [(2, 4, {"loss": 0.25})]
    event = ev.NodeProgress("r", "n", *sent[0])
    assert event.to_json() == {"type": "node.progress", "run_id": "r", "node": "n", "value": 2,
                               "max": 4, "metrics": {"loss": 0.25}}  # fmt: skip
