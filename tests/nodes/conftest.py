"""Diffusion fixtures: one tiny SD model on disk, loaded by diffusers and by nodeflow alike."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nodeflow.context import Environment
from nodeflow.executor import Executor
from nodeflow.plugins import Catalog, load_catalog
from nodeflow.runtime import Runtime


@pytest.fixture(scope="session", autouse=True)
def nodeflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep the demo model the tests make out of the user's real home folder."""
    home = tmp_path_factory.mktemp("nodeflow-home")
    previous = os.environ.get("NODEFLOW_HOME")
    os.environ["NODEFLOW_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("NODEFLOW_HOME", None)
    else:
        os.environ["NODEFLOW_HOME"] = previous


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny models of each family, as diffusers folders and as original-layout single files."""
    from nodes.tiny import make_tiny_sd, make_tiny_sd2, make_tiny_sdxl, write_single_file

    models = tmp_path_factory.mktemp("models")
    checkpoints = models / "checkpoints"
    for name, make in (("tiny", make_tiny_sd), ("tiny-sd2", make_tiny_sd2),
                       ("tiny-sdxl", make_tiny_sdxl)):  # fmt: skip
        make(checkpoints / name, seed=0)
        write_single_file(checkpoints / name, checkpoints / f"{name}.safetensors", seed=0)
    return models


@pytest.fixture(scope="session")
def tiny_path(models_dir: Path) -> Path:
    return models_dir / "checkpoints" / "tiny"


@pytest.fixture(scope="session")
def sd_catalog() -> Catalog:
    catalog = load_catalog()
    assert not catalog.failures, catalog.failures
    return catalog


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    """One runtime for the session, so its model manager loads the tiny model once."""
    return Runtime("cpu")


@pytest.fixture
def make_executor(
    sd_catalog: Catalog, runtime: Runtime, models_dir: Path, tmp_path: Path
) -> Callable[..., Executor]:
    def make(**kwargs: Any) -> Executor:
        env = Environment.from_dirs(models_dir, tmp_path / "output", tmp_path / "input")
        return Executor(sd_catalog, env=env, runtime=runtime, **kwargs)

    return make


@pytest.fixture(scope="session")
def pipe(tiny_path: Path) -> Any:
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(
        tiny_path, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline
