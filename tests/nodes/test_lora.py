"""LoRA, with diffusers (load_lora_weights + set_adapters, i.e. PEFT) as the oracle: fp32, CPU."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sdgraphs import sd_graph

from nodeflow.context import Environment
from nodeflow.errors import WorkflowInvalid
from nodeflow.workflow import Workflow
from nodes.lora import (
    LoraPatch,
    parse_lora_state,
    patched,
    read_lora_file,
    resolve_lora,
    resolve_lora_path,
)
from nodes.tiny_lora import write_tiny_loras

# Several adapters on one reference pipeline is the point here, not a mistake.
pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config`:UserWarning")

TOLERANCE = 1e-5
SETTINGS = dict(prompt="a red circle", negative="blurry", seed=7, steps=2, width=64, height=64)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loras(models_dir: Path, tiny_path: Path) -> dict[str, Path]:
    """The tiny LoRAs, in the models dir's loras/ so graphs name them relatively."""
    return write_tiny_loras(tiny_path, models_dir / "loras", seed=0, rank=4)


def _fresh_pipeline(folder: Path, cls_name: str = "StableDiffusionPipeline"):
    import diffusers

    pipeline = getattr(diffusers, cls_name).from_pretrained(folder, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def reference(tiny_path: Path, loras: dict[str, Path]):
    """A pipeline of its own (adapters persist on a pipeline) with every tiny LoRA loaded."""
    from diffusers import EulerDiscreteScheduler

    pipeline = _fresh_pipeline(tiny_path)
    pipeline.scheduler = EulerDiscreteScheduler.from_config(pipeline.scheduler.config)
    for name, path in loras.items():
        pipeline.load_lora_weights(str(path), adapter_name=name)
    return pipeline


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    from nodes.tiny import make_tiny_sdxl

    root = tmp_path_factory.mktemp("sdxl")
    folder = make_tiny_sdxl(root / "tiny-xl", seed=0)
    return folder, write_tiny_loras(folder, root / "loras", seed=3, rank=4)


def reference_image(pipeline, adapters: list[str], weights: list) -> np.ndarray:
    pipeline.set_adapters(adapters, adapter_weights=weights)
    generator = torch.Generator("cpu").manual_seed(SETTINGS["seed"])
    return pipeline(
        prompt=SETTINGS["prompt"],
        negative_prompt=SETTINGS["negative"],
        num_inference_steps=SETTINGS["steps"],
        width=SETTINGS["width"],
        height=SETTINGS["height"],
        generator=generator,
        output_type="np",
    ).images


def lora_graph(loras: list[tuple[str, float, float]], **settings) -> Workflow:
    """The standard txt2img graph with a chain of LoadLoRA nodes after the checkpoint."""
    doc = sd_graph(save=False, **{**SETTINGS, **settings}).to_json()
    nodes = doc["nodes"]
    unet, text_encoder = "model.unet", "model.text_encoder"
    for i, (path, strength_unet, strength_text) in enumerate(loras):
        nodes[f"lora{i}"] = {
            "type": "LoadLoRA",
            "inputs": {
                "unet": {"from": unet},
                "text_encoder": {"from": text_encoder},
                "path": path,
                "strength_unet": strength_unet,
                "strength_text_encoder": strength_text,
            },
        }
        unet, text_encoder = f"lora{i}.unet", f"lora{i}.text_encoder"
    for node_id in ("pos", "neg", "sched", "cfg"):
        inputs = nodes[node_id]["inputs"]
        if "unet" in inputs:
            inputs["unet"] = {"from": unet}
        if "text_encoder" in inputs:
            inputs["text_encoder"] = {"from": text_encoder}
    return Workflow.from_json(doc)


def nodeflow_image(executor, loras: list[tuple[str, float, float]]) -> np.ndarray:
    result = executor.run(lora_graph(loras), targets=["decode"])
    assert result.ok, result.error and result.error.traceback
    return result.values["decode"]["image"].pixels.numpy()


# --- parity with diffusers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, strength",
    [
        ("kohya", 0.5),
        ("kohya", 1.0),
        ("peft", 0.5),
        ("peft", 1.0),
    ],
)
def test_a_lora_equals_diffusers(make_executor, reference, loras, name, strength):
    expected = reference_image(reference, [name], [strength])
    actual = nodeflow_image(make_executor(), [(loras[name].name, strength, strength)])
    difference = float(np.abs(actual - expected).max())
    print(f"{name} at {strength}: max difference to diffusers {difference:.2e}")
    assert actual.shape == expected.shape == (1, 64, 64, 3)
    assert difference <= TOLERANCE


