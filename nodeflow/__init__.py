"""nodeflow: typed node graphs for diffusion image generation (the engine; knows no diffusion)."""

from nodeflow.context import Context, Environment, Interrupted
from nodeflow.hookspecs import hookimpl
from nodeflow.loaders import FileKind
from nodeflow.node import NodeSpec, Widget, node
from nodeflow.types import ANY, Socket, SocketType, socket_type

__version__ = "0.1.0"
PLUGIN_API_VERSION = 1
"""The plugin API version: bumped when a hook or the node declaration changes incompatibly.
A plugin states the version it targets (``NODEFLOW_API = 1`` in its entry point module); a plugin
targeting another version is not loaded, and the failure says which version each side has."""
API_VERSION = PLUGIN_API_VERSION  # the name this constant had before plugins could declare it

__all__ = [
    "ANY",
    "API_VERSION",
    "PLUGIN_API_VERSION",
    "Context",
    "Environment",
    "FileKind",
    "Interrupted",
    "NodeSpec",
    "Socket",
    "SocketType",
    "Widget",
    "hookimpl",
    "node",
    "socket_type",
]
