"""Workers as Ray actors: many GPUs and many machines behind the server's one worker seam.

The only module that imports Ray; the server imports it only for ``nodeflow serve --ray`` (or
``--workers``/``--devices``). The server stays the single owner of the SQLite queue and history
and of the websocket hub; :class:`RayPool` is what :class:`~nodeflow.server.worker.Worker` is for
one thread: it claims queued runs in order and hands each to an actor
(:class:`~nodeflow.server.remote_worker.RemoteWorker`), one run per actor at a time.

Dispatch. A run goes to a free actor: the one that already holds most of the run's cache keys
(content addresses computed here, valid on every worker: the models it loads and the prefix of
the graph it has cached), then the one that has run the fewest runs. A dispatch thread claims a
run only when an actor is free, so queue order, front-of-queue and cancelling a queued run are the
store's, as with one worker. Each run is driven by a thread that reads the actor's stream (events,
output files, result) in order, writes the files into the server's output folder, publishes the
events and records the result before publishing the final event.

Faults. An actor that dies mid-run (killed, node lost, out of memory) ends its stream with a Ray
error. The run is given once more to another actor if it had written no output yet; otherwise,
or the second time, it is marked failed with the reason. A run is claimed once and finished once,
so none is lost or run twice. The dead actor is replaced; the new one takes runs once Ray has
placed it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError

from nodeflow import events as ev
from nodeflow.executor import Executor
from nodeflow.plugins import Catalog
from nodeflow.server import runlog
from nodeflow.server.remote_worker import RemoteWorker
from nodeflow.server.store import INTERRUPTED, RunRecord, RunStore
from nodeflow.server.transfer import Placer, input_files
from nodeflow.server.worker import STOP_GRACE_SECONDS, STOPPED_MESSAGE, _ran_for, _waited
from nodeflow.workflow import Workflow

log = logging.getLogger(__name__)

#: Cache keys remembered per actor for affinity (its own cache may have evicted some).
REMEMBERED_KEYS = 4096

#: Seconds before an actor that failed to start is started again.
RESPAWN_DELAY = 2.0

DIED_MESSAGE = "the worker running it died ({reason}) after it had written output"


@dataclass
class PoolConfig:
    """How many actors, where, and what each holds."""

    catalog_factory: Callable[[], Catalog]
    """Builds the plugin catalog inside each actor (a module-level callable: it is pickled)."""
    workers: int = 1
    address: str | None = None
    """``auto``, a cluster address, or None: use the Ray this process already has, else start
    a local one."""
    devices: list[str] | None = None
    """One actor per device (``cuda:0,cuda:1``): each asks Ray for one GPU."""
    device: str = "auto"
    dtype: str = "auto"
    vram_budget: int | None = None
    previews: bool = True
    num_cpus: float = 1
    """CPUs an actor asks for on CPU-only clusters."""
    local_cpus: int | None = None
    """Logical CPUs of a local Ray this pool starts (default: the cores, or enough for every
    worker)."""
    env_vars: dict[str, str] = field(default_factory=dict)
    """Extra environment variables of the actors (``OMP_NUM_THREADS``, ...); this process's
    PYTHONPATH is passed on in any case."""


@dataclass
class _Slot:
    index: int
    actor: Any = None
    pending: Any = None  # the ready() call of an actor Ray has not placed yet
    info: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    runs: int = 0
    keys: OrderedDict[str, None] = field(default_factory=OrderedDict)
    names: dict[str, str] = field(default_factory=dict)
    respawn_at: float = 0.0

    @property
    def free(self) -> bool:
        return self.actor is not None and self.pending is None and self.run_id is None

    @property
    def state(self) -> str:
        if self.actor is None or self.pending is not None:
            return "starting"
        return "idle" if self.run_id is None else "busy"


class RayPool:
    """Ray actors behind the interface of :class:`~nodeflow.server.worker.Worker`."""

    def __init__(
        self,
        executor: Executor,
        store: RunStore,
        publish: Callable[[ev.Event], None] = lambda event: None,
        on_change: Callable[[dict[str, Any]], None] = lambda message: None,
        *,
        config: PoolConfig,
    ) -> None:
        self.executor = executor
        self.store = store
        self.publish = publish
        self.on_change = on_change
        self.config = config
        self.placer = Placer(executor.env.output_dir)
        self._started_ray = False
        if not ray.is_initialized():
            self._init_ray()
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        devices = config.devices or [config.device] * config.workers
        wants_gpu = [gpus and not d.startswith(("cpu", "mps")) for d in devices]
        self._options = [
            {"num_gpus": 1, "num_cpus": 0} if gpu else {"num_cpus": config.num_cpus}
            for gpu in wants_gpu
        ]
        # Ray gives a GPU actor its GPU as cuda:0 (CUDA_VISIBLE_DEVICES)
        self._devices = ["cuda" if gpu else d for gpu, d in zip(wants_gpu, devices, strict=True)]
        self._actor_class = ray.remote(RemoteWorker)
        self._slots = [_Slot(i) for i in range(len(devices))]
        self._retry: deque[RunRecord] = deque()
        self._retried: set[str] = set()
        self.assigned: dict[str, int] = {}
        """Run id -> the slot index it went to (last attempt); for tests and the queue message."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._thread = threading.Thread(target=self._loop, name="nodeflow-dispatch", daemon=True)

    def _init_ray(self) -> None:
        config = self.config
        path = os.environ.get("PYTHONPATH")  # the actors import what this process imports
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": True,
            "runtime_env": {"env_vars": {"PYTHONPATH": path}} if path else None,
        }
        if config.address is None:
            # enough logical CPUs for every CPU actor, even on a machine with fewer cores
            wanted = int(config.num_cpus * max(config.workers, len(config.devices or ())) + 0.999)
            kwargs["num_cpus"] = config.local_cpus or max(os.cpu_count() or 1, wanted)
            kwargs["_node_ip_address"] = "127.0.0.1"
        # "local": a Ray of our own, even when another runs on this machine
        ray.init(address=config.address or "local", **kwargs)
        self._started_ray = True

    # --- the Worker interface ----------------------------------------------------------------

    def start(self) -> None:
        for slot in self._slots:
            self._spawn(slot)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def interrupt(self, run_id: str | None = None) -> bool:
        """Interrupt ``run_id`` on the actor running it, or every running run; False if none."""
        with self._lock:
            slots = [s for s in self._slots if s.run_id and run_id in (None, s.run_id)]
            for slot in slots:
                slot.actor.interrupt.remote(slot.run_id)
        return bool(slots)

    def stop(self, timeout: float = STOP_GRACE_SECONDS) -> bool:
        self._stop.set()
        self._wake.set()
        self.interrupt()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        done = not any(t.is_alive() for t in self._threads.values())
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        actors = [slot.actor for slot in self._slots if slot.actor is not None]
        with contextlib.suppress(Exception):  # each removes its temporary folders
            ray.get([actor.close.remote() for actor in actors], timeout=2.0)
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        if self._started_ray:
            ray.shutdown()
        return done

    def running(self) -> list[str]:
        with self._lock:
            return [s.run_id for s in self._slots if s.run_id is not None]

    def queue_message(self) -> dict[str, Any]:
        with self._lock:
            running = [s.run_id for s in self._slots if s.run_id is not None]
            workers = [
                {"index": s.index, "state": s.state, "run_id": s.run_id, "host": s.info.get("host")}
                for s in self._slots
            ]
        return {
            "type": "queue",
            "running": running[0] if running else None,
            "running_all": running,
            "pending": self.store.queued_ids(),
            "workers": workers,
        }

    def actor_of(self, run_id: str) -> Any:
        """The actor handle running ``run_id`` (None if none): what a fault test kills."""
        with self._lock:
            return next((s.actor for s in self._slots if s.run_id == run_id), None)

    # --- dispatch ----------------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        options = {**self._options[slot.index], "max_concurrency": 4, "max_restarts": 0}
        if self.config.env_vars:
            env = {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), **self.config.env_vars}
            options["runtime_env"] = {"env_vars": {k: v for k, v in env.items() if v}}
        config = self.config
        slot.actor = self._actor_class.options(**options).remote(
            config.catalog_factory,
            str(self.executor.env.models_dir),
            self._devices[slot.index],
            config.dtype,
            config.vram_budget,
            config.previews,
            self.executor.env.allow_pickle,
        )
        slot.pending = slot.actor.ready.remote()
        slot.info, slot.keys, slot.names, slot.run_id = {}, OrderedDict(), {}, None

    def _check_pending(self) -> None:
        for slot in self._slots:
            if slot.pending is None:
                continue
            done, _ = ray.wait([slot.pending], timeout=0)
            if not done:
                continue
            try:
                slot.info = ray.get(slot.pending)
                slot.pending = None
                log.info("worker %d ready on %s", slot.index, slot.info.get("host"))
            except RayError as exc:
                log.warning("worker %d failed to start (%s); trying again", slot.index, exc)
                slot.actor = slot.pending = None
                slot.respawn_at = time.monotonic() + RESPAWN_DELAY
        for slot in self._slots:
            if slot.actor is None and time.monotonic() >= slot.respawn_at:
                self._spawn(slot)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            with self._lock:
                self._check_pending()
                free = [s for s in self._slots if s.free]
            record = None
            if free:
                record = self._retry.popleft() if self._retry else self.store.claim_next()
            if record is None:
                starting = any(s.pending or s.actor is None for s in self._slots)
                self._wake.wait(0.05 if starting else 1.0)
                continue
            # with one free actor there is no choice to make: its run thread computes the keys
            # (to remember them) while the actor works, and this loop goes on at once
            keys = self._keys(record) if len(free) > 1 else None
            with self._lock:
                wanted = set(keys.values()) if keys else set()
                slot = max(free, key=lambda s: (len(wanted & s.keys.keys()), -s.runs))
                slot.run_id = record.run_id
                self.assigned[record.run_id] = slot.index
            thread = threading.Thread(
                target=self._drive, args=(slot, record, keys), name=f"nodeflow-run-{slot.index}"
            )
            self._threads[record.run_id] = thread
            thread.start()

    def _keys(self, record: RunRecord) -> dict[str, str]:
        try:
            workflow = Workflow.from_json(record.workflow)
            return self.executor.cache_keys(workflow, record.targets, record.run_id)
        except Exception as exc:  # an invalid workflow: the actor reports why
            log.debug("no cache keys for run %s: %r", record.run_id, exc)
            return {}

    # --- one run on one actor ----------------------------------------------------------------

    def _drive(self, slot: _Slot, record: RunRecord, keys: dict[str, str] | None) -> None:
        run_id = record.run_id
        first = run_id not in self._retried
        wrote, planned, node = False, 0, None
        final: ev.Event | None = None
        result: dict[str, Any] | None = None
        died: BaseException | None = None
        try:
            inputs = input_files(record.workflow, self.executor.env.input_dir)
            stream = slot.actor.run.remote(run_id, record.workflow, record.targets, inputs)
            self.on_change(self.queue_message())
            if keys is None:
                keys = self._keys(record)
            for kind, payload in (item for ref in stream for item in ray.get(ref)):
                if kind == "files":
                    self.placer.place(payload, slot.names)
                    wrote = True
                elif kind == "result":
                    result = payload
                else:
                    event = payload
                    if isinstance(event, ev.RunStarted):
                        planned = len(event.nodes)
                        if first:
                            runlog.started(run_id, planned, _waited(record))
                    elif isinstance(event, ev.NodeStarted):
                        node = event.node
                    elif isinstance(event, ev.NodeFinished) and event.report:
                        wrote = True
                        report = self._report(event.report, slot)
                        event = replace(event, report=report)
                    if isinstance(event, ev.RunFinished | ev.RunFailed | ev.RunCancelled):
                        final = event
                    else:
                        self.publish(event)
        except RayTaskError as exc:  # the actor is fine; the run's code raised in it
            log.error("run %s raised in worker %d: %s", run_id, slot.index, exc)
            result = {"status": "failed", "error": {"message": f"worker error: {exc.cause!r}"}}
        except RayError as exc:  # the actor or its node died, or cannot be reached
            died = exc
        except Exception as exc:  # the pool must outlive any run
            log.exception("run %s crashed its dispatch thread", run_id)
            result = {"status": "failed", "error": {"message": f"internal error: {exc!r}"}}
        try:
            if died is not None:
                final = self._died(slot, record, died, wrote, node)
            else:
                self._record(slot, record, result, final, planned, keys or {})
        finally:
            self._threads.pop(run_id, None)
            if final is not None:
                self.publish(final)
            self._wake.set()
            self.on_change(self.queue_message())

    def _report(self, report: Any, slot: _Slot) -> Any:
        return self.placer.report(report, slot.names, slot.info.get("output_dir", ""))

    def _record(
        self,
        slot: _Slot,
        record: RunRecord,
        result: dict[str, Any] | None,
        final: ev.Event | None,
        planned: int,
        keys: dict[str, str],
    ) -> None:
        result = result or {"status": "failed", "error": {"message": "the worker sent no result"}}
        status, error = result["status"], result.get("error")
        if status == "cancelled" and self._stop.is_set():
            status = INTERRUPTED
            stopped_in = final.node if isinstance(final, ev.RunCancelled) else None
            error = {"message": STOPPED_MESSAGE, "node": stopped_in}
        outputs = {n: self._report(r, slot) for n, r in (result.get("outputs") or {}).items()}
        # free before the store says the run ended: a client that resubmits on hearing of it
        # finds this worker free and holding the run's keys
        with self._lock:
            slot.runs += 1
            for key in keys.values():
                slot.keys[key] = None
                slot.keys.move_to_end(key)
            while len(slot.keys) > REMEMBERED_KEYS:
                slot.keys.popitem(last=False)
            slot.run_id = None
        self._wake.set()
        self.store.finish(record.run_id, status, outputs=outputs, error=error)
        runlog.ended(
            record.run_id,
            status,
            _ran_for(record),
            nodes=planned,
            ran=len(result.get("executed", [])),
            cached=len(result.get("cached", [])),
            error=error,
        )

    def _died(
        self, slot: _Slot, record: RunRecord, exc: BaseException, wrote: bool, node: str | None
    ) -> ev.Event | None:
        """The actor died mid-run: retry the run once elsewhere, or fail it; replace the actor."""
        reason = type(exc).__name__
        log.warning("worker %d died running run %s: %s", slot.index, record.run_id, reason)
        with self._lock:
            with contextlib.suppress(Exception):  # unreachable is not dead: make sure
                ray.kill(slot.actor)
            if self._stop.is_set():
                slot.actor, slot.run_id = None, None  # stopping: no replacement
            else:
                self._spawn(slot)
        if not wrote and record.run_id not in self._retried and not self._stop.is_set():
            self._retried.add(record.run_id)
            self._retry.append(record)
            return None
        error = {"message": DIED_MESSAGE.format(reason=reason), "node": node}
        if not wrote:
            error["message"] = f"the worker running it died ({reason}), twice"
        if self._stop.is_set():
            error["message"] = STOPPED_MESSAGE
        status = INTERRUPTED if self._stop.is_set() else "failed"
        self.store.finish(record.run_id, status, error=error)
        runlog.ended(record.run_id, status, _ran_for(record), error=error)
        return ev.RunFailed(record.run_id, node=node or "", message=error["message"])
