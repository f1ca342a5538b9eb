"""The plugin manager: entry points in, a catalog of node and socket types out.

Loading is failure-isolated at every step: a plugin that raises on import, or in one of its
hooks, or that declares a node type another plugin already owns, is recorded with the error and
the rest load. The built-in ``nodes`` pack takes exactly this path (datasette and pytest register
their default plugins the same way), so anything it can do a third-party package can do.
"""

from __future__ import annotations

import importlib.metadata
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pluggy

from nodeflow import hookspecs
from nodeflow.node import NodeSpec, spec_of
from nodeflow.types import ANY_TYPE, PRIMITIVES, SocketType, TypeRegistry, socket_of

ENTRY_POINT_GROUP = "nodeflow"
ENGINE = "nodeflow"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PluginFailure:
    """A plugin, or part of one, that could not be loaded."""

    plugin: str
    stage: str
    """Where it failed: ``import``, a hook name, or ``register``."""
    error: str
    traceback: str = ""
    distribution: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class DuplicateNodeType(ValueError):
    """Two plugins declare the same node type name."""


@dataclass
class Catalog:
    """Every node type and socket type available to workflows, and where each came from."""

    nodes: dict[str, NodeSpec] = field(default_factory=dict)
    node_plugins: dict[str, str] = field(default_factory=dict)
    types: TypeRegistry = field(default_factory=TypeRegistry)
    plugins: list[PluginInfo] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    manager: pluggy.PluginManager | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for socket in [*PRIMITIVES.values(), ANY_TYPE]:
            self.types.add(socket, ENGINE)

    def add_node(self, spec: NodeSpec, plugin: str) -> None:
        owner = self.node_plugins.get(spec.type)
        if owner is not None:
            raise DuplicateNodeType(
                f"node type {spec.type!r} from plugin {plugin!r} is already provided by "
                f"plugin {owner!r}; the second one was refused"
            )
        self.nodes[spec.type] = spec
        self.node_plugins[spec.type] = plugin

    def spec(self, node_type: str) -> NodeSpec | None:
        return self.nodes.get(node_type)

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": {
                name: {**spec.to_json(), "plugin": self.node_plugins[name]}
                for name, spec in sorted(self.nodes.items())
            },
            "types": {
                name: {**socket.to_json(), "plugin": self.types.owners[name]}
                for name, socket in sorted(self.types.types.items())
            },
            "plugins": [p.to_json() for p in self.plugins],
            "failures": [f.to_json() for f in self.failures],
        }


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def load_catalog(
    *,
    entry_points: bool = True,
    plugins: Iterable[tuple[str, Any]] = (),
    disabled: Iterable[str] = (),
) -> Catalog:
    """Load plugins (entry points and/or ``(name, module)`` pairs) into a catalog."""
    pm = new_plugin_manager()
    catalog = Catalog(manager=pm)
    skip = set(disabled)
    if entry_points:
        _register_entry_points(pm, catalog, skip)
    for name, module in plugins:
        if name in skip:
            continue
        try:
            pm.register(module, name=name)
        except Exception as exc:
            catalog.failures.append(_failure(name, "register", exc))
            continue
        catalog.plugins.append(PluginInfo(name, getattr(module, "__name__", repr(module))))

    for plugin, result in call_each(pm, catalog, "nodeflow_types"):
        for item in result or ():
            socket = item if isinstance(item, SocketType) else socket_of(item)
            try:
                if socket is None:
                    raise TypeError(f"{item!r} is neither a SocketType nor a @socket_type class")
                catalog.types.add(socket, plugin)
            except Exception as exc:
                catalog.failures.append(_failure(plugin, "nodeflow_types", exc))

    for plugin, result in call_each(pm, catalog, "nodeflow_nodes"):
        for item in result or ():
            try:
                spec = spec_of(item)
                _check_socket_types(spec, catalog.types)
                catalog.add_node(spec, plugin)
            except Exception as exc:
                catalog.failures.append(_failure(plugin, "nodeflow_nodes", exc))
    return catalog


def call_each(
    pm: pluggy.PluginManager, catalog: Catalog, hook_name: str, **kwargs: Any
) -> Iterator[tuple[str, Any]]:
    """Call one hook plugin by plugin, recording (not raising) each plugin's failure."""
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():  # registration order
        try:
            result = impl.function(*[kwargs[arg] for arg in impl.argnames])
        except Exception as exc:
            catalog.failures.append(_failure(impl.plugin_name, hook_name, exc))
            continue
        yield impl.plugin_name, result


def _register_entry_points(pm: pluggy.PluginManager, catalog: Catalog, skip: set[str]) -> None:
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    for ep in sorted(found, key=lambda e: (e.dist.name if e.dist else "", e.name)):
        if ep.name in skip:
            continue
        dist = ep.dist.name if ep.dist else None
        version = ep.dist.version if ep.dist else None
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:
            catalog.failures.append(_failure(ep.name, "import", exc, dist))
            continue
        catalog.plugins.append(PluginInfo(ep.name, ep.value, dist, version, builtin=dist == ENGINE))


def _check_socket_types(spec: NodeSpec, types: TypeRegistry) -> None:
    unknown = sorted(
        (
            {i.type for i in spec.inputs.values() if i.kind == "socket"}
            | {o.type for o in spec.outputs}
        )
        - set(types.types)
    )
    if unknown:
        raise TypeError(f"node type {spec.type!r} uses unregistered socket types {unknown}")


def _failure(
    plugin: str, stage: str, exc: BaseException, distribution: str | None = None
) -> PluginFailure:
    return PluginFailure(
        plugin=plugin,
        stage=stage,
        error=f"{type(exc).__name__}: {exc}",
        traceback="".join(traceback.format_exception(exc)),
        distribution=distribution,
    )
