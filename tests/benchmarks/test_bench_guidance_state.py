"""bench_guidance's resumable ``--state``: a batch is reused only for the weights that drew it.

The demo model's decoder was replaced once; under keys made of the settings alone, an old state
file would have filled the new table with the old decoder's scores without a word.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_guidance  # noqa: E402


def test_the_batch_key_names_the_models_and_changes_when_a_weight_file_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nodes import loaders

    demo = tmp_path / "demo-sd"
    shutil.copytree(loaders.demo_model(), demo)  # the copy is what gets changed
    shipped = loaders.demo_model
    monkeypatch.setattr(loaders, "demo_model",
                        lambda name=loaders.DEMO: demo if name == loaders.DEMO else shipped(name))
    args = bench_guidance.parse_args(["--modes", "noised-clip-cfg"])
    before = bench_guidance.models_fingerprint(args)
    assert before == bench_guidance.models_fingerprint(args)  # stable across calls
    key = bench_guidance.batch_key(args, before, "noised-clip-cfg", 30.0, 0)
    assert key.endswith(f"|{before}") and key.startswith("noised-clip-cfg|30|0|")

    weights = demo / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one decoder weight
    weights.write_bytes(bytes(data))
    after = bench_guidance.models_fingerprint(args)
    assert after != before
    assert bench_guidance.batch_key(args, after, "noised-clip-cfg", 30.0, 0) != key
