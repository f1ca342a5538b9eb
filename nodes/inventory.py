"""What the models dir holds: each model file or folder, by kind, with its detected architecture.

Reading a safetensors header costs a few kilobytes whatever the file's size, so listing a folder
of multi-GB checkpoints is instant. Pickle files are never opened here (opening one runs code);
they are listed as such. The built-in names (``demo``, ``demo-style``, ...) are listed too, since
workflows can use them with an empty models dir, each saying whether it is the trained demo model
or a random tiny test model; the random ones are never made just to be listed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from nodeflow import Environment
from nodes.files import FILE_KINDS
from nodes.loaders import BUILT_IN, BUILT_IN_CHECKPOINTS, BUILT_IN_LORAS, demo_lora
from nodes.paths import MODEL_KINDS
from nodes.single_file import PICKLE_SUFFIXES, SAFE_SUFFIXES, CheckpointFile, detect

PIPELINE_NAMES = {
    "StableDiffusionPipeline": "Stable Diffusion",
    "StableDiffusionXLPipeline": "SDXL",
    "KandinskyV22PriorPipeline": "Kandinsky 2.2 prior",
    "KandinskyV22Pipeline": "Kandinsky 2.2 decoder",
    "StableUnCLIPPipeline": "Stable unCLIP",
    "StableDiffusion3Pipeline": "SD3",
    "FluxPipeline": "Flux",
}


@dataclass(frozen=True)
class ModelEntry:
    kind: str
    """The models-dir subfolder it is in (checkpoints, loras, vae, ...)."""
    name: str
    size: int | None
    """Bytes on disk; None for a built-in model not made yet."""
    architecture: str
    built_in: bool = False
    """A built-in name (no file in the models dir): what ``path: "demo"`` and the like load."""


def describe(path: Path) -> str:
    """One line saying what a model file or diffusers folder is, or why that is unknown."""
    if path.is_dir():
        return _describe_folder(path)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return "pickle file (not inspected; needs --allow-pickle to load)"
    try:
        return detect(CheckpointFile(path)).describe()
    except Exception as error:  # a broken file is listed, not fatal to the listing
        return f"unreadable: {error}"


def _describe_folder(path: Path) -> str:
    index = path / "model_index.json"
    config = path / "config.json"
    try:
        if index.is_file():
            name = json.loads(index.read_text()).get("_class_name", "?")
            return f"{_pipeline_name(path, name)} diffusers folder"
        if config.is_file():
            name = json.loads(config.read_text()).get("_class_name") or ",".join(
                json.loads(config.read_text()).get("architectures", ["?"])
            )
            return f"{name} diffusers component folder"
    except (OSError, ValueError) as error:
        return f"unreadable: {error}"
    return "folder (not a model)"


def _pipeline_name(path: Path, class_name: str) -> str:
    """SD 1.x and 2.x share a pipeline class; the U-Net's attention projections tell them apart."""
    if class_name != "StableDiffusionPipeline":
        return PIPELINE_NAMES.get(class_name, class_name)
    unet = json.loads((path / "unet" / "config.json").read_text())
    scheduler = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    name = "SD 2.x" if unet.get("use_linear_projection") else "SD 1.x"
    traits = ["v-prediction"] if scheduler.get("prediction_type") == "v_prediction" else []
    traits += ["zero terminal SNR"] if scheduler.get("rescale_betas_zero_snr") else []
    return f"{name} ({', '.join(traits)})" if traits else name


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def list_models(models_dir: Path) -> list[ModelEntry]:
    entries = []
    for kind in MODEL_KINDS:
        folder = models_dir / kind
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            is_weights = path.suffix.lower() in SAFE_SUFFIXES + PICKLE_SUFFIXES
            if path.name.startswith(".") or not (path.is_dir() or is_weights):
                continue
            entries.append(ModelEntry(kind, path.name, _size(path), describe(path)))
    return entries


def built_in_models(models_dir: Path) -> list[ModelEntry]:
    """The built-in names a workflow can use, and what each is. A name the models dir has a file
    for is left out: that file is what the name loads (it is listed with the files)."""
    env = Environment.from_dirs(models_dir)
    shipped = {**BUILT_IN, **{name: demo_lora(name) for name in BUILT_IN_LORAS}}
    entries = []
    for kind, names in (("checkpoints", BUILT_IN_CHECKPOINTS), ("loras", BUILT_IN_LORAS)):
        for name, what in names.items():
            if FILE_KINDS[kind].find(name, env) != name:  # a file of that name wins
                continue
            size = _size(shipped[name]) if name in shipped else None
            entries.append(ModelEntry(kind, name, size, what, built_in=True))
    return entries


def format_table(entries: list[ModelEntry], models_dir: Path) -> str:
    files = [e for e in entries if not e.built_in]
    built_in = [e for e in entries if e.built_in]
    width = max((len(f"{e.kind}/{e.name}") for e in entries), default=0)

    def line(e: ModelEntry) -> str:
        size = f"{'-':>9}   " if e.size is None else f"{e.size / 1e6:9.1f} MB"
        return f"{f'{e.kind}/{e.name}':<{width}}  {size}  {e.architecture}"

    lines = [line(e) for e in files]
    if not files:
        lines.append(f"no models found in {models_dir.resolve()} ({', '.join(MODEL_KINDS)})")
    if built_in:
        lines += ["", "built in (what these names load when the models dir has no such file):"]
        lines += [line(e) for e in built_in]
    return "\n".join(lines)


def as_json(entries: list[ModelEntry]) -> str:
    return json.dumps([asdict(entry) for entry in entries], indent=2)
