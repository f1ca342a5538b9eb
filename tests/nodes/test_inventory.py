"""``nodeflow models``: what the models dir holds, and the built-in names a workflow can use."""

from __future__ import annotations

import json

from nodeflow.cli import main
from nodes.loaders import BUILT_IN_CHECKPOINTS, BUILT_IN_LORAS


def test_an_empty_models_dir_still_lists_the_built_in_names(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("NODEFLOW_HOME", str(home))
    models = tmp_path / "models"
    assert main(["models", "list", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"no models found in {models}")
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.count("/") == 1}
    assert set(rows) == {f"checkpoints/{n}" for n in BUILT_IN_CHECKPOINTS} | {
        f"loras/{n}" for n in BUILT_IN_LORAS
    }
    for name in ("demo", "demo.safetensors"):
        assert "trained demo model" in rows[f"checkpoints/{name}"]
        assert " MB " in rows[f"checkpoints/{name}"]  # shipped: it has a size
    assert "trained demo model's style LoRA" in rows["loras/demo-style"]
    for name in ("demo-sdxl", "demo-kandinsky-prior", "demo-kandinsky-decoder",
                 "demo-clip-vision", "demo-stable-unclip"):  # fmt: skip
        assert "random tiny test model" in rows[f"checkpoints/{name}"]
    assert not home.exists()  # listed, not made

    monkeypatch.chdir(tmp_path)
    assert main(["models"]) == 0  # ``list`` of ./models is the default action
    assert capsys.readouterr().out == out


def test_a_file_of_a_built_in_name_is_listed_instead_and_json_marks_built_ins(tmp_path, capsys):
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / "demo.safetensors").write_bytes(b"")  # shadows the built-in one
    assert main(["models", "list", "--models-dir", str(models), "--json"]) == 0
    entries = {(e["kind"], e["name"]): e for e in json.loads(capsys.readouterr().out)}
    assert entries["checkpoints", "demo.safetensors"]["built_in"] is False
    assert entries["checkpoints", "demo"]["built_in"] is True
    assert entries["checkpoints", "demo-sdxl"] == {
        "kind": "checkpoints",
        "name": "demo-sdxl",
        "size": None,
        "architecture": BUILT_IN_CHECKPOINTS["demo-sdxl"],
        "built_in": True,
    }


def test_a_zero_snr_folder_says_so(zero_snr_models, capsys):
    assert main(["models", "list", "--models-dir", str(zero_snr_models)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    zsnr, vpred = rows["checkpoints/tiny-zsnr"], rows["checkpoints/tiny-vpred"]
    assert "SD 1.x (v-prediction, zero terminal SNR) diffusers folder" in zsnr
    assert "SD 1.x (v-prediction) diffusers folder" in vpred
