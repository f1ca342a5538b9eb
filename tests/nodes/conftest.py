"""Diffusion fixtures: one tiny SD model on disk, loaded by diffusers and by nodeflow alike."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from objective_bases import V_ZERO_SNR_KEYS

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


@pytest.fixture(scope="session")
def zero_snr_models(tmp_path_factory: pytest.TempPathFactory, tiny_path: Path) -> Path:
    """A models folder of two copies of the tiny SD model, only their scheduler configs edited:
    ``tiny-zsnr`` says ``V_ZERO_SNR_KEYS``, ``tiny-vpred`` the same without
    ``rescale_betas_zero_snr``.
    Both keep tiny's PNDMScheduler class, as a fine-tune saved with SD 1.5's scheduler does
    (diffusers writes the key there too). Kept apart from ``models_dir``, whose listings other
    tests read."""
    root = tmp_path_factory.mktemp("zero-snr-models")
    without = {k: v for k, v in V_ZERO_SNR_KEYS.items() if k != "rescale_betas_zero_snr"}
    for name, keys in (("tiny-zsnr", V_ZERO_SNR_KEYS), ("tiny-vpred", without)):
        folder = root / "checkpoints" / name
        shutil.copytree(tiny_path, folder)
        config_file = folder / "scheduler" / "scheduler_config.json"
        config = json.loads(config_file.read_text()) | keys
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    return root


@pytest.fixture
def make_zero_snr_executor(
    sd_catalog: Catalog, runtime: Runtime, zero_snr_models: Path, tmp_path: Path
) -> Callable[..., Executor]:
    """``make_executor`` over ``zero_snr_models``."""

    def make(**kwargs: Any) -> Executor:
        env = Environment.from_dirs(zero_snr_models, tmp_path / "output", tmp_path / "input")
        return Executor(sd_catalog, env=env, runtime=runtime, **kwargs)

    return make
