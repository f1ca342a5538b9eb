"""The widgets the training nodes share, declared once so TrainLoRA and TrainUNet agree."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from nodeflow import Widget

Seed = Annotated[int, Field(ge=0, le=2**63 - 1), Widget(seed=True)]
Steps = Annotated[int, Field(ge=1, le=1_000_000)]
BatchSize = Annotated[int, Field(ge=1, le=1024)]
LearningRate = Annotated[float, Field(gt=0, le=1)]
ScheduleName = Literal["constant", "cosine"]
Count = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Prompts = Annotated[str, Widget(multiline=True)]
"""Prompts one a line."""
ClassImages = Annotated[int, Field(ge=0, le=100_000)]
PriorWeight = Annotated[float, Field(ge=0, le=100)]
SamplingSteps = Annotated[int, Field(ge=1, le=200)]
