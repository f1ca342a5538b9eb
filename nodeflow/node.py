"""Declaring nodes: a typed Python function is the whole declaration.

The signature is the spec. Parameters annotated with a socket type are sockets (they take links);
parameters annotated with plain types are widgets (they take values, validated and coerced by
pydantic, whose JSON Schema the editor renders). The spec is derived once, when the decorator runs,
so validation and execution never re-inspect signatures.
"""

from __future__ import annotations

import enum
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from nodeflow.context import Context
from nodeflow.types import ANY, PRIMITIVES, SocketType, socket_of

NODE_TYPE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")

CacheMode = Literal["normal", "never"]
Fingerprint = Callable[[Mapping[str, Any], Any], Any]
"""``fingerprint(widget_values, env) -> JSON-able``: the outside state a node reads (a file's
size and mtime, say). It enters the node's cache key, so editing the file re-runs the node."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Widget:
    """Editor hints for a widget, carried in its JSON Schema under ``x-nodeflow``.

    ``files`` names a kind of file the value picks (``"checkpoints"``, ``"loras"``, ``"input"``):
    the editor offers the files of that kind. ``seed`` marks a seed, which the editor can
    randomize or increment after each run. ``widget`` names a custom widget a plugin's editor
    extension registers (``api.registerWidget(name, render)``; see docs/plugins.md).
    """

    multiline: bool = False
    files: str | None = None
    display: Literal["number", "slider"] | None = None
    step: float | None = None
    seed: bool = False
    widget: str | None = None

    def hints(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, False)}


@dataclass(frozen=True)
class InputSpec:
    """One input of a node: a socket (takes a link) or a widget (takes a value or a link)."""

    name: str
    kind: Literal["socket", "widget"]
    type: str
    """The socket type; for a widget, the primitive type a link into it must carry."""
    required: bool
    default: Any = MISSING
    adapter: TypeAdapter | None = field(default=None, compare=False, repr=False)
    schema: dict[str, Any] | None = None
    files: str | None = None
    """The kind of file a widget's value picks (``Widget(files=...)``): validation checks the
    name against the ``FileKind`` a plugin registered for it."""

    def coerce(self, value: Any) -> Any:
        """Validate and coerce a widget value; raises pydantic's ValidationError."""
        return self.adapter.validate_python(value) if self.adapter is not None else value

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "type": self.type, "required": self.required}
        if self.default is not MISSING:
            data["default"] = _jsonable(self.default)
        if self.schema is not None:
            data["schema"] = self.schema
        return data


@dataclass(frozen=True)
class OutputSpec:
    name: str
    type: str


@dataclass(frozen=True)
class NodeSpec:
    """Everything the engine knows about a node type, derived once from its function."""

    type: str
    function: Callable[..., Any] = field(repr=False, compare=False)
    inputs: dict[str, InputSpec]
    outputs: tuple[OutputSpec, ...]
    category: str = "misc"
    version: int = 1
    description: str = ""
    output_node: bool = False
    cache: CacheMode = "normal"
    fingerprint: Fingerprint | None = field(default=None, repr=False, compare=False)
    wants_context: bool = False
    returns_tuple: bool = False
    display_name: str | None = None
    aliases: tuple[str, ...] = ()
    """Other names users search for it by (ComfyUI's ``KSampler`` for Denoise): search only."""

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def widget_inputs(self) -> list[InputSpec]:
        return [i for i in self.inputs.values() if i.kind == "widget"]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "display_name": self.display_name or self.type,
            "category": self.category,
            "version": self.version,
            "description": self.description,
            "output_node": self.output_node,
            "cache": "fingerprint" if self.fingerprint else self.cache,
            "inputs": {name: spec.to_json() for name, spec in self.inputs.items()},
            "outputs": [{"name": o.name, "type": o.type} for o in self.outputs],
            "aliases": list(self.aliases),
        }


class NodeDeclarationError(TypeError):
    """A node function whose signature cannot be turned into a spec."""