def test_two_stacked_loras_with_separate_strengths_equal_diffusers(make_executor, reference, loras):
    expected = reference_image(
        reference, ["kohya", "second"], [{"unet": 1.0, "text_encoder": 0.5}, 0.8]
    )
    actual = nodeflow_image(
        make_executor(), [(loras["kohya"].name, 1.0, 0.5), (loras["second"].name, 0.8, 0.8)]
    )
    difference = float(np.abs(actual - expected).max())
    print(f"stacked: max difference to diffusers {difference:.2e}")
    assert difference <= TOLERANCE


def _state(*models: torch.nn.Module) -> list[tuple[str, torch.Tensor, int]]:
    """Each parameter's name, a copy of its values and the identity of the tensor object."""
    return [
        (name, tensor.detach().clone(), id(tensor))
        for model in models
        for name, tensor in model.state_dict(keep_vars=True).items()
    ]


def test_lora_on_then_off_gives_the_base_pixels_and_leaves_the_weights_alone(make_executor, loras):
    first = make_executor().run(lora_graph([]), targets=["decode", "model"])
    assert first.ok, first.error and first.error.traceback
    parts = first.values["model"]
    unet, encoder = parts["unet"].model, parts["text_encoder"].model
    before = _state(unet, encoder)
    base = first.values["decode"]["image"].pixels.numpy()

    with_lora = nodeflow_image(make_executor(), [(loras["kohya"].name, 1.0, 1.0)])
    again = nodeflow_image(make_executor(), [])

    assert np.abs(with_lora - base).max() > 1e-2  # the LoRA did something
    assert np.array_equal(again, base)  # and nothing of it stayed behind
    after = _state(unet, encoder)
    assert [(n, i) for n, _, i in after] == [(n, i) for n, _, i in before]  # not reassigned
    assert all(torch.equal(a, b) for (_, a, _), (_, b, _) in zip(before, after, strict=True))
    assert not any(_applied(m) for m in (*unet.modules(), *encoder.modules()))


def test_a_lora_for_another_architecture_fails_naming_the_file(make_executor, models_dir):
    missing = "lora_unet_down_blocks_7_attentions_0_proj_in"  # the tiny U-Net has 2 levels
    fits = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    wrong = {
        f"{missing}.lora_down.weight": torch.ones(4, 64, 1, 1),
        f"{missing}.lora_up.weight": torch.ones(64, 4, 1, 1),
        f"{fits}.lora_down.weight": torch.ones(4, 32),
        f"{fits}.lora_up.weight": torch.ones(32, 4),
    }
    save_file(wrong, models_dir / "loras" / "for_another_model.safetensors")
    graph = lora_graph([("for_another_model.safetensors", 1.0, 1.0)])
    result = make_executor().run(graph, targets=["lora0"])
    assert not result.ok and result.error.node == "lora0"
    assert "for_another_model.safetensors" in result.error.message
    assert missing in result.error.message
    assert fits not in result.error.message  # that layer fits; only misses are listed


def test_changing_strength_reuses_the_parsed_file_and_editing_it_rereads(
    make_executor, runtime, models_dir, loras
):
    executor = make_executor()
    name = loras["peft"].name

    def run(strength: float):
        result = executor.run(lora_graph([(name, strength, strength)]), targets=["lora0"])
        assert result.ok, result.error and result.error.traceback
        return result.values["lora0"]

    first = run(1.0)
    loads = runtime.models.loads
    second = run(0.25)
    assert runtime.models.loads == loads
    (before,), (after,) = first["unet"].patches, second["unet"].patches
    assert (before.strength, after.strength) == (1.0, 0.25)
    assert all(after.weights[m] is w for m, w in before.weights.items())  # the same tensors

    path = models_dir / "loras" / name
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    run(0.25)
    assert runtime.models.loads == loads + 1


