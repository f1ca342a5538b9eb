"""The workflow file, version 1: one JSON format for the editor, the CLI and the API.

A link is ``{"from": "<node id>.<output>"}``; any other input value is a widget value. Unknown
keys are an error, never silently dropped, so a typo in a hand-written file is reported rather
than ignored. The editor's layout rides along under ``ui`` untouched.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from nodeflow.errors import Issue, WorkflowInvalid
from nodeflow.plaintext import with_suggestion

NODE_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
LINK_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z_][A-Za-z0-9_]*$"

NodeId = Annotated[str, Field(pattern=NODE_ID_PATTERN, min_length=1, max_length=200)]


class Link(BaseModel):
    """A connection from another node's output into this input."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str = Field(alias="from", pattern=LINK_PATTERN, description="<node id>.<output>")

    @property
    def node(self) -> str:
        return self.source.split(".", 1)[0]

    @property
    def output(self) -> str:
        return self.source.split(".", 1)[1]

    @classmethod
    def to(cls, node: str, output: str) -> Link:
        return cls(source=f"{node}.{output}")


def _input_kind(value: Any) -> str:
    if isinstance(value, Link) or (isinstance(value, dict) and "from" in value):
        return "link"
    return "value"


InputValue = Annotated[
    Annotated[Link, Tag("link")] | Annotated[JsonValue, Tag("value")],
    Discriminator(_input_kind),
]


class NodeEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, description="The node type, e.g. TextEncode")
    inputs: dict[str, InputValue] = Field(default_factory=dict)
    mode: Literal["bypass", "mute"] | None = Field(
        None,
        description="Optional. 'bypass': each output passes the node's first linked input of the "
        "same socket type through; 'mute': the node, and what only it feeds, does not run.",
    )

    def links(self) -> dict[str, Link]:
        return {name: v for name, v in self.inputs.items() if isinstance(v, Link)}


class PluginRequirement(BaseModel):
    """Which distribution provides a plugin's node types, and the version the file was made with.

    Provenance, not a constraint: it lets a workflow that needs a missing plugin say what to
    install. Any installed version of the plugin is used.
    """

    model_config = ConfigDict(extra="forbid")

    distribution: str | None = Field(
        None, description="The package to install, e.g. nodeflow-imageops"
    )
    version: str | None = Field(None, description="Its version when the workflow was saved")


PluginName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]

SUBGRAPH_INPUTS = "inputs"
"""The reserved node id through which a subgraph's inner nodes read its declared inputs:
``{"from": "inputs.<name>"}``."""

PortName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100)]
SubgraphName = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_ -]*$", min_length=1, max_length=100)
]


class SubgraphInput(BaseModel):
    """A declared input of a subgraph: what an instance's input of that name takes."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, description="The socket type (or a widget's primitive type)")
    default: JsonValue = Field(
        None, description="The value used when an instance gives none; absent or null: required"
    )


class SubgraphOutput(BaseModel):
    """A declared output of a subgraph: which inner node's output it is."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str = Field(alias="from", pattern=LINK_PATTERN, description="<inner node id>.<output>")
    type: str = Field(min_length=1, description="Its socket type, checked against the inner one")


