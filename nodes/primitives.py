"""Primitive nodes: one value, linked into widgets turned into inputs, so several nodes share it.

Each outputs a plain value whose socket type (INT, FLOAT, STRING, BOOLEAN) is the one a link into
a converted widget of that kind must carry (``InputSpec.type``). The consumer validates the value
against its own widget when it arrives, so a primitive needs no constraints of its own: Combo is a
String whose editor offers the choices of the widget it feeds; Seed is an Int with the seed
control (randomize, increment) and the range of Denoise's seed. Pure Python, no torch.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

from pydantic import Field

from nodeflow import Widget, node

Seed = Annotated[int, Field(ge=0, le=2**64 - 1), Widget(seed=True)]
"""Denoise's seed (``nodes.denoise.Seed``, not imported: that module brings torch)."""


@node("Int", category="primitives", aliases=("PrimitiveInt", "INTConstant", "Integer"))
def int_value(value: int = 0) -> int:
    """A whole number for widgets turned into inputs (width, steps, ...)."""
    return value


@node("Float", category="primitives", aliases=("PrimitiveFloat", "FloatConstant"))
def float_value(value: float = 0.0) -> float:
    """A real number for widgets turned into inputs (scale, strength, ...)."""
    return value


@node("String", category="primitives", aliases=("PrimitiveString", "PrimitiveStringMultiline"))
def string_value(value: Annotated[str, Widget(multiline=True)] = "") -> str:
    """Text for widgets turned into inputs (a prompt shared by several encoders, ...)."""
    return value


@node("Boolean", category="primitives", aliases=("PrimitiveBoolean", "Bool"))
def boolean_value(value: bool = False) -> bool:
    """True or false for widgets turned into inputs."""
    return value


class SeedOutput(NamedTuple):
    seed: int


@node("Seed", category="primitives", aliases=("PrimitiveSeed", "RandomSeed"))
def seed_value(seed: Seed = 0) -> SeedOutput:
    """A seed shared by several Denoise nodes; the editor can randomize or increment it."""
    return SeedOutput(seed)


@node("Combo", category="primitives", aliases=("PrimitiveCombo",))
def combo_value(value: str = "") -> str:
    """One of a choice widget's options (a scheduler name, ...): the editor offers the choices
    of the widget it feeds, and that widget checks the value when it arrives."""
    return value