def test_strength_zero_adds_no_patch_and_absolute_paths_work(make_executor, loras):
    graph = lora_graph([(str(loras["kohya"].resolve()), 0.0, 0.6)])
    result = make_executor().run(graph, targets=["lora0"])
    assert result.ok, result.error and result.error.traceback
    out = result.values["lora0"]
    assert out["unet"].patches == ()
    assert [(p.target, p.strength) for p in out["text_encoder"].patches] == [("text_encoder", 0.6)]


def test_a_relative_path_may_not_leave_the_loras_folder(make_executor, models_dir, loras):
    escaping = "../checkpoints/tiny/unet/diffusion_pytorch_model.safetensors"
    assert (models_dir / "loras" / escaping).is_file()  # the file exists, outside loras/
    with pytest.raises(WorkflowInvalid) as refused:  # refused before anything runs
        make_executor().run(lora_graph([(escaping, 1.0, 1.0)]), targets=["lora0"])
    [issue] = refused.value.issues
    assert (issue.node, issue.input, issue.code) == ("lora0", "path", "file_not_found")
    assert "not inside" in issue.message
    # and the node's own resolver refuses it too, for callers that skip validation
    env = Environment.from_dirs(models_dir, models_dir / "out", models_dir / "in")
    with pytest.raises(ValueError, match="outside"):
        resolve_lora_path(escaping, env)


# --- parity on each model, the U-Net and text encoders called directly ------------------------


def _model_outputs(pipeline, patches=()) -> dict[str, torch.Tensor]:
    """The U-Net's and each text encoder's output on fixed inputs, with ``patches`` applied."""
    gen = torch.Generator().manual_seed(1)
    xl = getattr(pipeline, "text_encoder_2", None) is not None
    sample = torch.randn(2, 4, 16, 16, generator=gen)
    context = torch.randn(2, 77, 64 if xl else 32, generator=gen)
    added = {
        "text_embeds": torch.randn(2, 32, generator=gen),
        "time_ids": torch.randn(2, 6, generator=gen),
    }
    ids = pipeline.tokenizer(["a red circle"], padding="max_length", return_tensors="pt")
    outputs = {}
    with torch.no_grad():
        with patched(pipeline.unet, patches, "unet"):
            outputs["unet"] = pipeline.unet(
                sample, 10, context, added_cond_kwargs=added if xl else None
            ).sample
        for target in ("text_encoder", "text_encoder_2") if xl else ("text_encoder",):
            model = getattr(pipeline, target)
            with patched(model, patches, target):
                outputs[target] = model(ids.input_ids)[0]
    return outputs


def _assert_models_equal_diffusers(base, reference, path: Path, adapter: str, strength: float):
    """``reference`` has ``path`` loaded as ``adapter``; ``base`` is the same model without."""
    reference.set_adapters([adapter], adapter_weights=[strength])
    expected = _model_outputs(reference)
    resolved = _resolve(path, base)
    actual = _model_outputs(
        base, [LoraPatch(t, w, strength, path.name) for t, w in resolved.items()]
    )
    plain = _model_outputs(base)
    for part, value in actual.items():
        difference = float((value - expected[part]).abs().max())
        print(f"{path.name} at {strength}, {part}: max difference to diffusers {difference:.2e}")
        assert (expected[part] - plain[part]).abs().max() > 1e-2  # the LoRA changes this part
        assert difference <= TOLERANCE


@pytest.mark.parametrize("name", ["second", "second_peft"])
def test_more_loras_equal_diffusers_on_each_model(pipe, reference, loras, name):
    """The second LoRA's text layers have no alpha (kohya) or no metadata at all (PEFT)."""
    _assert_models_equal_diffusers(pipe, reference, loras[name], name, -0.7)


# --- reading files ---------------------------------------------------------------------------


def _resolve(path: Path, pipeline) -> dict:
    models = {"unet": pipeline.unet, "text_encoder": pipeline.text_encoder}
    if getattr(pipeline, "text_encoder_2", None) is not None:
        models["text_encoder_2"] = pipeline.text_encoder_2
    return resolve_lora(read_lora_file(path), models)