class Subgraph(BaseModel):
    """A reusable group of nodes, used by name as a node type in ``nodes`` (and in other
    subgraphs). Its inner nodes read the declared inputs as links from the node ``inputs``."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    inputs: dict[PortName, SubgraphInput] = Field(default_factory=dict)
    outputs: dict[PortName, SubgraphOutput] = Field(default_factory=dict)
    nodes: dict[NodeId, NodeEntry] = Field(default_factory=dict)
    ui: dict[str, JsonValue] | None = None

    @model_validator(mode="after")
    def _inputs_is_reserved(self) -> Subgraph:
        if SUBGRAPH_INPUTS in self.nodes:
            raise ValueError(
                f"{SUBGRAPH_INPUTS!r} is reserved for the subgraph's declared inputs; "
                "rename that node"
            )
        return self


class Workflow(BaseModel):
    """A DAG of nodes. ``nodes`` maps node ids to their type and inputs."""

    model_config = ConfigDict(extra="forbid", title="nodeflow workflow")

    version: Literal[1] = 1
    nodes: dict[NodeId, NodeEntry] = Field(default_factory=dict)
    requires: dict[PluginName, PluginRequirement] | None = Field(
        None,
        description="The third-party plugins the node types need (by plugin name, the prefix of "
        "'<plugin>.<Name>' types); written when a workflow is saved. Optional: files without it "
        "load as before.",
    )
    subgraphs: dict[SubgraphName, Subgraph] | None = Field(
        None,
        description="Optional. Subgraph definitions by name, each usable as a node type; they "
        "ride in the file, so a workflow that uses one stays self-contained.",
    )
    ui: dict[str, JsonValue] | None = None

    @model_validator(mode="before")
    @classmethod
    def _only_what_json_files_hold(cls, data: Any) -> Any:
        """Refuse what a saved file could not carry, so every loaded workflow can be saved."""
        problem = _not_json(data, "")
        if problem is not None:
            raise ValueError(problem)
        return data

    @field_validator("version", mode="before")
    @classmethod
    def _exactly_an_integer(cls, value: Any) -> Any:
        if type(value) is not int:  # not true, not 1.0: the file format is exact
            raise ValueError(f"version must be the integer 1, not {value!r}")
        return value

    # --- reading -------------------------------------------------------------------------

    @classmethod
    def from_json(cls, data: Any, source: str | None = None) -> Workflow:
        """Validate a parsed JSON document; raises WorkflowInvalid with located issues."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise WorkflowInvalid(_issues_from_pydantic(exc), source) from None
        except RecursionError:
            raise WorkflowInvalid(
                [Issue(None, None, "format", "the document is nested too deeply")], source
            ) from None

    @classmethod
    def loads(cls, text: str | bytes, source: str | None = None) -> Workflow:
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}"
            raise WorkflowInvalid(
                [Issue(None, None, "json_syntax", f"malformed JSON at {where}: {exc.msg}")],
                source,
            ) from None
        except UnicodeDecodeError as exc:
            raise WorkflowInvalid(
                [Issue(None, None, "json_syntax", f"not UTF-8 text: {exc}")], source
            ) from None
        except (ValueError, RecursionError) as exc:  # an int past 4300 digits; too deep nesting
            raise WorkflowInvalid(
                [Issue(None, None, "json_syntax", f"unreadable JSON: {exc}")], source
            ) from None
        return cls.from_json(data, source)

    @classmethod
    def load(cls, path: str | Path) -> Workflow:
        path = Path(path)
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise WorkflowInvalid(
                [Issue(None, None, "file", f"cannot read {path}: {exc.strerror or exc}")],
                str(path),
            ) from None
        return cls.loads(text, str(path))

    # --- writing -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", by_alias=True, exclude_none=False)
        for optional in ("requires", "subgraphs", "ui"):
            if data.get(optional) is None:
                data.pop(optional, None)
        _drop_unset_modes(data["nodes"])
        for definition in (data.get("subgraphs") or {}).values():
            _drop_unset_modes(definition["nodes"])
            if definition.get("ui") is None:
                definition.pop("ui", None)
            for port in definition["inputs"].values():
                if port.get("default") is None:
                    port.pop("default", None)
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps(), encoding="utf-8")

    # --- editing -------------------------------------------------------------------------

    def with_values(self, values: dict[tuple[str, str], Any]) -> Workflow:
        """A copy with some inputs set: ``{(node, input): value}`` (what ``--set`` does)."""
        data = self.to_json()
        for (node_id, name), value in values.items():
            if node_id not in data["nodes"]:
                message = with_suggestion(f"no node {node_id!r} to set", node_id, data["nodes"])
                raise WorkflowInvalid([Issue(node_id, name, "missing_node", message)])
            data["nodes"][node_id]["inputs"][name] = value
        return Workflow.from_json(data)


def _drop_unset_modes(nodes: dict[str, Any]) -> None:
    for entry in nodes.values():
        if entry.get("mode") is None:
            entry.pop("mode", None)  # a normal node is written as before modes existed


def _not_json(value: Any, path: str) -> str | None:
    """Where a JSON-like value holds something a UTF-8 JSON file cannot: NaN or an infinity, or
    text with an unpaired surrogate (``"\\ud800"`` parses, but is not Unicode text)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path or 'document'}: NaN and infinity are not JSON numbers"
    if isinstance(value, str):
        return (
            None if _is_unicode(value) else f"{path or 'document'}: text with an unpaired surrogate"
        )
    if isinstance(value, dict):
        for key, child in value.items():
            child_path = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and not _is_unicode(key):
                return f"{path or 'document'}: a key with an unpaired surrogate"
            found = _not_json(child, child_path)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found = _not_json(child, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the workflow file (``nodeflow schema``)."""
    schema = Workflow.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def _issues_from_pydantic(exc: ValidationError) -> list[Issue]:
    issues = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        node = loc[1] if len(loc) >= 2 and loc[0] == "nodes" else None
        name = loc[3] if node and len(loc) >= 4 and loc[2] == "inputs" else None
        code = "unknown_key" if error["type"] == "extra_forbidden" else "format"
        path = ".".join(p for p in loc if p not in ("link", "value")) or "document"
        message = f"{path}: {error['msg']}"
        if error["type"] == "extra_forbidden":
            message = with_suggestion(
                f"{path}: unknown key {loc[-1]!r}", loc[-1], _keys_at(loc[:-1])
            )
        issues.append(Issue(node, name, code, message))
    return issues


def _keys_at(parent: list[str]) -> list[str]:
    """The keys the file format allows in the object at ``parent`` (a pydantic error location),
    to suggest the one an unknown key was meant to be."""
    if not parent:
        model: type[BaseModel] = Workflow
    elif parent[0] == "nodes" and len(parent) == 2:
        model = NodeEntry
    elif parent[0] == "requires" and len(parent) == 2:
        model = PluginRequirement
    elif parent[0] == "subgraphs" and len(parent) == 2:
        model = Subgraph
    elif parent[0] == "subgraphs" and len(parent) == 4 and parent[2] == "nodes":
        model = NodeEntry
    elif parent[0] == "subgraphs" and len(parent) == 4 and parent[2] == "inputs":
        model = SubgraphInput
    elif parent[0] == "subgraphs" and len(parent) == 4 and parent[2] == "outputs":
        model = SubgraphOutput
    elif parent[-1] == "link":
        model = Link
    else:
        return []
    return [info.alias or field for field, info in model.model_fields.items()]
