"""An A1111 install's models, named by ComfyUI's extra_model_paths.yaml, run a ComfyUI workflow
where they are: nothing copied into nodeflow's models dir."""

from __future__ import annotations

import shutil
from pathlib import Path

from nodeflow.cli import main

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "comfyui"


def test_models_of_an_a1111_install_are_found_through_extra_model_paths(
    comfy_dirs, tmp_path, capsys
):
    webui = tmp_path / "stable-diffusion-webui" / "models"
    (webui / "Stable-diffusion").mkdir(parents=True)
    (webui / "Lora").mkdir()
    source = comfy_dirs["models"]
    name = "v1-5-pruned-emaonly.safetensors"
    shutil.copy(source / "checkpoints" / name, webui / "Stable-diffusion" / name)
    lora = "epiNoiseoffset_v2.safetensors"
    shutil.copy(source / "loras" / lora, webui / "Lora" / lora)
    config = tmp_path / "paths.yaml"
    config.write_text(
        "a111:\n  base_path: stable-diffusion-webui/\n"
        "  checkpoints: models/Stable-diffusion\n  loras: |\n    models/Lora\n"
    )
    empty = tmp_path / "models"
    workflow = str(FIXTURES / "lora_api.json")
    assert main(["validate", workflow, "--models-dir", str(empty)]) == 2
    assert "Stable-diffusion" not in capsys.readouterr().err
    argv = ["run", workflow, "--device", "cpu", "--quiet", "--models-dir", str(empty)]
    argv += ["--output-dir", str(tmp_path / "out"), "--extra-model-paths", str(config)]
    assert main(argv) == 0, capsys.readouterr().err

    bad = tmp_path / "bad.yaml"
    bad.write_text("- not: sections\n")
    assert main(["validate", workflow, "--extra-model-paths", str(bad)]) == 2
    assert "bad.yaml" in capsys.readouterr().err