def node(
    type_name: str,
    *,
    category: str = "misc",
    version: int = 1,
    output_node: bool = False,
    cache: CacheMode = "normal",
    fingerprint: Fingerprint | None = None,
    display_name: str | None = None,
    aliases: Iterable[str] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a node type. The function stays callable; its spec is ``fn.__nodeflow_node__``."""

    # Annotations of a node declared inside a function may name that function's locals.
    caller_locals = dict(sys._getframe(1).f_locals)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__nodeflow_node__ = build_spec(
            fn,
            type_name,
            category=category,
            version=version,
            output_node=output_node,
            cache=cache,
            fingerprint=fingerprint,
            display_name=display_name,
            aliases=aliases,
            localns=caller_locals,
        )
        return fn

    return decorate


def spec_of(obj: Any) -> NodeSpec:
    """The spec of a decorated node function (or the spec itself)."""
    if isinstance(obj, NodeSpec):
        return obj
    spec = getattr(obj, "__nodeflow_node__", None)
    if not isinstance(spec, NodeSpec):
        raise NodeDeclarationError(f"{obj!r} is not a node: decorate it with @node(...)")
    return spec


def build_spec(
    fn: Callable[..., Any],
    type_name: str,
    *,
    category: str = "misc",
    version: int = 1,
    output_node: bool = False,
    cache: CacheMode = "normal",
    fingerprint: Fingerprint | None = None,
    display_name: str | None = None,
    aliases: Iterable[str] = (),
    localns: dict[str, Any] | None = None,
) -> NodeSpec:
    where = f"node {type_name!r} ({fn.__module__}.{fn.__qualname__})"
    if not NODE_TYPE_PATTERN.match(type_name):
        raise NodeDeclarationError(f"{where}: invalid node type name")
    if cache not in ("normal", "never"):
        raise NodeDeclarationError(f"{where}: cache must be 'normal' or 'never'")
    try:
        hints = typing.get_type_hints(fn, localns=localns, include_extras=True)
    except Exception as exc:
        raise NodeDeclarationError(f"{where}: cannot resolve annotations: {exc}") from exc

    inputs: dict[str, InputSpec] = {}
    wants_context = False
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise NodeDeclarationError(f"{where}: *args/**kwargs cannot be node inputs")
        annotation = hints.get(param.name, MISSING)
        if annotation is Context or (param.name == "ctx" and annotation is MISSING):
            wants_context = True
            continue
        if annotation is MISSING:
            raise NodeDeclarationError(f"{where}: input {param.name!r} has no type annotation")
        default = MISSING if param.default is inspect.Parameter.empty else param.default
        inputs[param.name] = _input_spec(where, param.name, annotation, default)

    outputs, returns_tuple = _output_specs(where, hints.get("return", None), output_node)
    return NodeSpec(
        type=type_name,
        function=fn,
        inputs=inputs,
        outputs=outputs,
        category=category,
        version=version,
        description=inspect.cleandoc(fn.__doc__ or ""),
        output_node=output_node,
        cache=cache,
        fingerprint=fingerprint,
        wants_context=wants_context,
        returns_tuple=returns_tuple,
        display_name=display_name,
        aliases=_aliases(where, aliases),
    )


def _aliases(where: str, aliases: Iterable[str]) -> tuple[str, ...]:
    if isinstance(aliases, str):
        aliases = (aliases,)
    found = tuple(aliases)
    if not all(isinstance(a, str) and a.strip() for a in found):
        raise NodeDeclarationError(f"{where}: aliases must be non-empty strings")
    return found


def _split_annotated(annotation: Any) -> tuple[Any, list[Any]]:
    if get_origin(annotation) is Annotated:
        base, *meta = get_args(annotation)
        return base, meta
    return annotation, []


def _split_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _input_spec(where: str, name: str, annotation: Any, default: Any) -> InputSpec:
    base, meta = _split_annotated(annotation)
    base, optional = _split_optional(base)
    inner, inner_meta = _split_annotated(base)
    meta = inner_meta + meta
    socket = socket_of(inner) or next((socket_of(m) for m in meta if socket_of(m)), None)
    if socket is not None:
        if default not in (MISSING, None):
            raise NodeDeclarationError(f"{where}: socket {name!r} can only default to None")
        return InputSpec(
            name=name,
            kind="socket",
            type=socket.name,
            required=not optional and default is MISSING,
            default=None if optional or default is None else MISSING,
        )

    widget = next((m for m in meta if isinstance(m, Widget)), Widget())
    pydantic_meta = [m for m in meta if not isinstance(m, Widget)]
    target: Any = Annotated[(inner, *pydantic_meta)] if pydantic_meta else inner
    if optional:
        target = target | None
    primitive = _primitive_type(inner)
    try:
        adapter = TypeAdapter(target)
        schema = adapter.json_schema()
    except Exception as exc:
        raise NodeDeclarationError(f"{where}: widget {name!r}: {exc}") from exc
    if default is not MISSING:
        try:
            default = adapter.validate_python(default)
        except PydanticValidationError as exc:
            raise NodeDeclarationError(f"{where}: default of {name!r} is invalid: {exc}") from exc
        schema["default"] = _jsonable(default)
    hints = widget.hints()
    if hints:
        schema["x-nodeflow"] = hints
    return InputSpec(
        name=name,
        kind="widget",
        type=primitive,
        required=default is MISSING and not optional,
        default=None if optional and default is MISSING else default,
        adapter=adapter,
        schema=schema,
        files=widget.files,
    )


def _primitive_type(annotation: Any) -> str:
    """The socket type a link into this widget must carry (a widget turned into an input)."""
    if annotation in PRIMITIVES:
        return PRIMITIVES[annotation].name
    if get_origin(annotation) is Literal:
        kinds = {type(v) for v in get_args(annotation)}
        return (
            PRIMITIVES[kinds.pop()].name if len(kinds) == 1 and kinds <= PRIMITIVES.keys() else ANY
        )
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "STRING" if issubclass(annotation, str) else ANY
    if isinstance(annotation, type) and issubclass(annotation, (int, float, str, bool)):
        for primitive, socket in PRIMITIVES.items():
            if issubclass(annotation, primitive):
                return socket.name
    return ANY


def _output_type(where: str, annotation: Any) -> str:
    socket = socket_of(annotation)
    if socket is not None:
        return socket.name
    base, meta = _split_annotated(annotation)
    for m in meta:
        if socket_of(m):
            return socket_of(m).name
    if base in PRIMITIVES:
        return PRIMITIVES[base].name
    if base is Any:
        return ANY
    raise NodeDeclarationError(f"{where}: return type {annotation!r} is not a socket type")


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _output_specs(
    where: str, annotation: Any, output_node: bool
) -> tuple[tuple[OutputSpec, ...], bool]:
    if annotation in (None, type(None)):
        return (), False
    if output_node and (annotation is dict or get_origin(annotation) in (dict, Mapping)):
        return (), False  # an output node's report, not a socket
    if (
        isinstance(annotation, type)
        and issubclass(annotation, tuple)
        and hasattr(annotation, "_fields")
    ):
        field_hints = typing.get_type_hints(annotation, include_extras=True)
        return (
            tuple(OutputSpec(f, _output_type(where, field_hints[f])) for f in annotation._fields),
            True,
        )
    type_name = _output_type(where, annotation)
    socket: SocketType | None = socket_of(annotation)
    name = _snake(socket.name) if socket else ("value" if type_name == ANY else type_name.lower())
    return (OutputSpec(name, type_name),), False


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    return value
