"""Engine fixtures: a catalog of pure-Python test nodes, and fake installed plugin packages."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import testnodes

from nodeflow.executor import Executor
from nodeflow.plugins import Catalog, load_catalog


@pytest.fixture
def catalog() -> Catalog:
    catalog = load_catalog(entry_points=False, plugins=[("testnodes", testnodes)])
    assert not catalog.failures
    return catalog


@pytest.fixture
def calls() -> list[str]:
    testnodes.CALLS.clear()
    testnodes.MADE.clear()
    return testnodes.CALLS


@pytest.fixture
def executor(catalog: Catalog, calls: list[str], tmp_path: Path) -> Executor:
    from nodeflow.context import Environment

    return Executor(catalog, env=Environment.from_dirs(tmp_path / "m", tmp_path / "o", tmp_path))


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Install a fake distribution with a ``nodeflow`` entry point (seen by importlib.metadata)."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    added: list[str] = []

    def install(dist: str, module: str, source: str, entry_name: str | None = None) -> None:
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        # as in real wheels: "-" becomes "_" in the folder name (the name ends at the first "-")
        info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[nodeflow]\n{entry_name or dist} = {module}\n")
        added.append(module)
        importlib.invalidate_caches()

    yield install
    for module in added:
        sys.modules.pop(module, None)
