"""The plugin manager: entry points in, a catalog of node and socket types out.

Loading is failure-isolated at every step: a plugin that raises on import, targets another plugin
API version, raises in one of its hooks, or declares a node type another plugin already owns, is
recorded with the error and the rest load. The built-in ``nodes`` pack takes exactly this path
(datasette and pytest register their default plugins the same way), so anything it can do a
third-party package can do.

Namespacing: a third-party plugin's node types are registered as ``<plugin>.<Name>``, where the
plugin name is its entry point name; the code keeps writing ``@node("Resize")``. The prefix is added
here, not by authors, so two packages can never fight over a plain name, and a workflow's node type
says which plugin to install. The built-in pack (distribution ``nodeflow``) keeps plain names.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pluggy

from nodeflow import PLUGIN_API_VERSION, hookspecs
from nodeflow.extensions import WebExtension
from nodeflow.loaders import LoaderRegistry
from nodeflow.node import NodeSpec, spec_of
from nodeflow.types import ANY_TYPE, PRIMITIVES, SocketType, TypeRegistry, socket_of

ENTRY_POINT_GROUP = "nodeflow"
ENGINE = "nodeflow"
"""The engine's own distribution: its entry points are the built-in pack (plain node names)."""
API_ATTRIBUTE = "NODEFLOW_API"
"""The module attribute through which a plugin states the plugin API version it targets."""
PLUGIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class PluginInfo:
    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    api_version: int | None = None
    """The plugin API version the plugin declares (``NODEFLOW_API``); None if it declares none."""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def origin(self) -> str:
        """``distribution version`` for messages, or the module for unpackaged plugins."""
        if self.distribution:
            return f"{self.distribution} {self.version}" if self.version else self.distribution
        return self.module


@dataclass(frozen=True)
class PluginFailure:
    """A plugin, or part of one, that could not be loaded."""

    plugin: str
    stage: str
    """Where it failed: ``import``, ``api_version``, ``register``, or a hook name."""
    error: str
    traceback: str = ""
    distribution: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class DuplicateNodeType(ValueError):
    """Two plugins declare the same node type name."""


class PluginApiMismatch(RuntimeError):
    """A plugin targets a plugin API version this nodeflow does not provide."""


