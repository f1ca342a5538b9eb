"""The pack's file kinds: validation finds what the loaders load, and says where it looked."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeflow import Environment
from nodeflow.plugins import load_catalog
from nodes.files import FILE_KINDS
from nodes.image import resolve_input
from nodes.loaders import (
    BUILT_IN,
    BUILT_IN_CHECKPOINTS,
    BUILT_IN_LORAS,
    DEMO_LCM_LORA,
    DEMO_LORA,
    DEMOS,
    TEXT_DIRS,
    UNET_DIRS,
    VAE_DIRS,
    resolve_checkpoint,
    resolve_model,
)
from nodes.lora import resolve_lora_path

RESOLVERS = {
    "checkpoints": resolve_checkpoint,
    "unet": lambda name, env: resolve_model(name, env, *UNET_DIRS),
    "vae": lambda name, env: resolve_model(name, env, *VAE_DIRS),
    "text_encoders": lambda name, env: resolve_model(name, env, *TEXT_DIRS),
    "loras": resolve_lora_path,
    "input": resolve_input,
}
"""How each kind's nodes find their file at run time."""


@pytest.fixture
def env(tmp_path: Path) -> Environment:
    """A models dir with one file in every folder any kind searches, and an input picture."""
    models = tmp_path / "models"
    for folder in {*UNET_DIRS, *VAE_DIRS, *TEXT_DIRS, "loras"}:
        (models / folder).mkdir(parents=True, exist_ok=True)
        (models / folder / f"in-{folder}.safetensors").write_bytes(b"")
    (models / "diffusers" / "folder-model").mkdir()
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "mine.png").write_bytes(b"")
    return Environment.from_dirs(models, tmp_path / "output", tmp_path / "input")


def test_every_files_kind_the_pack_declares_is_registered():
    catalog = load_catalog()
    kinds = {
        spec.inputs[name].files
        for node_type, spec in catalog.nodes.items()
        if catalog.node_plugins[node_type] == "nodes"
        for name in spec.inputs
        if spec.inputs[name].files
    }
    assert kinds == set(FILE_KINDS)
    assert {k: catalog.loaders.owners[k] for k in kinds} == dict.fromkeys(kinds, "nodes")


def test_the_built_in_names_are_all_described():
    assert set(BUILT_IN_CHECKPOINTS) == set(BUILT_IN) | set(DEMOS)
    assert set(BUILT_IN_LORAS) == {DEMO_LORA, DEMO_LCM_LORA}
    for name, what in {**BUILT_IN_CHECKPOINTS, **BUILT_IN_LORAS}.items():
        trained = name in BUILT_IN or name in BUILT_IN_LORAS
        assert what.startswith("trained demo model" if trained else "random tiny test model")


@pytest.mark.parametrize("kind", sorted(RESOLVERS))
def test_validation_accepts_exactly_what_the_node_would_load(kind, env):
    """Every name in every searched folder, and some that are nowhere: the kind and the node's
    resolver agree on each (the built-in names that would be made are not tried: no building)."""
    names = [p.name for folder in FILE_KINDS[kind].folders(env) if folder.is_dir()
             for p in folder.iterdir()]  # fmt: skip
    names += ["nowhere.safetensors", "red-circle.png", DEMO_LORA, DEMO_LCM_LORA]
    names += ["demo", "demo.safetensors"]
    names += [str(env.input_dir / "mine.png")]  # an absolute path
    for name in names:
        found = FILE_KINDS[kind].find(name, env)
        try:
            resolved = RESOLVERS[kind](name, env)
        except FileNotFoundError:
            resolved = None
        assert (found is None) == (resolved is None), (kind, name, found, resolved)
        if isinstance(found, Path):
            assert found == resolved, (kind, name)


def test_a_missing_checkpoint_names_its_folders_and_the_built_in_names(env):
    message = FILE_KINDS["checkpoints"].missing("v1-5.safetensors", env)
    models = env.models_dir
    assert message.startswith(
        f"no checkpoint 'v1-5.safetensors' in {models / 'checkpoints'} or {models / 'diffusers'}"
    )
    assert "(built-in: demo, demo.safetensors, demo-sdxl," in message
    assert FILE_KINDS["loras"].missing("demo-styl", env).endswith("did you mean 'demo-style'?")


def test_checking_a_random_built_in_name_never_makes_the_model(env, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("NODEFLOW_HOME", str(home))
    for name in DEMOS:
        assert FILE_KINDS["checkpoints"].find(name, env) == name
    assert not home.exists()
