"""Reading ComfyUI's extra_model_paths.yaml into model folders per kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeflow.context import Environment
from nodeflow.model_paths import ModelPathsInvalid, discover, read, read_all

COMFY_EXAMPLE = """
a111:
    base_path: webui/

    checkpoints: models/Stable-diffusion
    configs: models/Stable-diffusion
    vae: models/VAE
    loras: |
         models/Lora
         models/LyCORIS
    embeddings: embeddings

comfyui:
    base_path: ~/ComfyUI/
    is_default: true
    checkpoints: models/checkpoints/
    clip: models/clip/
    unet: models/unet/
"""


def test_sections_base_paths_several_folders_and_renamed_kinds(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "extra_model_paths.yaml"
    path.write_text(COMFY_EXAMPLE)
    folders = read(path)
    webui, comfy = tmp_path / "webui", tmp_path / "home" / "ComfyUI"
    assert folders["checkpoints"] == [
        webui / "models/Stable-diffusion",
        comfy / "models/checkpoints",
    ]
    assert folders["loras"] == [webui / "models/Lora", webui / "models/LyCORIS"]
    # ComfyUI's renamed folders answer to both names
    assert folders["text_encoders"] == folders["clip"] == [comfy / "models/clip"]
    assert folders["diffusion_models"] == [comfy / "models/unet"]
    assert "base_path" not in folders and "is_default" not in folders


def test_the_environment_searches_the_models_dir_first(tmp_path):
    path = tmp_path / "extra.yaml"
    path.write_text("a:\n  base_path: /elsewhere\n  loras: one\n")
    env = Environment.from_dirs(tmp_path / "models", extra_model_dirs=read_all([path]))
    assert env.model_dirs("loras") == [tmp_path / "models" / "loras", Path("/elsewhere/one")]
    assert env.model_dirs("vae") == [tmp_path / "models" / "vae"]


@pytest.mark.parametrize(
    "text",
    ["- a list\n", "a: [1, 2]\n", "a:\n  loras: 3\n", "a:\n  base_path: [x]\n", "a: b: c: :\n"],
)
def test_files_of_another_shape_are_refused_with_the_file_named(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ModelPathsInvalid, match=r"bad\.yaml"):
        read(path)


def test_a_file_beside_the_models_dir_is_found_by_itself(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "install").mkdir()
    assert discover(tmp_path / "install" / "models") == []
    (tmp_path / "install" / "extra_model_paths.yaml").write_text("a:\n  loras: x\n")
    assert discover(tmp_path / "install" / "models") == [
        tmp_path / "install" / "extra_model_paths.yaml"
    ]
