"""The hooks a nodeflow plugin may implement.

Every plugin, the built-in ``nodes`` pack included, is a module registered through the ``nodeflow``
entry point group whose functions are marked with ``nodeflow.hookimpl``. Each hook here is called
once per plugin, separately, so one plugin's failure is recorded against it and never hides another.
"""

from __future__ import annotations

import argparse
from typing import Any

import pluggy

PROJECT_NAME = "nodeflow"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def nodeflow_types() -> list[Any]:
    """Return the socket types this plugin provides: classes decorated with ``@socket_type``
    or ``SocketType`` objects."""


@hookspec
def nodeflow_nodes() -> list[Any]:
    """Return the node types this plugin provides: functions decorated with ``@node``."""


@hookspec
def nodeflow_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``nodeflow`` command line (``subparsers.add_parser(...)``; set
    ``func`` with ``set_defaults`` to the function that runs the command)."""
