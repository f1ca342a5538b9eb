"""Run one ComfyUI API-format prompt with ComfyUI's own executor, headless, on the CPU.

Started by ``compare_comfyui.py`` with ComfyUI's Python (its own venv), never imported by
nodeflow::

    COMFY_PYTHON comfyui_runner.py --comfyui DIR --prompt A.json [--prompt B.json ...]
        --models M --input I --output O [--fp32-text-enc]

It runs each prompt through one ``execution.PromptExecutor`` (the code behind ComfyUI's queue;
its cache keeps the checkpoint loaded between prompts), with ComfyUI's command line ``--cpu``
(plus ``--fp32-text-enc`` when asked), and keeps what each ``SaveImage`` node was given, the
float images before ComfyUI turns them into 8 bits, as ``O/<prompt name>/<filename_prefix>.npy``;
ComfyUI's PNGs land beside them as ComfyUI writes them.

torchvision and torchaudio are stood in for by empty modules: ComfyUI imports them at start-up
for model families (Stable Cascade, audio) this run never builds, and no CPU build matching this
torch is at hand. Any use of them fails loudly.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

STAND_INS = ("torchvision", "torchaudio")


class _Missing:
    """What any attribute of a stand-in module is: unusable, and says why."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self.name} is not installed for this comparison run")

    def __getattr__(self, attribute: str) -> _Missing:
        return _missing_attribute(self.name, attribute)

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (object,)


def _missing_attribute(owner: str, attribute: str) -> _Missing:
    if attribute.startswith("__"):  # introspection (inspect, pickle checks) must see nothing
        raise AttributeError(attribute)
    return _Missing(f"{owner}.{attribute}")


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname.split(".")[0] in STAND_INS:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        module.__path__ = []  # type: ignore[attr-defined]
        module.__getattr__ = lambda attribute: _missing_attribute(spec.name, attribute)  # type: ignore[method-assign]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _QuietServer:
    """The server object PromptExecutor reports to: nobody is listening."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, event: str, data: Any, sid: Any = None) -> None:
        return None

    def queue_updated(self) -> None:
        return None


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("--comfyui", "--models", "--input", "--output"):
        parser.add_argument(name, type=Path, required=True)
    parser.add_argument("--prompt", type=Path, action="append", required=True)
    parser.add_argument("--fp32-text-enc", action="store_true")
    args = parser.parse_args()

    sys.meta_path.insert(0, _StandInFinder())
    comfy_dir = args.comfyui.resolve()
    sys.path.insert(0, str(comfy_dir))
    os.chdir(comfy_dir)
    sys.argv = ["main.py", "--cpu", "--disable-all-custom-nodes"]
    if args.fp32_text_enc:
        sys.argv.append("--fp32-text-enc")

    import comfy.options

    comfy.options.enable_args_parsing()
    import folder_paths

    folder_paths.add_model_folder_path(
        "checkpoints", str(args.models.resolve() / "checkpoints"), is_default=True
    )
    folder_paths.set_input_directory(str(args.input.resolve()))

    import numpy as np

    execution = importlib.import_module("execution")
    nodes = importlib.import_module("nodes")  # ComfyUI's nodes.py, not this project's package

    floats: dict[str, Any] = {}
    save_images = nodes.SaveImage.save_images

    def keep_floats(self: Any, images: Any, *rest: Any, **kw: Any) -> Any:
        floats[kw.get("filename_prefix", rest[0] if rest else "ComfyUI")] = images.cpu().numpy()
        return save_images(self, images, *rest, **kw)

    nodes.SaveImage.save_images = keep_floats
    executor = execution.PromptExecutor(
        _QuietServer(), cache_type=execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0}
    )
    for path in args.prompt:
        out = args.output.resolve() / path.stem
        out.mkdir(parents=True, exist_ok=True)
        folder_paths.set_output_directory(str(out))
        floats.clear()
        prompt = json.loads(path.read_text())
        outputs = [key for key, n in prompt.items() if n["class_type"] == "SaveImage"]
        executor.execute(prompt, path.stem, {}, outputs)
        if not executor.success:
            print(json.dumps(executor.status_messages, default=str)[-4000:], file=sys.stderr)
            return 1
        for prefix, array in floats.items():
            np.save(out / f"{prefix}.npy", array.astype(np.float32), allow_pickle=False)
        print(json.dumps({"prompt": path.stem, "saved": sorted(floats)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