def test_kohya_and_peft_files_resolve_to_the_same_modules_weights_and_scales(pipe, loras):
    kohya, peft = _resolve(loras["kohya"], pipe), _resolve(loras["peft"], pipe)
    assert kohya.keys() == peft.keys() == {"unet", "text_encoder"}
    unet = kohya["unet"]
    assert "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q" in unet
    assert "mid_block.attentions.0.proj_in" in unet  # a 1x1 convolution in SD 1.x
    assert unet["mid_block.attentions.0.proj_in"].down.ndim == 4
    # transformers 5 flattens CLIPTextModel; the files say text_model.encoder...
    assert "encoder.layers.0.self_attn.q_proj" in kohya["text_encoder"]
    for target in kohya:
        assert kohya[target].keys() == peft[target].keys()
        for module, weights in kohya[target].items():
            other = peft[target][module]
            assert torch.equal(weights.down, other.down) and torch.equal(weights.up, other.up)
            assert weights.scale == other.scale == (0.5 if target == "unet" else 0.75)
    targeted = {
        n for n, _ in pipe.unet.named_modules() if n.endswith(("to_q", "to_out.0", "proj_in"))
    }
    assert targeted <= unet.keys()


def test_scales_without_alphas_and_from_metadata_patterns():
    down, up = torch.ones(4, 8), torch.ones(8, 4)
    kohya = parse_lora_state(
        {"lora_unet_x.lora_down.weight": down, "lora_unet_x.lora_up.weight": up}, None, "k"
    )
    assert kohya.entries[0].weights.scale == 1.0  # kohya without .alpha: alpha = rank

    state = {
        "unet.a.attn1.to_q.lora_A.weight": down,
        "unet.a.attn1.to_q.lora_B.weight": up,
        "unet.a.attn2.to_q.lora_A.weight": down,
        "unet.a.attn2.to_q.lora_B.weight": up,
    }
    assert {e.weights.scale for e in parse_lora_state(state, None, "p").entries} == {1.0}
    metadata = '{"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {"attn1.to_q": 2}}'
    parsed = parse_lora_state(state, {"lora_adapter_metadata": metadata}, "p")
    assert {e.name: e.weights.scale for e in parsed.entries} == {
        "a.attn1.to_q": 0.5,
        "a.attn2.to_q": 2.0,
    }
    rs = '{"unet.r": 4, "unet.lora_alpha": 8, "unet.use_rslora": true}'
    parsed = parse_lora_state(state, {"lora_adapter_metadata": rs}, "p")
    assert parsed.entries[0].weights.scaling(1.0) == pytest.approx(8 / 2)


def test_older_diffusers_key_forms_resolve(pipe):
    block = "down_blocks.1.attentions.0"
    unet, text = (torch.zeros(2, 64), torch.zeros(64, 2)), (torch.zeros(2, 32), torch.zeros(32, 2))
    state = {}
    for stem, (down, up) in {
        f"unet.{block}.transformer_blocks.0.attn1.processor.to_q_lora": unet,
        f"unet.{block}.transformer_blocks.0.attn1.processor.to_out_lora": unet,
        f"unet.{block}.proj_in.lora": (torch.zeros(2, 64, 1, 1), torch.zeros(64, 2, 1, 1)),
        "text_encoder.text_model.encoder.layers.0.self_attn.to_out_lora": text,
        "text_encoder.text_model.encoder.layers.1.mlp.fc2.lora_linear_layer": (
            torch.zeros(2, 37),
            torch.zeros(32, 2),
        ),
    }.items():
        state[f"{stem}.down.weight"] = down
        state[f"{stem}.up.weight"] = up
    resolved = resolve_lora(
        parse_lora_state(state, None, "old.safetensors"),
        {"unet": pipe.unet, "text_encoder": pipe.text_encoder},
    )
    assert set(resolved["unet"]) == {
        f"{block}.transformer_blocks.0.attn1.to_q",
        f"{block}.transformer_blocks.0.attn1.to_out.0",
        f"{block}.proj_in",
    }
    assert set(resolved["text_encoder"]) == {
        "encoder.layers.0.self_attn.out_proj",
        "encoder.layers.1.mlp.fc2",
    }


