"""The worker half that runs inside a Ray actor: one Executor, its caches, its own folders.

Plain Python (``ray_pool`` wraps it with ``ray.remote``), so it is tested without Ray. It holds an
Executor for its lifetime, so its output cache and model manager serve every run it gets. Its
output and input folders are temporary folders of its own: nothing assumes a disk shared with
the server. Models are read from ``models_dir`` on the worker's machine.

:meth:`RemoteWorker.run` is a generator, consumed by the server as a Ray streaming generator. It
yields lists (whatever is ready at once travels as one message: on a busy machine the messages
cost more than the bytes) of, in order, ``("event", event)`` for every engine event of the run,
``("files", {relative name: bytes})`` with the outputs written so far (just before the
``node.finished`` of the node that wrote them, so a client that hears of a picture can fetch
it), and last ``("result", {...})``.
The executor runs on a thread of its own meanwhile; the actor is threaded, so
:meth:`RemoteWorker.interrupt` reaches it while a run is going.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nodeflow import events as ev
from nodeflow.context import Environment
from nodeflow.errors import WorkflowInvalid
from nodeflow.executor import Executor
from nodeflow.plugins import Catalog
from nodeflow.runtime import Runtime
from nodeflow.server.transfer import OutputFolder, Payload, write_inputs
from nodeflow.workflow import Workflow

_DONE = object()

#: Seconds between the previews a run sends to the server (the hub shows about 10 a second).
PREVIEW_INTERVAL = 0.1


class RemoteWorker:
    def __init__(
        self,
        catalog_factory: Callable[[], Catalog],
        models_dir: str,
        device: str = "auto",
        dtype: str = "auto",
        vram_budget: int | None = None,
        previews: bool = True,
        allow_pickle: bool = False,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="nodeflow-worker-"))
        env = Environment(
            models_dir=Path(models_dir),
            output_dir=self.root / "output",
            input_dir=self.root / "input",
            allow_pickle=allow_pickle,
        )
        env.output_dir.mkdir()
        env.input_dir.mkdir()
        self.env = env
        self.executor = Executor(
            catalog_factory(),
            env=env,
            runtime=Runtime(device, dtype, vram_budget),
            previews=previews,
        )
        self.outputs = OutputFolder(env.output_dir)
        self.current: str | None = None
        self._interrupts: set[str] = set()
        self._lock = threading.Lock()

    def ready(self) -> dict[str, Any]:
        """Where this worker lives; answering at all means it is up."""
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "output_dir": str(self.env.output_dir),
        }

    def interrupt(self, run_id: str | None = None) -> bool:
        """Interrupt ``run_id`` (or whatever runs); one not started yet stops at its start."""
        with self._lock:
            if run_id is not None and run_id != self.current:
                self._interrupts.add(run_id)  # the run call may still be on its way
                return False
            if self.current is None:
                return False
            self.executor.interrupt()
            return True

    def run(
        self,
        run_id: str,
        workflow: dict[str, Any],
        targets: list[str] | None,
        inputs: dict[str, Payload],
    ) -> Iterator[list[tuple[str, Any]]]:
        write_inputs(self.env.input_dir, inputs)
        items: queue.Queue[Any] = queue.Queue()

        last_preview = [-PREVIEW_INTERVAL]

        def forward(event: ev.Event) -> None:
            if isinstance(event, ev.NodePreview):
                now = time.monotonic()
                if now - last_preview[0] < PREVIEW_INTERVAL:
                    return  # the hub would drop it anyway; do not ship it
                last_preview[0] = now
            if isinstance(event, ev.RunStarted):
                with self._lock:
                    self.current = run_id
                    if run_id in self._interrupts:
                        self.executor.interrupt()
            items.put(event)

        def execute() -> None:
            try:
                result = self.executor.run(
                    Workflow.from_json(workflow), targets=targets, run_id=run_id
                )
                error = None
                if result.error is not None:
                    error = {k: v for k, v in result.error.to_json().items() if k != "type"}
                items.put(
                    {
                        "status": result.status,
                        "outputs": result.outputs,
                        "error": error,
                        "executed": result.executed,
                        "cached": result.cached,
                    }
                )
            except WorkflowInvalid as exc:  # plugins or files differ on this machine
                issues = [i.to_json() for i in exc.issues]
                message = "the workflow is not valid on this worker"
                items.put({"status": "failed", "error": {"issues": issues, "message": message}})
            except BaseException as exc:
                items.put({"status": "failed", "error": {"message": f"worker error: {exc!r}"}})
            finally:
                items.put(_DONE)

        unsubscribe = self.executor.subscribe(forward)
        thread = threading.Thread(target=execute, name=f"nodeflow-run-{run_id}", daemon=True)
        thread.start()
        try:
            done = False
            while not done:
                batch: list[tuple[str, Any]] = []
                item = items.get()
                while True:  # whatever else is waiting goes in the same message
                    if item is _DONE:
                        done = True
                        break
                    if isinstance(item, ev.Event):
                        if isinstance(item, ev.NodeFinished) and item.report:
                            batch += self._files()
                        batch.append(("event", item))
                    else:
                        batch += self._files()
                        batch.append(("result", item))
                    try:
                        item = items.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    yield batch
        finally:
            thread.join()
            unsubscribe()
            with self._lock:
                self.current = None
                self._interrupts.discard(run_id)

    def _files(self) -> list[tuple[str, Any]]:
        files = self.outputs.new_files()
        return [("files", files)] if files else []

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
