"""ComfyUI's default templates, in both of its formats, import and run on tiny models placed under
the names the templates use: through ``nodeflow run``, as a user who downloaded them would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nodeflow.cli import main

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "comfyui"
TEMPLATES = ["txt2img", "img2img", "lora", "hires_fix", "sdxl"]


@pytest.mark.parametrize("form", ["api", "ui"])
@pytest.mark.parametrize("name", TEMPLATES)
def test_template_imports_and_runs(name, form, comfy_dirs, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", str(FIXTURES / f"{name}_{form}.json"), "--device", "cpu", "--quiet"]
    argv += ["--output-dir", str(out), "--models-dir", str(comfy_dirs["models"])]
    argv += ["--input-dir", str(comfy_dirs["input"])]
    code = main(argv)
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.strip().splitlines()
    saves = 2 if name == "hires_fix" else 1
    assert len(printed) == saves, printed
    sizes = set()
    for line in printed:
        with Image.open(line.split(": ", 1)[1]) as png:
            sizes.add(png.size)
    assert (96, 96) in sizes if name == "hires_fix" else sizes == {(64, 64)}


def test_both_formats_of_a_template_give_the_same_workflow_nodes():
    from nodeflow.imports import load_path
    from nodeflow.plugins import load_catalog

    loaders = load_catalog().loaders
    for name in TEMPLATES:
        api = load_path(FIXTURES / f"{name}_api.json", loaders).workflow.to_json()["nodes"]
        ui = load_path(FIXTURES / f"{name}_ui.json", loaders).workflow.to_json()["nodes"]
        assert api == ui, name


def test_a_comfyui_png_runs_from_its_prompt_chunk_with_the_layout_of_its_workflow_chunk(
    comfy_dirs, tmp_path, capsys
):
    info = PngInfo()
    info.add_text("prompt", (FIXTURES / "txt2img_api.json").read_text())
    info.add_text("workflow", (FIXTURES / "txt2img_ui.json").read_text())
    png = tmp_path / "ComfyUI_00001_.png"
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    out = tmp_path / "native.json"
    assert main(["import-comfy", str(png), "-o", str(out)]) == 0
    workflow = json.loads(out.read_text())
    assert workflow["nodes"]["3"]["type"] == "Denoise"
    assert workflow["ui"]["nodes"]["3"]["pos"] == [60, 80]
    code = main(
        ["run", str(png), "--device", "cpu", "--quiet", "--output-dir", str(tmp_path / "o"),
         "--models-dir", str(comfy_dirs["models"])]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err


def test_import_comfy_reports_every_problem_and_refuses_other_formats(tmp_path, capsys):
    prompt = json.loads((FIXTURES / "txt2img_api.json").read_text())
    prompt["10"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "x"}}
    prompt["11"] = {"class_type": "SomeCustomNode", "inputs": {}}
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(prompt))
    assert main(["import-comfy", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        "10: ComfyUI node UpscaleModelLoader: upscale models (ESRGAN and the like) are not "
        "supported yet [unmapped_node]" in err
    )
    assert "11: ComfyUI node SomeCustomNode" in err
    native = Path(__file__).resolve().parents[3] / "workflows" / "txt2img.json"
    assert main(["import-comfy", str(native)]) == 2
    assert "not a ComfyUI workflow" in capsys.readouterr().err
    assert main(["import-comfy", str(FIXTURES / "lora_ui.json")]) == 0
    assert json.loads(capsys.readouterr().out)["nodes"]["10"]["type"] == "LoadLoRA"
