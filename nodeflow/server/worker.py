"""The run worker: one thread per device, taking queued runs from the store in order.

The executor (its output cache and loaded models) lives as long as the worker, so a resubmitted
workflow with one changed widget re-runs only what changed. Runs go through the store at every
state change, so a killed server loses nothing it acknowledged.

The worker forwards the executor's events to ``publish``, but holds back each run's final event
(run.finished/failed/cancelled) until the store has recorded the result: a client that fetches
the run when it hears that it ended must find its outputs there.

Stopping (server shutdown) interrupts the running run at its next interrupt point and records it
``"interrupted"``, as a restart would have: it did not finish and nobody cancelled it. The wait
for that is bounded, so a node that never checks for interrupts cannot hold the process; such a
run stays ``"running"`` in the store and the next start marks it interrupted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from nodeflow import events as ev
from nodeflow.errors import WorkflowInvalid
from nodeflow.executor import Executor
from nodeflow.server import runlog
from nodeflow.server.store import INTERRUPTED, RunRecord, RunStore
from nodeflow.workflow import Workflow

log = logging.getLogger(__name__)

#: How long :meth:`Worker.stop` waits for the running run to reach an interrupt point.
STOP_GRACE_SECONDS = 3.0

STOPPED_MESSAGE = (
    "The server was stopped while this run was executing; resubmit it to run it again."
)


class Workers(Protocol):
    """What the server asks of whatever runs its queue: this thread, or a pool of Ray actors
    (:mod:`nodeflow.server.ray_pool`). Built as ``factory(executor, store, publish=...,
    on_change=...)``; it claims runs from the store, records their results there and publishes
    their events, each run's final event only once the store has its result."""

    def start(self) -> None: ...

    def notify(self) -> None: ...

    def interrupt(self, run_id: str | None = None) -> bool: ...

    def stop(self, timeout: float = ...) -> bool: ...

    def queue_message(self) -> dict[str, Any]: ...

    def running(self) -> list[str]:
        """The ids of the runs executing now (one for the thread worker, one per busy actor)."""
        ...


class Worker:
    def __init__(
        self,
        executor: Executor,
        store: RunStore,
        publish: Callable[[ev.Event], None] = lambda event: None,
        on_change: Callable[[dict[str, Any]], None] = lambda message: None,
    ) -> None:
        self.executor = executor
        self.store = store
        self.publish = publish
        self.on_change = on_change
        """Called (from the worker thread) with a ``{"type": "queue", ...}`` message."""
        self.current: str | None = None
        self._record: RunRecord | None = None
        self._planned = 0
        self._final_event: ev.Event | None = None
        executor.subscribe(self._forward)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nodeflow-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """A run was submitted: wake up if idle."""
        self._wake.set()

    def interrupt(self, run_id: str | None = None) -> bool:
        """Interrupt the running run (or only if it is ``run_id``); False if nothing matched."""
        current = self.current
        if current is None or (run_id is not None and run_id != current):
            return False
        self.executor.interrupt()
        return True

    def stop(self, timeout: float = STOP_GRACE_SECONDS) -> bool:
        """Stop taking runs and interrupt the running one; False if it outlived ``timeout``.

        The idle loop wakes at once (no poll interval to sit out), so stopping an idle worker
        takes milliseconds.
        """
        self._stop.set()
        self._wake.set()
        self.executor.interrupt()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning(
                "run %s did not reach an interrupt point within %.1fs; leaving it to be marked "
                "interrupted at the next start",
                self.current,
                timeout,
            )
            return False
        return True

    def running(self) -> list[str]:
        current = self.current
        return [current] if current is not None else []

    def queue_message(self) -> dict[str, Any]:
        return {
            "type": "queue",
            "running": self.current,
            "pending": [record.run_id for record in self.store.queue()],
        }

    def _forward(self, event: ev.Event) -> None:
        if isinstance(event, ev.RunStarted):
            if self._stop.is_set():
                # stop() interrupted before Executor.run cleared the flag for this run
                self.executor.interrupt()
            self._planned = len(event.nodes)
            record = self._record
            if record is not None and record.run_id == event.run_id:
                runlog.started(event.run_id, self._planned, _waited(record))
        if isinstance(event, ev.RunFinished | ev.RunFailed | ev.RunCancelled):
            self._final_event = event  # published once the store has the result
        else:
            self.publish(event)

    def _loop(self) -> None:
        while not self._stop.is_set():
            # cleared before looking, so a notify() that comes after the look still wakes us
            self._wake.clear()
            record = self.store.claim_next()
            if record is None:
                self._wake.wait(1.0)
                continue
            self.current, self._record = record.run_id, record
            self.on_change(self.queue_message())
            try:
                self._run(record)
            except Exception:  # the worker must outlive any run
                log.exception("run %s crashed the worker loop", record.run_id)
                error = {"message": "internal error"}
                self.store.finish(record.run_id, "failed", error=error)
                runlog.ended(record.run_id, "failed", _ran_for(record), error=error)
            finally:
                self.current, self._record, self._planned = None, None, 0
                final, self._final_event = self._final_event, None
                if final is not None:
                    self.publish(final)
                self.on_change(self.queue_message())

    def _run(self, record: RunRecord) -> None:
        try:
            workflow = Workflow.from_json(record.workflow)
            result = self.executor.run(workflow, targets=record.targets, run_id=record.run_id)
        except WorkflowInvalid as exc:  # plugins changed since it was queued
            error = {
                "issues": [i.to_json() for i in exc.issues],
                "message": "the workflow is no longer valid",
            }
            self.store.finish(record.run_id, "failed", error=error)
            runlog.ended(record.run_id, "failed", _ran_for(record), error=error)
            return
        status: str = result.status
        error = None
        if result.error is not None:
            error = {k: v for k, v in result.error.to_json().items() if k != "type"}
        final = self._final_event
        stopped_in = final.node if isinstance(final, ev.RunCancelled) else None
        if status == "cancelled" and self._stop.is_set():
            status = INTERRUPTED  # the server stopped it; nobody cancelled it
            error = {"message": STOPPED_MESSAGE, "node": stopped_in}
        self.store.finish(record.run_id, status, outputs=result.outputs, error=error)
        runlog.ended(
            record.run_id,
            status,
            _ran_for(record),
            nodes=self._planned,
            ran=len(result.executed),
            cached=len(result.cached),
            error=error or {"node": stopped_in},
        )


def _waited(record: RunRecord) -> float:
    """Seconds a claimed run spent queued."""
    return max(0.0, (record.started_at or record.submitted_at) - record.submitted_at)


def _ran_for(record: RunRecord) -> float:
    """Seconds since a claimed run started (what its end is logged with)."""
    return max(0.0, time.time() - (record.started_at or record.submitted_at))