def test_files_that_are_not_readable_loras_are_refused(tmp_path, pipe):
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"not opened")
    with pytest.raises(ValueError, match=r"only \.safetensors"):
        read_lora_file(pickle)

    loha = {"lora_unet_x.hada_w1_a": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match=r"unsupported keys: lora_unet_x\.hada_w1_a"):
        parse_lora_state(loha, None, "loha.safetensors")

    half = {"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match="no up weight"):
        parse_lora_state(half, None, "half.safetensors")

    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    misfit = {
        f"{name}.lora_down.weight": torch.zeros(4, 48),
        f"{name}.lora_up.weight": torch.zeros(64, 4),
    }
    with pytest.raises(ValueError, match=r"misfit.safetensors .* wrong shape: .*attn1.to_q"):
        resolve_lora(parse_lora_state(misfit, None, "misfit.safetensors"), {"unet": pipe.unet})


def _applied(module: torch.nn.Module) -> bool:
    """Whether a LoRA acts on ``module``: a forward hook, or a fused forward (nodes.lora_fuse)."""
    return bool(module._forward_hooks) or "forward" in vars(module)


def test_hooks_are_removed_on_exceptions_and_the_weights_cast_once(pipe, loras):
    resolved = _resolve(loras["kohya"], pipe)
    patch = LoraPatch("unet", resolved["unet"], 1.0, "kohya")
    module = pipe.unet.get_submodule("mid_block.attentions.0.proj_in")
    with pytest.raises(RuntimeError, match="inside"), patched(pipe.unet, [patch], "unet"):
        assert _applied(module)
        raise RuntimeError("inside")
    assert not any(_applied(m) for m in pipe.unet.modules())
    weights = resolved["unet"]["mid_block.attentions.0.proj_in"]
    first = weights.on(torch.device("cpu"), torch.float64, 4)
    assert first[0].dtype == torch.float64
    assert weights.on(torch.device("cpu"), torch.float64, 4)[0] is first[0]
    with patched(pipe.unet, [patch], "text_encoder"):  # aimed at another model: nothing
        assert not _applied(module)


def test_convolution_loras_with_kernels_and_strides_equal_diffusers(tmp_path, tiny_path, pipe):
    """kohya LoCon layers on 3x3 convolutions (one with stride 2), against diffusers."""
    gen = torch.Generator().manual_seed(5)
    state = {}
    for module in ("down_blocks_0_resnets_0_conv1", "down_blocks_0_downsamplers_0_conv"):
        state[f"lora_unet_{module}.lora_down.weight"] = torch.randn(3, 32, 3, 3, generator=gen)
        state[f"lora_unet_{module}.lora_up.weight"] = torch.randn(32, 3, 1, 1, generator=gen)
        state[f"lora_unet_{module}.alpha"] = torch.tensor(2.0)
    path = tmp_path / "locon.safetensors"
    save_file(state, path)
    reference = _fresh_pipeline(tiny_path)
    reference.load_lora_weights(str(path), adapter_name="locon")
    reference.set_adapters(["locon"], adapter_weights=[0.8])
    patch = LoraPatch("unet", _resolve(path, pipe)["unet"], 0.8, str(path))
    sample = torch.randn(2, 4, 16, 16, generator=gen)
    context = torch.randn(2, 77, 32, generator=gen)
    with torch.no_grad():
        expected = reference.unet(sample, 10, encoder_hidden_states=context).sample
        base = pipe.unet(sample, 10, encoder_hidden_states=context).sample
        with patched(pipe.unet, [patch], "unet"):
            actual = pipe.unet(sample, 10, encoder_hidden_states=context).sample
    print(f"LoCon: max difference to diffusers {float((actual - expected).abs().max()):.2e}")
    assert (expected - base).abs().max() > 1e-2
    assert (actual - expected).abs().max() <= TOLERANCE


# --- SDXL: kohya files name U-Net layers in the original SGM layout --------------------------


def test_sdxl_kohya_sgm_names_resolve_like_the_peft_file(tiny_sdxl):
    from safetensors import safe_open

    folder, files = tiny_sdxl
    with safe_open(str(files["kohya"]), framework="pt") as f:
        keys = list(f.keys())
    assert any(
        k.startswith("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q") for k in keys
    )
    assert any(k.startswith("lora_unet_middle_block_1_proj_in") for k in keys)
    assert any(k.startswith("lora_unet_output_blocks_2_1_") for k in keys)
    assert any(k.startswith("lora_te2_text_model_") for k in keys)
    pipeline = _fresh_pipeline(folder, "StableDiffusionXLPipeline")
    kohya, peft = _resolve(files["kohya"], pipeline), _resolve(files["peft"], pipeline)
    assert kohya.keys() == {"unet", "text_encoder", "text_encoder_2"}
    assert "mid_block.attentions.0.proj_in" in kohya["unet"]
    assert "up_blocks.0.attentions.2.transformer_blocks.0.attn2.to_v" in kohya["unet"]
    for target in kohya:
        assert kohya[target].keys() == peft[target].keys()
        for module, weights in kohya[target].items():
            assert torch.equal(weights.up, peft[target][module].up)


def test_sdxl_loras_equal_diffusers_on_each_model(tiny_sdxl):
    folder, files = tiny_sdxl
    base = _fresh_pipeline(folder, "StableDiffusionXLPipeline")
    reference = _fresh_pipeline(folder, "StableDiffusionXLPipeline")
    for name in ("kohya", "second"):
        reference.load_lora_weights(str(files[name]), adapter_name=name)
    for name in ("kohya", "second"):
        _assert_models_equal_diffusers(base, reference, files[name], name, 0.7)


def test_an_sdxl_lora_on_an_sd1_model_fails_naming_the_file(tiny_sdxl, pipe):
    _, files = tiny_sdxl
    with pytest.raises(ValueError, match=r"first_kohya.safetensors does not fit this model"):
        _resolve(files["kohya"], pipe)


def _with_objective(source: Path, objective: str) -> Path:
    """A copy of ``source`` whose header names the objective its base predicts, as
    ``nodes.demo.train_lora`` writes it."""
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as f:
        state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - not a dict
        metadata = f.metadata() or {}
    path = source.with_name(f"{source.stem}-{objective}.safetensors")
    save_file(state, path, metadata={**metadata, "nodeflow_objective": objective})
    return path


def test_a_lora_for_a_base_of_another_objective_is_refused_naming_the_file(make_executor, loras):
    """The tiny model predicts epsilon: a LoRA naming a v-prediction zero-SNR base is refused
    (the U-Net part; a text-encoder-only use is allowed), one naming epsilon draws as the same
    file without the name does, and a name the loader does not know is refused."""
    executor = make_executor()
    v_file = _with_objective(loras["kohya"], "v-zero-snr")
    result = executor.run(lora_graph([(v_file.name, 1.0, 1.0)]), targets=["decode"])
    assert not result.ok and result.error.node == "lora0"
    assert v_file.name in result.error.message and "'v-zero-snr'" in result.error.message
    assert "prediction_type 'epsilon'" in result.error.message
    assert executor.run(lora_graph([(v_file.name, 0.0, 1.0)]), targets=["decode"]).ok

    eps_file = _with_objective(loras["kohya"], "epsilon")
    expected = nodeflow_image(executor, [(loras["kohya"].name, 1.0, 1.0)])
    np.testing.assert_array_equal(nodeflow_image(executor, [(eps_file.name, 1.0, 1.0)]), expected)

    odd = _with_objective(loras["kohya"], "x0")
    result = executor.run(lora_graph([(odd.name, 1.0, 1.0)]), targets=["decode"])
    assert not result.ok and result.error.node == "lora0"
    assert "nodeflow_objective 'x0'" in result.error.message


def test_the_objective_check_reads_the_model_s_config_as_overridden():
    """``check_objective`` against a scheduler config: what ModelSamplingDiscrete writes counts."""
    from nodes.lora import LoraFile, check_objective

    v_lora = LoraFile(source="/x/style.safetensors", entries=(), objective="v-zero-snr")
    check_objective(v_lora, {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True})
    for config in ({}, {"prediction_type": "v_prediction"}, {"rescale_betas_zero_snr": True}):
        with pytest.raises(ValueError, match=r"style\.safetensors: trained on a 'v-zero-snr'"):
            check_objective(v_lora, config)
    check_objective(LoraFile(source="/x/a.safetensors", entries=()), {"prediction_type": "x"})
