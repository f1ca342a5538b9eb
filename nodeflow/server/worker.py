"""The run worker: one thread per device, taking queued runs from the store in order.

The executor (its output cache and loaded models) lives as long as the worker, so a resubmitted
workflow with one changed widget re-runs only what changed. Runs go through the store at every
state change, so a killed server loses nothing it acknowledged.

The worker forwards the executor's events to ``publish``, but holds back each run's final event
(run.finished/failed/cancelled) until the store has recorded the result: a client that fetches
the run when it hears that it ended must find its outputs there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from nodeflow import events as ev
from nodeflow.errors import WorkflowInvalid
from nodeflow.executor import Executor
from nodeflow.server.store import RunRecord, RunStore
from nodeflow.workflow import Workflow

log = logging.getLogger(__name__)


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

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        self.executor.interrupt()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def queue_message(self) -> dict[str, Any]:
        return {
            "type": "queue",
            "running": self.current,
            "pending": [record.run_id for record in self.store.queue()],
        }

    def _forward(self, event: ev.Event) -> None:
        if isinstance(event, ev.RunFinished | ev.RunFailed | ev.RunCancelled):
            self._final_event = event  # published once the store has the result
        else:
            self.publish(event)

    def _loop(self) -> None:
        while not self._stop.is_set():
            record = self.store.claim_next()
            if record is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self.current = record.run_id
            self.on_change(self.queue_message())
            try:
                self._run(record)
            except Exception:  # the worker must outlive any run
                log.exception("run %s crashed the worker loop", record.run_id)
                self.store.finish(record.run_id, "failed", error={"message": "internal error"})
            finally:
                self.current = None
                final, self._final_event = self._final_event, None
                if final is not None:
                    self.publish(final)
                self.on_change(self.queue_message())

    def _run(self, record: RunRecord) -> None:
        try:
            workflow = Workflow.from_json(record.workflow)
            result = self.executor.run(workflow, targets=record.targets, run_id=record.run_id)
        except WorkflowInvalid as exc:  # plugins changed since it was queued
            self.store.finish(
                record.run_id,
                "failed",
                error={
                    "issues": [i.to_json() for i in exc.issues],
                    "message": "the workflow is no longer valid",
                },
            )
            return
        error = None
        if result.error is not None:
            error = {k: v for k, v in result.error.to_json().items() if k != "type"}
        self.store.finish(record.run_id, result.status, outputs=result.outputs, error=error)
