"""nodeflow: typed node graphs for diffusion image generation (the engine; knows no diffusion)."""

from nodeflow.context import Context, Environment, Interrupted
from nodeflow.hookspecs import hookimpl
from nodeflow.node import NodeSpec, Widget, node
from nodeflow.types import ANY, Socket, SocketType, socket_type

__version__ = "0.1.0"
API_VERSION = 1
"""The plugin API version: bumped when a hook or the node declaration changes incompatibly."""

__all__ = [
    "ANY",
    "API_VERSION",
    "Context",
    "Environment",
    "Interrupted",
    "NodeSpec",
    "Socket",
    "SocketType",
    "Widget",
    "hookimpl",
    "node",
    "socket_type",
]
