"""Primitive nodes feed widgets turned into inputs, several nodes at once, from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from nodeflow.cli import main
from nodeflow.plugins import load_catalog
from nodeflow.validate import validate
from nodeflow.workflow import Workflow

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def txt2img() -> dict:
    return json.loads((WORKFLOWS / "txt2img.json").read_text())


def test_primitives_are_listed_with_the_types_a_converted_widget_takes():
    catalog = load_catalog()
    outputs = {t: [(o.name, o.type) for o in catalog.spec(t).outputs] for t in
               ("Int", "Float", "String", "Boolean", "Seed", "Combo")}  # fmt: skip
    assert outputs == {
        "Int": [("int", "INT")],
        "Float": [("float", "FLOAT")],
        "String": [("string", "STRING")],
        "Boolean": [("boolean", "BOOLEAN")],
        "Seed": [("seed", "INT")],
        "Combo": [("string", "STRING")],
    }
    assert catalog.spec("Denoise").inputs["seed"].type == "INT"
    assert catalog.spec("Scheduler").inputs["name"].type == "STRING"  # what a Combo feeds
    seed = catalog.spec("Seed").to_json()["inputs"]["seed"]["schema"]
    assert seed["x-nodeflow"]["seed"] is True  # the editor shows randomize/increment


def test_a_primitive_value_is_checked_by_the_widget_it_feeds():
    catalog = load_catalog()
    document = txt2img()
    document["nodes"]["size"] = {"type": "Int", "inputs": {"value": 64}}
    for name in ("width", "height"):
        document["nodes"]["empty"]["inputs"][name] = {"from": "size.int"}
    document["nodes"]["name"] = {"type": "Combo", "inputs": {"value": "euler"}}
    document["nodes"]["sched"]["inputs"]["name"] = {"from": "name.string"}
    assert validate(Workflow.from_json(document), catalog)[1] == []
    document["nodes"]["flag"] = {"type": "Boolean", "inputs": {}}
    document["nodes"]["empty"]["inputs"]["width"] = {"from": "flag.boolean"}
    _, issues = validate(Workflow.from_json(document), catalog)
    assert [(i.node, i.input, i.code) for i in issues] == [("empty", "width", "type_mismatch")]


def test_a_seed_primitive_feeds_two_denoise_seeds_from_the_cli(tmp_path, capsys):
    document = txt2img()
    nodes = document["nodes"]
    nodes["seed"] = {"type": "Seed", "inputs": {"seed": 7}}
    nodes["denoise"]["inputs"]["seed"] = {"from": "seed.seed"}
    nodes["denoise2"] = json.loads(json.dumps(nodes["denoise"]))
    nodes["denoise2"]["inputs"]["guider"] = {"from": "cfg2.guider"}
    nodes["cfg2"] = json.loads(json.dumps(nodes["cfg"]))
    nodes["cfg2"]["inputs"]["scale"] = 3.0
    decode = {"vae": {"from": "model.vae"}, "latent": {"from": "denoise2.latent"}}
    nodes["decode2"] = {"type": "VAEDecode", "inputs": decode}
    save = {"image": {"from": "decode2.image"}, "prefix": "second"}
    nodes["save2"] = {"type": "SaveImage", "inputs": save}
    shared = tmp_path / "shared.json"
    shared.write_text(json.dumps(document))
    common = ["--device", "cpu", "--models-dir", str(tmp_path / "models"), "--quiet"]
    common += ["--set", "sched.steps=2"]

    def pictures(path: Path, out: Path, *extra: str) -> dict[str, bytes]:
        code = main(["run", str(path), "--output-dir", str(out), *common, *extra])
        assert code == 0, capsys.readouterr().err
        found = {}
        for line in capsys.readouterr().out.strip().splitlines():
            node_id, _, file = line.partition(": ")
            with Image.open(file) as png:
                found[node_id] = png.tobytes()
        return found

    both = pictures(shared, tmp_path / "shared")
    assert set(both) == {"save", "save2"} and both["save"] != both["save2"]  # other CFG scales
    alone = pictures(WORKFLOWS / "txt2img.json", tmp_path / "alone", "--set", "denoise.seed=7")
    assert alone["save"] == both["save"]  # the primitive's seed reached the first Denoise
    other = pictures(shared, tmp_path / "other", "--set", "seed.seed=8")
    assert other["save"] != both["save"] and other["save2"] != both["save2"]  # and the second