@dataclass
class Catalog:
    """Every node type and socket type available to workflows, and where each came from."""

    nodes: dict[str, NodeSpec] = field(default_factory=dict)
    node_plugins: dict[str, str] = field(default_factory=dict)
    types: TypeRegistry = field(default_factory=TypeRegistry)
    plugins: list[PluginInfo] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    disabled: list[PluginInfo] = field(default_factory=list)
    """Installed plugins not loaded because they were disabled (or by ``--no-plugins``)."""
    loaders: LoaderRegistry = field(default_factory=LoaderRegistry)
    listeners: list[tuple[str, Callable[[Any], None]]] = field(default_factory=list)
    """``(plugin, listener)`` for every event listener; executors subscribe them all."""
    web_extensions: list[WebExtension] = field(default_factory=list)
    manager: pluggy.PluginManager | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for socket in [*PRIMITIVES.values(), ANY_TYPE]:
            self.types.add(socket, ENGINE)

    def plugin(self, name: str) -> PluginInfo | None:
        """The loaded plugin of this name, or None."""
        return next((p for p in self.plugins if p.name == name), None)

    def add_node(self, spec: NodeSpec, plugin: str) -> None:
        owner = self.node_plugins.get(spec.type)
        if owner is not None:
            raise DuplicateNodeType(
                f"node type {spec.type!r} from plugin {self._who(plugin)} is already provided by "
                f"plugin {self._who(owner)}; the second one was refused"
            )
        self.nodes[spec.type] = spec
        self.node_plugins[spec.type] = plugin

    def spec(self, node_type: str) -> NodeSpec | None:
        return self.nodes.get(node_type)

    def _who(self, plugin: str) -> str:
        info = self.plugin(plugin)
        dist = f" (distribution {info.distribution!r})" if info and info.distribution else ""
        return f"{plugin!r}{dist}"

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
            "disabled": [p.to_json() for p in self.disabled],
            "loaders": self.loaders.to_json(),
            "extensions": [e.to_json() for e in self.web_extensions],
            "plugin_api_version": PLUGIN_API_VERSION,
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
    builtin_only: bool = False,
) -> Catalog:
    """Load plugins into a catalog.

    ``plugins`` are ``(name, module)`` pairs registered directly and treated as built-in (plain
    node names): what tests and applications embedding nodeflow use. ``builtin_only`` is safe
    mode (``--no-plugins``): only the engine distribution's own entry points load.
    """
    pm = new_plugin_manager()
    catalog = Catalog(manager=pm)
    skip = set(disabled)
    if entry_points:
        _register_entry_points(pm, catalog, skip, builtin_only)
    for name, module in plugins:
        if name in skip:
            continue
        info = PluginInfo(name, getattr(module, "__name__", repr(module)), builtin=True)
        _register(pm, catalog, module, info)

    for plugin, result in call_each(pm, catalog, "nodeflow_types"):
        for item in result or ():
            socket = item if isinstance(item, SocketType) else socket_of(item)
            try:
                if socket is None:
                    raise TypeError(f"{item!r} is neither a SocketType nor a @socket_type class")
                catalog.types.add(socket, plugin)
            except Exception as exc:
                catalog.failures.append(failure(catalog, plugin, "nodeflow_types", exc))

    builtin = {p.name for p in catalog.plugins if p.builtin}
    for plugin, result in call_each(pm, catalog, "nodeflow_nodes"):
        for item in result or ():
            try:
                spec = spec_of(item)
                if plugin not in builtin:
                    spec = namespaced(spec, plugin)
                _check_socket_types(spec, catalog.types)
                catalog.add_node(spec, plugin)
            except Exception as exc:
                catalog.failures.append(failure(catalog, plugin, "nodeflow_nodes", exc))

    for plugin, result in call_each(pm, catalog, "nodeflow_loaders"):
        try:
            catalog.loaders.add_all(result or {}, plugin)
        except Exception as exc:
            catalog.failures.append(failure(catalog, plugin, "nodeflow_loaders", exc))

    for plugin, result in call_each(pm, catalog, "nodeflow_event_listeners"):
        for listener in result or ():
            if callable(listener):
                catalog.listeners.append((plugin, listener))
            else:
                error = TypeError(f"event listener {listener!r} is not callable")
                catalog.failures.append(failure(catalog, plugin, "nodeflow_event_listeners", error))

    for plugin, result in call_each(pm, catalog, "nodeflow_web_extensions"):
        if result is None:
            continue
        try:
            catalog.web_extensions.append(WebExtension.coerce(result, plugin))
        except Exception as exc:
            catalog.failures.append(failure(catalog, plugin, "nodeflow_web_extensions", exc))
    return catalog


def namespaced(spec: NodeSpec, plugin: str) -> NodeSpec:
    """The spec registered as ``<plugin>.<Name>``; its display name stays the plain one."""
    prefix, dot, name = spec.type.rpartition(".")
    if dot and prefix != plugin:
        raise ValueError(
            f"node type {spec.type!r} from plugin {plugin!r} names another namespace; declare "
            f"it as {name!r} and it is registered as '{plugin}.{name}'"
        )
    return dataclasses.replace(
        spec, type=f"{plugin}.{name}", display_name=spec.display_name or name
    )


def call_each(
    pm: pluggy.PluginManager,
    catalog: Catalog,
    hook_name: str,
    per_plugin: Callable[[str], dict[str, Any]] | None = None,
    **kwargs: Any,
) -> Iterator[tuple[str, Any]]:
    """Call one hook plugin by plugin, recording (not raising) each plugin's failure.

    ``per_plugin(name)`` supplies arguments that differ by plugin (the server gives each plugin
    a router that only adds routes under its own prefix).
    """
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():  # registration order
        try:
            args = {**kwargs, **(per_plugin(impl.plugin_name) if per_plugin else {})}
            result = impl.function(*[args[arg] for arg in impl.argnames])
        except Exception as exc:
            catalog.failures.append(failure(catalog, impl.plugin_name, hook_name, exc))
            continue
        yield impl.plugin_name, result


