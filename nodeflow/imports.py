"""Workflows from files in other formats, through importers plugins register.

An importer is a loader registered under ``workflow_importer.<format>`` (``nodeflow_loaders``):
``importer(document, *, png_text=None, source=None) -> Imported | None``. It gets the parsed
JSON document, or for a PNG its text chunks, and answers None when the file is not its format.
It translates only: the result is a plain ``Workflow`` that is validated and run like any other.
Problems are raised as ``WorkflowInvalid`` with located issues, as the native loader does.

PNGs are read here, without decoding any pixels, since nodeflow's own SaveImage embeds the
workflow in a ``workflow`` text chunk too.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeflow.errors import Issue, WorkflowInvalid
from nodeflow.loaders import LoaderRegistry
from nodeflow.workflow import Workflow

IMPORTER_PREFIX = "workflow_importer."
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_TEXT_BYTES = 16 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Imported:
    """A workflow read from a file, with what its importer wants the user to know."""

    workflow: Workflow
    format: str = "nodeflow"
    warnings: list[Issue] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)
    """nodeflow node id -> the id of the node it came from in the source format."""


def importers(loaders: LoaderRegistry) -> dict[str, Any]:
    """The registered importers, by format name."""
    return {
        key.removeprefix(IMPORTER_PREFIX): loader
        for key, loader in loaders.loaders.items()
        if key.startswith(IMPORTER_PREFIX)
    }


def load_path(path: str | Path, loaders: LoaderRegistry) -> Imported:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise WorkflowInvalid(
                [Issue(None, None, "too_large", f"{path} is over {MAX_FILE_BYTES} bytes")],
                str(path),
            )
        data = path.read_bytes()
    except OSError as exc:
        raise WorkflowInvalid(
            [Issue(None, None, "file", f"cannot read {path}: {exc.strerror or exc}")], str(path)
        ) from None
    return load_bytes(data, loaders, str(path))


def load_bytes(data: bytes, loaders: LoaderRegistry, source: str | None = None) -> Imported:
    """A native workflow, or what a registered importer makes of the file."""
    if data.startswith(PNG_SIGNATURE):
        text = png_text(data)
        native = _json(text.get("workflow"))
        if is_native(native):
            return Imported(Workflow.from_json(native, source))
        for importer in importers(loaders).values():
            found = importer(None, png_text=text, source=source)
            if found is not None:
                return found
        raise WorkflowInvalid(
            [Issue(None, None, "format", "the PNG holds no workflow this nodeflow can read")],
            source,
        )
    try:
        document = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return Imported(Workflow.loads(data, source))  # its own precise message
    return load_document(document, loaders, source)


def load_document(document: Any, loaders: LoaderRegistry, source: str | None = None) -> Imported:
    if not is_native(document):
        for importer in importers(loaders).values():
            found = importer(document, source=source)
            if found is not None:
                return found
    return Imported(Workflow.from_json(document, source))


def is_native(document: Any) -> bool:
    return isinstance(document, dict) and isinstance(document.get("nodes"), dict)


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def png_text(data: bytes) -> dict[str, str]:
    """A PNG's text chunks (tEXt, zTXt, iTXt) by keyword; a damaged tail is ignored."""
    found: dict[str, str] = {}
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if len(body) < length or kind == b"IEND":
            break
        try:
            if kind == b"tEXt":
                key, _, value = body.partition(b"\0")
                found[key.decode("latin-1")] = value.decode("latin-1")
            elif kind == b"zTXt":
                key, _, rest = body.partition(b"\0")
                found[key.decode("latin-1")] = _inflate(rest[1:]).decode("latin-1")
            elif kind == b"iTXt":
                key, _, rest = body.partition(b"\0")
                compressed, rest = rest[:1] == b"\1", rest[2:]
                _, _, rest = rest.partition(b"\0")  # language
                _, _, value = rest.partition(b"\0")  # translated keyword
                found[key.decode("latin-1")] = (_inflate(value) if compressed else value).decode(
                    "utf-8"
                )
        except (UnicodeDecodeError, zlib.error, ValueError):
            continue
    return found


def _inflate(data: bytes) -> bytes:
    """Decompress, refusing a zip bomb."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_TEXT_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError("text chunk too large")
    return out
