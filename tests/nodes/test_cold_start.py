"""The first picture: a command imports only what it uses, when it uses it; the CLIP tokenizer is
built once per nodeflow home; single-file weights convert exactly (issue 14).

What a process imports is checked in fresh subprocesses, since this test process has imported
everything long before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nodes import clip_vocab, hf
from nodes.clip_vocab import EOS_TOKEN, clip_tokenizer, write_clip_tokenizer
from nodes.single_file import CheckpointFile

ROOT = Path(__file__).resolve().parents[2]
TXT2IMG = ROOT / "workflows" / "txt2img.json"
MODEL_LIBRARIES = ("torch", "numpy", "safetensors", "diffusers", "transformers", "peft", "scipy")
NOT_AT_LOAD = (*MODEL_LIBRARIES, "aiohttp")  # the sweep plugin's route needs aiohttp, loading not
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]  # "a photo of a cat", as CLIP publishes


def python(code: str, tmp_path: Path, **env: str) -> object:
    """Run ``code`` in a fresh interpreter (nodeflow's home in ``tmp_path``); the JSON it prints
    last."""
    environment = {**os.environ, "NODEFLOW_HOME": str(tmp_path / "home"), **env}
    if hf.EAGER_ENV not in env:
        environment.pop(hf.EAGER_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----- imports --------------------------------------------------------------------------------


def test_loading_the_catalog_imports_no_model_library(tmp_path: Path) -> None:
    found = python(
        f"""
        import json, sys
        from nodeflow.plugins import load_catalog
        catalog = load_catalog()
        assert not catalog.failures, catalog.failures
        assert "LoadCheckpoint" in catalog.nodes
        print(json.dumps([m for m in {NOT_AT_LOAD!r} if m in sys.modules]))
        """,
        tmp_path,
    )
    assert found == []


@pytest.mark.parametrize("command", [["nodes"], ["validate", str(TXT2IMG)], ["plugins"]])
def test_listing_and_validating_import_no_model_library(tmp_path: Path, command) -> None:
    found = python(
        f"""
        import contextlib, io, json, sys
        from nodeflow.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            assert main({command!r}) == 0
        print(json.dumps([m for m in {NOT_AT_LOAD!r} if m in sys.modules]))
        """,
        tmp_path,
    )
    assert found == []


UNUSED_BY_SD = (
    "diffusers.models.unets.unet_1d",
    "diffusers.models.unets.unet_3d_condition",
    "diffusers.models.transformers.prior_transformer",
    "diffusers.models.autoencoders.autoencoder_tiny",
)
"""Siblings of the modules a Stable Diffusion run uses, which their packages' ``__init__``
would import."""


def test_a_txt2img_run_runs_only_the_library_code_it_uses(tmp_path: Path) -> None:
    found = python(
        f"""
        import json, sys
        from nodeflow.cli import main
        assert main(["run", {str(TXT2IMG)!r}, "--quiet", "--output-dir", "out"]) == 0
        from nodes import hf
        print(json.dumps({{
            "unused siblings": [m for m in {UNUSED_BY_SD!r} if m in sys.modules],
            "deferred and never needed": [m for m in hf.DEFERRED if not hf.imported(m)],
            "used": [m for m in ("torch", "diffusers", "transformers") if hf.imported(m)],
        }}))
        """,
        tmp_path,
    )
    assert found == {
        "unused siblings": [],
        "deferred and never needed": list(hf.DEFERRED),  # scipy.stats: euler needs no beta sigmas
        "used": ["torch", "diffusers", "transformers"],
    }
    assert len(list((tmp_path / "out").glob("txt2img_*.png"))) == 1


def test_deferred_modules_still_work_when_used(tmp_path: Path) -> None:
    found = python(
        """
        import json
        from nodes import hf
        diffusers = hf.diffusers()
        assert not hf.imported("diffusers.models.unets")
        unet_class = diffusers.UNet2DConditionModel
        assert not hf.imported("diffusers.models.unets")
        from diffusers.models.unets import UNet1DModel  # the package's own __init__ runs now
        assert hf.imported("diffusers.models.unets") and UNet1DModel.__name__ == "UNet1DModel"
        import diffusers.models.unets as unets
        assert unets.UNet2DConditionModel is unet_class
        scheduler = diffusers.EulerDiscreteScheduler(use_beta_sigmas=True)  # uses scipy.stats
        scheduler.set_timesteps(4)
        assert hf.imported("scipy.stats")
        import scipy.stats
        lms = diffusers.LMSDiscreteScheduler()  # scipy.integrate
        lms.set_timesteps(4)
        print(json.dumps([scipy.stats.norm.cdf(0.0), len(scheduler.sigmas), len(lms.sigmas)]))
        """,
        tmp_path,
    )
    assert found == [0.5, 5, 5]


def test_eager_imports_switch_turns_deferring_off(tmp_path: Path) -> None:
    found = python(
        """
        import json, sys
        from nodes import hf
        hf.diffusers().UNet2DConditionModel
        print(json.dumps(["diffusers.models.unets.unet_1d" in sys.modules,
                          hf.imported("diffusers.models.unets")]))
        """,
        tmp_path,
        NODEFLOW_EAGER_IMPORTS="1",
    )
    assert found == [True, True]


def test_defer_runs_a_package_init_on_first_use_only(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "deferme"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import os\nos.environ['DEFERME_INIT'] = str(int(os.environ.get('DEFERME_INIT', 0)) + 1)\n"
        "from .heavy import VALUE\n"
    )
    (package / "heavy.py").write_text("VALUE = 42\n")
    (package / "light.py").write_text("NAME = 'light'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DEFERME_INIT", raising=False)
    try:
        module = hf.defer("deferme")
        assert module is not None and not hf.imported("deferme")
        assert hf.defer("deferme") is None  # already there
        from deferme.light import NAME

        assert NAME == "light"
        assert "DEFERME_INIT" not in os.environ and "deferme.heavy" not in sys.modules
        from deferme import VALUE

        assert VALUE == 42 and os.environ["DEFERME_INIT"] == "1" and hf.imported("deferme")
        assert module.heavy.VALUE == 42 and os.environ["DEFERME_INIT"] == "1"
        with pytest.raises(AttributeError):
            module.missing  # noqa: B018
    finally:
        for name in ("deferme", "deferme.light", "deferme.heavy"):
            sys.modules.pop(name, None)


# ----- the CLIP tokenizer cache --------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("NODEFLOW_HOME", str(tmp_path / "home"))
    clip_tokenizer.cache_clear()
    yield tmp_path / "home"
    clip_tokenizer.cache_clear()


def built_without_cache(tmp_path: Path, pad_token: str = EOS_TOKEN):
    folder = tmp_path / f"plain-{len(pad_token)}"
    write_clip_tokenizer(folder, pad_token=pad_token)
    return hf.transformers().CLIPTokenizer.from_pretrained(folder, local_files_only=True)


TEXTS = ["a photo of a cat", "A Photo of a CAT, high quality", "zqx ünïcode 🙂 日本語", ""]


def ids(tokenizer, texts=TEXTS) -> list[list[int]]:
    return [
        tokenizer(t, padding="max_length", max_length=77, truncation=True).input_ids for t in texts
    ]


@pytest.mark.parametrize("pad_token", [EOS_TOKEN, "!"])
def test_tokenizer_is_written_to_the_home_and_tokenizes_as_built(home, tmp_path, pad_token):
    tokenizer = clip_tokenizer(pad_token)
    (folder,) = (home / "tokenizers").iterdir()
    assert folder.name == clip_vocab.tokenizer_cache_key(pad_token)
    assert {p.name for p in folder.iterdir()} == {
        "vocab.json",
        "merges.txt",
        "special_tokens_map.json",
        "tokenizer_config.json",
        "nodeflow-manifest.json",
    }
    assert tokenizer("a photo of a cat").input_ids == CAT_IDS
    assert tokenizer.pad_token == pad_token
    assert ids(tokenizer) == ids(built_without_cache(tmp_path, pad_token))


def test_tokenizer_is_read_back_not_rebuilt(home, monkeypatch) -> None:
    first = ids(clip_tokenizer())
    folder = home / "tokenizers" / clip_vocab.tokenizer_cache_key()
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    clip_tokenizer.cache_clear()  # as a new process

    def no_building(*args, **kwargs):
        raise AssertionError("the tokenizer was built again")

    monkeypatch.setattr(clip_vocab, "write_clip_tokenizer", no_building)
    assert ids(clip_tokenizer()) == first
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps


@pytest.mark.parametrize(
    "damage",
    ["truncate merges", "flip a vocab byte", "garbage manifest", "no manifest", "extra file"],
)
def test_a_damaged_cached_tokenizer_is_rebuilt(home, tmp_path, damage) -> None:
    clip_tokenizer()
    folder = home / "tokenizers" / clip_vocab.tokenizer_cache_key()
    if damage == "truncate merges":
        merges = folder / "merges.txt"
        merges.write_bytes(merges.read_bytes()[:100_000])  # fewer merges: other ids, silently
    elif damage == "flip a vocab byte":
        vocab = bytearray((folder / "vocab.json").read_bytes())
        vocab[5000] ^= 1
        (folder / "vocab.json").write_bytes(bytes(vocab))
    elif damage == "garbage manifest":
        (folder / "nodeflow-manifest.json").write_text("{not json")
    elif damage == "no manifest":
        (folder / "nodeflow-manifest.json").unlink()
    else:  # transformers would prefer a tokenizer.json to vocab.json + merges.txt
        (folder / "tokenizer.json").write_text("{}")
    clip_tokenizer.cache_clear()
    tokenizer = clip_tokenizer()
    assert ids(tokenizer) == ids(built_without_cache(tmp_path))
    assert tokenizer("a photo of a cat").input_ids == CAT_IDS
    assert clip_vocab._intact(folder)
    assert [p.name for p in (home / "tokenizers").iterdir()] == [folder.name]  # no leftovers


def test_an_unwritable_home_still_gives_the_tokenizer(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NODEFLOW_HOME", str(blocker))
    clip_tokenizer.cache_clear()
    try:
        assert clip_tokenizer()("a photo of a cat").input_ids == CAT_IDS
    finally:
        clip_tokenizer.cache_clear()


def test_the_cache_key_follows_the_shipped_merges(monkeypatch, tmp_path) -> None:
    key = clip_vocab.tokenizer_cache_key()
    assert key != clip_vocab.tokenizer_cache_key("!")
    copy = tmp_path / "bpe.txt.gz"
    copy.write_bytes(clip_vocab.BPE_FILE.read_bytes() + b"\0")
    monkeypatch.setattr(clip_vocab, "BPE_FILE", copy)
    assert clip_vocab.tokenizer_cache_key() != key


# ----- single-file dtype conversion ------------------------------------------------------------


def test_converted_tensors_are_exact_and_read_again_alike(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    stored = {
        "a.half": (torch.randn(3, 5, 7, generator=generator) * 100).half(),
        "b.odd": torch.randn(3, generator=generator).half(),  # odd size: next tensor unaligned
        "c.bf16": torch.randn(4097, generator=generator).bfloat16(),  # crosses a page
        "d.fp32": torch.randn(2, 3, generator=generator),
        "e.empty": torch.zeros(0, 4, dtype=torch.float16),
        "f.ints": torch.arange(6, dtype=torch.int64),
        "g.big": torch.randn(300_000, generator=generator).half(),
    }
    path = tmp_path / "mixed.safetensors"
    save_file(stored, path)
    file = CheckpointFile(path)
    for _ in range(2):  # the mapped pages are released after each conversion: read them again
        read = file.read("", torch.float32)
        assert list(read) == list(stored)
        for key, original in stored.items():
            expected = original.to(torch.float32) if original.is_floating_point() else original
            assert read[key].dtype == expected.dtype and read[key].shape == expected.shape, key
            assert torch.equal(read[key], expected), key
    halves = CheckpointFile(path).read("", torch.float16)
    assert torch.equal(halves["d.fp32"], stored["d.fp32"].half())
    assert torch.equal(halves["a.half"], stored["a.half"])


# ----- the process's exit -------------------------------------------------------------------------


def test_the_command_freezes_the_collector_at_exit_and_library_calls_do_not(tmp_path) -> None:
    """Run as the process's command (no argv given), main registers an exit handler that
    freezes the cycle collector, so shutdown does not scan every object the run imported; called
    with arguments (tests, applications) it leaves the collector alone."""
    found = python(
        """
        import atexit, contextlib, gc, io, json, sys
        from nodeflow.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            main(["nodes"])
        as_library = gc.isenabled()
        atexit._run_exitfuncs()
        after_library = gc.isenabled()
        sys.argv = ["nodeflow", "nodes"]
        with contextlib.redirect_stdout(io.StringIO()):
            main()
        before_exit = gc.isenabled()
        atexit._run_exitfuncs()
        print(json.dumps([as_library, after_library, before_exit, gc.isenabled(),
                          gc.get_freeze_count() > 0]))
        """,
        tmp_path,
    )
    assert found == [True, True, True, False, True]
