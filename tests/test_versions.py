"""The installed-version check: what it accepts, what it names."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest
from versions import CONSTRAINTS, read_constraints, untested_versions


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "constraints.txt"
    path.write_text(text)
    return path


@pytest.mark.skipif(
    os.environ.get("NODEFLOW_ALLOW_UNTESTED_VERSIONS") == "1", reason="untested versions allowed"
)
def test_the_installed_environment_is_the_tested_one() -> None:
    assert untested_versions() == []


def test_every_runtime_dependency_is_pinned() -> None:
    pins = read_constraints(CONSTRAINTS)
    for name in ("torch", "diffusers", "transformers", "safetensors", "pydantic", "aiohttp"):
        assert str(pins[name].specifier).startswith("=="), name


def test_a_different_version_is_named_with_the_tested_one(tmp_path: Path) -> None:
    installed = importlib.metadata.version("pluggy")
    path = _write(tmp_path, "# comment\npluggy==0.0.1  # why\nnot-installed-package==1.0\n")
    assert untested_versions(path) == [f"pluggy {installed} is installed; tested: pluggy==0.0.1"]


def test_the_same_version_passes_and_a_local_build_label_is_the_same_release(
    tmp_path: Path,
) -> None:
    torch_version = importlib.metadata.version("torch")  # e.g. 2.13.0+cpu
    public = torch_version.split("+", 1)[0]
    pluggy_version = importlib.metadata.version("pluggy")
    path = _write(tmp_path, f"torch=={public}\nPluggy=={pluggy_version}\n")
    assert untested_versions(path) == []


def test_a_malformed_line_names_its_number(tmp_path: Path) -> None:
    path = _write(tmp_path, "pluggy==1.0\nthis is not a requirement\n")
    with pytest.raises(ValueError, match=r"constraints.txt:2"):
        read_constraints(path)