def _register_entry_points(
    pm: pluggy.PluginManager, catalog: Catalog, skip: set[str], builtin_only: bool
) -> None:
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)

    def order(ep: importlib.metadata.EntryPoint) -> tuple[bool, str, str]:
        dist = ep.dist.name if ep.dist else ""
        return (dist != ENGINE, dist, ep.name)  # the built-in pack first: it owns plain names

    for ep in sorted(found, key=order):
        dist = ep.dist.name if ep.dist else None
        info = PluginInfo(
            ep.name, ep.value, dist, ep.dist.version if ep.dist else None, builtin=dist == ENGINE
        )
        if ep.name in skip or (builtin_only and not info.builtin):
            catalog.disabled.append(info)
            continue
        taken = catalog.plugin(ep.name)
        if taken is not None:
            error = DuplicateNodeType(
                f"plugin name {ep.name!r} from distribution {dist!r} is already taken by "
                f"distribution {taken.distribution!r}: their node types ({ep.name}.*) would "
                "collide, so the second was refused; uninstall one of them"
            )
            catalog.failures.append(failure(catalog, ep.name, "register", error, dist))
            continue
        try:
            module = ep.load()
        except Exception as exc:
            catalog.failures.append(failure(catalog, ep.name, "import", exc, dist))
            continue
        _register(pm, catalog, module, info)


def _register(pm: pluggy.PluginManager, catalog: Catalog, module: Any, info: PluginInfo) -> None:
    stage = "register"
    try:
        if not info.builtin and not PLUGIN_NAME.match(info.name):
            raise ValueError(
                f"plugin name {info.name!r} cannot prefix node types: make the entry point "
                "name a Python identifier (letters, digits, underscores)"
            )
        stage = "api_version"
        info = dataclasses.replace(info, api_version=_api_version(module, info))
        stage = "register"
        pm.register(module, name=info.name)
    except Exception as exc:
        catalog.failures.append(failure(catalog, info.name, stage, exc, info.distribution))
        return
    catalog.plugins.append(info)


def _api_version(module: Any, info: PluginInfo) -> int | None:
    """The API version the plugin targets; raises if it is not the one this nodeflow provides.

    A plugin that declares none is taken to target version 1, the first (and only one before
    plugins could declare it); from version 2 on, an undeclared plugin will be refused.
    """
    declared = getattr(module, API_ATTRIBUTE, None)
    if declared is None:
        return None
    supported = {declared} if isinstance(declared, int) else set(declared)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in supported):
        raise PluginApiMismatch(f"{API_ATTRIBUTE} must be an integer, not {declared!r}")
    if PLUGIN_API_VERSION not in supported:
        import nodeflow

        targets = ", ".join(str(v) for v in sorted(supported))
        raise PluginApiMismatch(
            f"plugin {info.name!r} ({info.origin}) targets nodeflow plugin API {targets}, but "
            f"this nodeflow ({nodeflow.__version__}) provides plugin API {PLUGIN_API_VERSION}; "
            f"install a version of {info.distribution or info.module} made for API "
            f"{PLUGIN_API_VERSION} (or a nodeflow providing API {targets})"
        )
    return PLUGIN_API_VERSION


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


def failure(
    catalog: Catalog,
    plugin: str,
    stage: str,
    exc: BaseException,
    distribution: str | None = None,
) -> PluginFailure:
    if distribution is None:
        info = catalog.plugin(plugin)
        distribution = info.distribution if info else None
    return PluginFailure(
        plugin=plugin,
        stage=stage,
        error=f"{type(exc).__name__}: {exc}",
        traceback="".join(traceback.format_exception(exc)),
        distribution=distribution,
    )
