"""Socket types: the names that links are checked against.

A socket type is declared once (usually by decorating the Python class its values have) and then
registered through the ``nodeflow_types`` hook, so the engine, the validator and the editor all
agree on one table of names, colors and compatibility rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ANY = "*"
"""The wildcard socket type: an input of type ANY accepts any output, an output of type ANY
connects to any input."""


@dataclass(frozen=True)
class SocketType:
    """A named kind of value that flows along links.

    ``parents`` lists the types this one may stand in for: a ``SDXLUNet`` declared with
    ``parents=("UNet",)`` connects to every ``UNet`` input, not the other way round.
    """

    name: str
    python_type: type | None = None
    color: str = "#9e9e9e"
    description: str = ""
    parents: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "color": self.color,
            "description": self.description,
            "parents": list(self.parents),
        }


def socket_type(
    name: str | None = None,
    *,
    color: str = "#9e9e9e",
    description: str = "",
    parents: tuple[str, ...] = (),
):
    """Class decorator: make the class usable as a socket annotation in node signatures.

    The class keeps working as an ordinary class; it only gains a ``__nodeflow_socket__``
    attribute, which is how ``node()`` recognises a parameter as a socket rather than a widget.
    """

    def decorate(cls: type) -> type:
        doc = description or (cls.__doc__ or "").strip().split("\n")[0]
        cls.__nodeflow_socket__ = SocketType(
            name=name or cls.__name__,
            python_type=cls,
            color=color,
            description=doc,
            parents=parents,
        )
        return cls

    return decorate


def socket_of(annotation: Any) -> SocketType | None:
    """The socket type an annotation stands for, or None when it is a plain (widget) type."""
    spec = getattr(annotation, "__nodeflow_socket__", None)
    if (
        isinstance(spec, SocketType)
        and getattr(annotation, "__dict__", {}).get("__nodeflow_socket__") is spec
    ):
        return spec
    if isinstance(annotation, Socket):
        return SocketType(annotation.name)
    return None


@dataclass(frozen=True)
class Socket:
    """An annotation marker for socket types that have no Python class of their own.

    ``Annotated[object, Socket("MASK")]`` or simply ``Socket("MASK")`` as the annotation.
    """

    name: str


# Primitive socket types: what widget values are when they travel along links (a widget turned
# into an input socket accepts an output of the matching primitive type).
PRIMITIVES: dict[type, SocketType] = {
    int: SocketType("INT", int, "#4caf50", "A whole number."),
    float: SocketType("FLOAT", float, "#8bc34a", "A real number."),
    str: SocketType("STRING", str, "#ff9800", "Text."),
    bool: SocketType("BOOLEAN", bool, "#607d8b", "True or false."),
}
ANY_TYPE = SocketType(ANY, None, "#ffffff", "Anything: connects to every socket.")


@dataclass
class TypeRegistry:
    """Every registered socket type, with the plugin that registered it."""

    types: dict[str, SocketType] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    def add(self, socket: SocketType, plugin: str) -> None:
        existing = self.types.get(socket.name)
        if existing is not None and existing != socket:
            raise ValueError(
                f"socket type {socket.name!r} is registered by both plugin "
                f"{self.owners[socket.name]!r} and plugin {plugin!r}"
            )
        self.types[socket.name] = socket
        self.owners.setdefault(socket.name, plugin)

    def __contains__(self, name: str) -> bool:
        return name in self.types or name == ANY

    def ancestors(self, name: str) -> set[str]:
        """The type itself and every type it may stand in for, through declared parents."""
        seen = {name}
        stack = [name]
        while stack:
            current = self.types.get(stack.pop())
            for parent in current.parents if current else ():
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen

    def compatible(self, output_type: str, input_type: str) -> bool:
        """Whether an output of ``output_type`` may be linked into an input of ``input_type``."""
        if ANY in (output_type, input_type) or output_type == input_type:
            return True
        if output_type == "INT" and input_type == "FLOAT":
            return True  # as in Python: an int is acceptable wherever a float is
        return input_type in self.ancestors(output_type)
