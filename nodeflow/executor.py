"""Running a plan: cache lookups, node calls, events, interrupt and errors.

The executor keeps its output cache and runtime (device, loaded models) between runs, so a second
run of an edited workflow re-executes only the nodes whose cache keys changed. A node's exception
fails the run with a ``node.error`` naming the node; it never poisons the executor or its cache.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from nodeflow import events as ev
from nodeflow.cache import OutputCache, cache_key
from nodeflow.context import Context, Environment, Interrupted
from nodeflow.graph import plan as make_plan
from nodeflow.node import NodeSpec
from nodeflow.plugins import Catalog
from nodeflow.provenance import stamp
from nodeflow.runtime import Runtime
from nodeflow.validate import BoundNode, BoundWorkflow, bind
from nodeflow.workflow import Workflow

log = logging.getLogger(__name__)

REPORT = "__report__"
"""The cache slot holding an output node's report, so a cached rerun still reports its files."""

Subscriber = Callable[[ev.Event], None]


@dataclass
class RunResult:
    run_id: str
    status: Literal["finished", "failed", "cancelled"]
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each output node's report (e.g. the files SaveImage wrote)."""
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each target node's output values, by output name."""
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    error: ev.NodeError | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "finished"


class NodeInputError(ValueError):
    """A value arriving over a link into a widget failed that widget's validation."""


