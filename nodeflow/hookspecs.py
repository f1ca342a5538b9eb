"""The hooks a nodeflow plugin may implement.

Every plugin, the built-in ``nodes`` pack included, is a module registered through the ``nodeflow``
entry point group whose functions are marked with ``nodeflow.hookimpl``. Each hook here is called
once per plugin, separately, so one plugin's failure is recorded against it and never hides another.
Plugin authors: ``docs/plugins.md`` documents every hook with a worked example; a test fails when a
hook here is missing from it, has no docstring, or is exercised by no test.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from nodeflow.events import Event
    from nodeflow.extensions import WebExtension
    from nodeflow.server.plugins import PluginRoutes, ServerContext

PROJECT_NAME = "nodeflow"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def nodeflow_types() -> list[Any]:
    """Return the socket types this plugin provides: classes decorated with ``@socket_type``
    or ``SocketType`` objects. Socket type names are global (so plugins can share types): a
    name registered differently by two plugins is refused naming both."""


@hookspec
def nodeflow_nodes() -> list[Any]:
    """Return the node types this plugin provides: functions decorated with ``@node``.
    A third-party plugin's types are registered as ``<plugin>.<Name>`` (the plugin name is its
    entry point name); the built-in pack's keep their plain names."""


@hookspec
def nodeflow_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``nodeflow`` command line (``subparsers.add_parser(...)``; set
    ``func`` with ``set_defaults`` to the function that runs the command)."""


@hookspec
def nodeflow_loaders() -> Mapping[str, Callable[..., Any]]:
    """Return loaders for file formats or model kinds this plugin reads, keyed by file suffix
    (``".cube"``) or kind name (``"upscale_model"``). Nodes find them with
    ``ctx.loaders.for_path(path)`` or ``ctx.loaders.get(kind)``, so a format is read by one
    function whichever node (or plugin) needs it. A ``FileKind`` under the name a
    ``Widget(files=...)`` gives (``"luts"``) says where those files are found (folders, built-in
    names), so validation checks a chosen file before anything runs. A key two plugins claim is
    refused naming both."""


@hookspec
def nodeflow_routes(routes: PluginRoutes, context: ServerContext) -> None:
    """Add HTTP routes to the server, under ``/api/plugins/<plugin>/``: ``routes.get(path,
    handler)``, ``routes.post(...)``, ``routes.add(method, path, handler)`` take paths relative to
    that prefix. ``context`` gives the catalog, executor, environment and the aiohttp app (for
    startup and cleanup callbacks). The server's origin and token checks cover these routes too."""


@hookspec
def nodeflow_web_extensions() -> WebExtension | Mapping[str, Any] | None:
    """Return editor extensions: a folder of static files, served at ``/extensions/<plugin>/``,
    and the JavaScript entry points in it that the editor loads (listed by ``GET
    /api/extensions``). As a ``WebExtension(static=folder, scripts=["main.js"])`` or a dict with
    the same keys."""


@hookspec
def nodeflow_event_listeners() -> list[Callable[[Event], None]]:
    """Return callables to subscribe to every executor's events (``run.started``,
    ``node.finished``, ...; see ``nodeflow.events``). They run on the executor's thread, so they
    should be quick; one that raises is logged naming the plugin and never disturbs the run."""
