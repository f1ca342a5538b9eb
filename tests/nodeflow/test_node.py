from __future__ import annotations

import enum
from typing import Annotated, Literal, NamedTuple

import pytest
import testnodes
from pydantic import Field, ValidationError

from nodeflow import Context, Widget, node
from nodeflow.node import MISSING, NodeDeclarationError, spec_of


def test_sockets_widgets_defaults_and_outputs_come_from_the_signature():
    spec = spec_of(testnodes.scale)
    assert spec.type == "Scale" and spec.version == 2 and spec.category == "math"
    assert spec.wants_context
    assert spec.description == "x * factor (or x / factor)."
    x, factor, mode = spec.inputs["x"], spec.inputs["factor"], spec.inputs["mode"]
    assert (x.kind, x.type, x.required, x.default) == ("socket", "Number", True, MISSING)
    assert (factor.kind, factor.type, factor.required, factor.default) == (
        "widget",
        "FLOAT",
        False,
        1.0,
    )
    assert factor.schema == {
        "type": "number",
        "minimum": -10,
        "maximum": 10,
        "multipleOf": 0.5,
        "default": 1.0,
    }
    assert mode.type == "STRING" and mode.schema["enum"] == ["mul", "div"]
    assert [(o.name, o.type) for o in spec.outputs] == [("number", "Number")]


def test_optional_socket_named_tuple_outputs_and_widget_hints():
    add = spec_of(testnodes.add)
    assert add.inputs["b"].required is False and add.inputs["b"].default is None
    split = spec_of(testnodes.split)
    assert split.returns_tuple
    assert [(o.name, o.type) for o in split.outputs] == [("low", "Number"), ("high", "Number")]
    label = spec_of(testnodes.label)
    assert label.inputs["text"].schema["x-nodeflow"] == {"multiline": True}
    assert spec_of(testnodes.read_number).inputs["path"].schema["x-nodeflow"] == {"files": "input"}
    assert spec_of(testnodes.show).output_node and spec_of(testnodes.show).outputs == ()
    assert spec_of(testnodes.volatile).cache == "never"
    assert spec_of(testnodes.read_number).to_json()["cache"] == "fingerprint"


def test_widget_values_are_validated_and_coerced_by_pydantic():
    factor = spec_of(testnodes.scale).inputs["factor"]
    assert factor.coerce("2.5") == 2.5
    with pytest.raises(ValidationError):
        factor.coerce(11)  # le=10
    with pytest.raises(ValidationError):
        factor.coerce(0.3)  # multiple_of=0.5
    with pytest.raises(ValidationError):
        spec_of(testnodes.scale).inputs["mode"].coerce("pow")


def test_enum_widget_and_primitive_output():
    class Color(enum.StrEnum):
        RED = "red"
        BLUE = "blue"

    class Pair(NamedTuple):
        n: int
        name: str

    @node("Paint")
    def paint(color: Color = Color.RED, seed: Annotated[int, Widget(seed=True)] = 0) -> Pair:
        return Pair(1, color.value)

    spec = spec_of(paint)
    assert spec.inputs["color"].schema["enum"] == ["red", "blue"]
    assert spec.inputs["color"].default is Color.RED
    assert spec.inputs["color"].to_json()["default"] == "red"
    assert spec.inputs["color"].coerce("blue") is Color.BLUE
    assert spec.inputs["seed"].schema["x-nodeflow"] == {"seed": True}
    assert not spec.wants_context
    assert [(o.name, o.type) for o in spec.outputs] == [("n", "INT"), ("name", "STRING")]


@pytest.mark.parametrize(
    "declare, message",
    [
        (lambda: node("Bad")(lambda ctx, x: None), "has no type annotation"),
        (lambda: node("bad name!")(_plain), "invalid node type name"),
    ],
)
def test_declaration_errors_say_which_node(declare, message):
    with pytest.raises(NodeDeclarationError, match=message):
        declare()


def _plain(ctx: Context) -> None:
    return None


def test_bad_default_and_bad_return_type_are_refused():
    with pytest.raises(NodeDeclarationError, match="default of 'n' is invalid"):

        @node("BadDefault")
        def bad_default(n: Annotated[int, Field(ge=0)] = -1) -> None: ...

    with pytest.raises(NodeDeclarationError, match="is not a socket type"):

        @node("BadReturn")
        def bad_return() -> list[int]: ...

    with pytest.raises(NodeDeclarationError, match="can only default to None"):

        @node("BadSocketDefault")
        def bad_socket(x: testnodes.Number = 3) -> None: ...  # type: ignore[assignment]


def test_literal_of_ints_is_an_int_widget():
    @node("Pick")
    def pick(n: Literal[1, 2, 4] = 2) -> int:
        return n

    assert spec_of(pick).inputs["n"].type == "INT"


def test_aliases_are_other_names_for_search_listed_with_the_node():
    @node("Sampler", aliases=("KSampler", "SamplerCustom"))
    def sampler(steps: int = 20) -> int:
        return steps

    spec = spec_of(sampler)
    assert spec.aliases == ("KSampler", "SamplerCustom")
    assert spec.to_json()["aliases"] == ["KSampler", "SamplerCustom"]
    assert spec_of(testnodes.constant).to_json()["aliases"] == []
    with pytest.raises(NodeDeclarationError, match="aliases"):

        @node("Bad", aliases=("",))
        def bad() -> int:
            return 0
