"""Training fixtures: a small captioned picture folder, and executors with their own models/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodeflow.plugins import Catalog
from nodeflow.runtime import Runtime


@pytest.fixture
def dataset_folder(tmp_path: Path) -> str:
    """Eight small captioned pictures under the input directory, in the .txt layout."""
    from PIL import Image

    folder = tmp_path / "input" / "shapes"
    folder.mkdir(parents=True)
    colors = ["red", "green", "blue", "yellow", "white", "black", "purple", "orange"]
    for index, color in enumerate(colors):
        picture = Image.new("RGB", (24, 20), color)
        picture.paste("white" if color != "white" else "black", (6, 5, 18, 15))
        picture.save(folder / f"{index:02d}.png")
        (folder / f"{index:02d}.txt").write_text(f"a {color} picture with a square")
    return "shapes"


@pytest.fixture
def executor_for(
    sd_catalog: Catalog, runtime: Runtime, models_dir: Path, tmp_path: Path
) -> Callable[..., Executor]:
    """Executors whose loras/, unet/ and training_priors/ are this test's own (the tiny
    checkpoints come from the session's models folder), so tests never see each other's files."""

    def make(**kwargs: Any) -> Executor:
        env = Environment.from_dirs(
            tmp_path / "models", tmp_path / "output", tmp_path / "input",
            extra_model_dirs={"checkpoints": [models_dir / "checkpoints"]},
        )  # fmt: skip
        return Executor(sd_catalog, env=env, runtime=runtime, **kwargs)

    return make