class Executor:
    def __init__(
        self,
        catalog: Catalog,
        *,
        env: Environment | None = None,
        runtime: Runtime | None = None,
        cache_bytes: int = 2 * 1024**3,
        previews: bool = True,
    ) -> None:
        self.catalog = catalog
        self.env = env or Environment.from_dirs()
        self.runtime = runtime or Runtime()
        self.cache = OutputCache(cache_bytes)
        self.previews = previews
        """Whether nodes should make ``node.preview`` pictures (a UI shows them; a CLI does not)."""
        self._subscribers: list[Subscriber] = []
        self._interrupt = threading.Event()
        self._lock = threading.Lock()
        for plugin, listener in catalog.listeners:  # plugins' nodeflow_event_listeners
            self.subscribe(_PluginListener(plugin, listener))

    # --- observers and control -----------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(event)`` for every event; returns a function that unsubscribes."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def interrupt(self) -> None:
        """Ask the running run to stop at its next interrupt point (between nodes, or wherever
        a node reports progress). A run that starts afterwards is not affected."""
        self._interrupt.set()

    def _emit(self, event: ev.Event) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:  # a broken observer must not break the run
                log.exception("event subscriber %r failed on %s", subscriber, event.type)

    # --- running -------------------------------------------------------------------------

    def run(
        self,
        workflow: Workflow | BoundWorkflow,
        targets: Iterable[str] | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        """Validate (raising ``WorkflowInvalid``; the files widgets pick are checked against this
        executor's folders), plan and run; never raises for node errors."""
        target_list = list(targets) if targets is not None else None
        bound = (
            workflow
            if isinstance(workflow, BoundWorkflow)
            else bind(workflow, self.catalog, target_list, self.env)
        )
        with self._lock:
            self._interrupt.clear()
            return _Run(self, bound, target_list, run_id or uuid.uuid4().hex).execute()

    def cache_keys(
        self,
        workflow: Workflow | BoundWorkflow,
        targets: Iterable[str] | None = None,
        run_id: str = "",
    ) -> dict[str, str]:
        """Each planned node's cache key, as ``run`` would compute it, running nothing.

        Keys are content addresses, valid in any process with the same plugins and files, so a
        dispatcher can tell which worker already holds a run's cached prefix. Raises
        ``WorkflowInvalid`` like ``run``; empty when a node's fingerprint fails (the run will
        report that).
        """
        target_list = list(targets) if targets is not None else None
        bound = (
            workflow
            if isinstance(workflow, BoundWorkflow)
            else bind(workflow, self.catalog, target_list, self.env)
        )
        try:
            return _Run(self, bound, target_list, run_id or uuid.uuid4().hex)._keys()
        except _NodeFailed:
            return {}


class _Run:
    """The state of one run; lives only as long as ``Executor.run``."""

    def __init__(
        self, executor: Executor, bound: BoundWorkflow, targets: list[str] | None, run_id: str
    ) -> None:
        self.executor = executor
        self.bound = bound
        self.plan = make_plan(bound, targets)
        self.run_id = run_id
        self.result = RunResult(run_id, "finished")
        self.values: dict[str, dict[str, Any]] = {}
        self.workflow_json: dict[str, Any] | None = None

    def execute(self) -> RunResult:
        started = time.perf_counter()
        emit = self.executor._emit
        emit(ev.RunStarted(self.run_id, nodes=list(self.plan.order)))
        current: str | None = None
        try:
            keys = self._keys()
            to_run = self._nodes_to_run(keys)
            for node_id in self.plan.order:
                if node_id not in to_run:
                    self.result.cached.append(node_id)
                    emit(ev.NodeCached(self.run_id, node_id, self.bound.nodes[node_id].spec.type))
            consumers = self._consumers(to_run)
            for node_id in self.plan.order:
                if node_id not in to_run:
                    continue
                if self.executor._interrupt.is_set():
                    raise Interrupted(node_id)
                current = node_id
                outputs = self._call(self.bound.nodes[node_id])
                self.values[node_id] = outputs
                self.executor.cache.put(keys[node_id], outputs)
                self.result.executed.append(node_id)
                self._release(node_id, consumers)
                current = None
        except Interrupted:
            self.result.status = "cancelled"
            emit(ev.RunCancelled(self.run_id, node=current))
        except _NodeFailed as failure:
            self.result.status = "failed"
            self.result.error = failure.event
            emit(failure.event)
            emit(ev.RunFailed(self.run_id, node=failure.event.node, message=failure.event.message))
        self.result.seconds = time.perf_counter() - started
        if self.result.status == "finished":
            self._collect()
            emit(
                ev.RunFinished(
                    self.run_id,
                    seconds=self.result.seconds,
                    executed=list(self.result.executed),
                    cached=list(self.result.cached),
                )
            )
        return self.result

    def _keys(self) -> dict[str, str]:
        keys: dict[str, str] = {}
        for node_id in self.plan.order:
            node = self.bound.nodes[node_id]
            spec = node.spec
            fingerprint: Any = None
            if spec.cache == "never":
                fingerprint = self.run_id
            elif spec.fingerprint is not None:
                try:
                    fingerprint = spec.fingerprint(node.values, self.executor.env)
                except Exception as exc:
                    raise _NodeFailed(self._error_event(node, exc)) from exc
            linked = {name: (keys[link.node], link.output) for name, link in node.links.items()}
            keys[node_id] = cache_key(spec.type, spec.version, node.values, linked, fingerprint)
        return keys

    def _nodes_to_run(self, keys: dict[str, str]) -> set[str]:
        """Walk back from the targets; a cache hit ends the walk along its branch."""
        cache = self.executor.cache
        needed = set(self.plan.targets)
        to_run: set[str] = set()
        for node_id in reversed(self.plan.order):
            if node_id not in needed:
                continue
            hit = cache.get(keys[node_id])
            if hit is not None:
                self.values[node_id] = hit  # pinned: later eviction cannot lose it mid-run
                continue
            to_run.add(node_id)
            needed.update(link.node for link in self.bound.nodes[node_id].links.values())
        return to_run

    def _consumers(self, to_run: set[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node_id in to_run:
            for link in self.bound.nodes[node_id].links.values():
                counts[link.node] = counts.get(link.node, 0) + 1
        return counts

    def _release(self, node_id: str, consumers: dict[str, int]) -> None:
        """Drop intermediates no remaining node needs (the cache may still hold them)."""
        keep = self.plan.targets
        for link in self.bound.nodes[node_id].links.values():
            consumers[link.node] -= 1
            if consumers[link.node] == 0 and link.node not in keep:
                self.values.pop(link.node, None)

    def _call(self, node: BoundNode) -> dict[str, Any]:
        spec = node.spec
        emit = self.executor._emit
        emit(ev.NodeStarted(self.run_id, node.id, spec.type))
        started = time.perf_counter()
        try:
            kwargs = dict(node.values)
            for name, link in node.links.items():
                value = self.values[link.node][link.output]
                input_spec = spec.inputs[name]
                if input_spec.kind == "widget":
                    try:
                        value = input_spec.coerce(value)
                    except ValidationError as exc:
                        raise NodeInputError(f"input {name!r}: {exc}") from None
                kwargs[name] = value
            if spec.wants_context:
                kwargs["ctx"] = self._context(node)
            returned = spec.function(**kwargs)
            outputs = self._outputs(spec, returned)
        except Interrupted:
            raise
        except Exception as exc:
            raise _NodeFailed(self._error_event(node, exc)) from exc
        emit(
            ev.NodeFinished(
                self.run_id,
                node.id,
                spec.type,
                seconds=time.perf_counter() - started,
                report=outputs.get(REPORT),
            )
        )
        return outputs

    def _context(self, node: BoundNode) -> Context:
        emit = self.executor._emit
        run_id, node_id = self.run_id, node.id
        if self.workflow_json is None:
            # what SaveImage embeds: it names the plugins (and versions) its node types need
            stamped = stamp(self.bound.workflow, self.executor.catalog)
            self.workflow_json = stamped.to_json()
        return Context(
            node_id=node_id,
            node_type=node.spec.type,
            run_id=run_id,
            env=self.executor.env,
            runtime=self.executor.runtime,
            workflow=self.workflow_json,
            _emit_progress=lambda v, m, x=None: emit(ev.NodeProgress(run_id, node_id, v, m, x)),
            _emit_preview=lambda image, step: emit(ev.NodePreview(run_id, node_id, step, image)),
            _interrupted=self.executor._interrupt.is_set,
            wants_previews=self.executor.previews,
            loaders=self.executor.catalog.loaders,
        )

    @staticmethod
    def _outputs(spec: NodeSpec, returned: Any) -> dict[str, Any]:
        if spec.output_node and not spec.outputs:
            if returned is not None and not isinstance(returned, dict):
                raise TypeError(f"output node {spec.type} must return a dict report or None")
            return {REPORT: returned or {}}
        names = spec.output_names
        if spec.returns_tuple:
            if not isinstance(returned, tuple) or len(returned) != len(names):
                raise TypeError(f"{spec.type} must return a {len(names)}-tuple {names}")
            return dict(zip(names, returned, strict=True))
        return {names[0]: returned} if names else {}

    def _error_event(self, node: BoundNode, exc: BaseException) -> ev.NodeError:
        return ev.NodeError(
            self.run_id,
            node.id,
            node.spec.type,
            exception_type=type(exc).__name__,
            message=str(exc) or type(exc).__name__,
            traceback="".join(traceback.format_exception(exc)),
        )

    def _collect(self) -> None:
        for node_id in self.plan.order:
            outputs = self.values.get(node_id)
            if outputs is None:
                continue
            if REPORT in outputs:
                self.result.outputs[node_id] = outputs[REPORT]
            if node_id in self.plan.targets:
                self.result.values[node_id] = {k: v for k, v in outputs.items() if k != REPORT}


class _PluginListener:
    """A plugin's event listener: its exceptions are logged naming the plugin, never raised."""

    def __init__(self, plugin: str, listener: Subscriber) -> None:
        self.plugin = plugin
        self.listener = listener
        self.failures = 0

    def __call__(self, event: ev.Event) -> None:
        try:
            self.listener(event)
        except Exception:
            self.failures += 1
            # the traceback once; after that a line, so a listener broken on every progress
            # event cannot flood the log
            log.log(
                logging.ERROR if self.failures == 1 else logging.DEBUG,
                "event listener %r of plugin %r failed on %s (%d failure(s) so far)",
                self.listener,
                self.plugin,
                event.type,
                self.failures,
                exc_info=self.failures == 1,
            )

    def __repr__(self) -> str:
        return f"<listener {self.listener!r} of plugin {self.plugin!r}>"


class _NodeFailed(Exception):
    def __init__(self, event: ev.NodeError) -> None:
        super().__init__(event.message)
        self.event = event
