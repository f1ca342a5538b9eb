"""Fused linear LoRAs (``nodes.lora_fuse``) compute what the hooks compute, hold the memory cap,
and leave the layer exactly as they found it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nodes import lora_fuse
from nodes.lora import LoraPatch, LoraWeights, patched


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8), nn.Conv2d(1, 1, 1))


def _patch(model: nn.Module, strength: float = 0.7) -> LoraPatch:
    torch.manual_seed(1)
    weights = {}
    for name in ("0", "2"):
        layer = model[int(name)]
        down, up = torch.randn(4, layer.in_features), torch.randn(layer.out_features, 4)
        weights[name] = LoraWeights(down, up, 2.0)
    return LoraPatch("unet", weights, strength, "test.safetensors")


def _run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model[2](model[1](model[0](x)))


def test_fused_layers_compute_what_the_hooks_compute(monkeypatch):
    model, x = _model(), torch.randn(5, 16)
    patch = _patch(model)
    with patched(model, [patch]):
        assert all("forward" in vars(model[i]) and not model[i]._forward_hooks for i in (0, 2))
        fused = _run(model, x)
    monkeypatch.setattr("nodes.lora.FUSE_BYTES", 0)  # nothing fits: every layer hooked
    with patched(model, [patch]):
        assert all("forward" not in vars(model[i]) and model[i]._forward_hooks for i in (0, 2))
        hooked = _run(model, x)
    plain = _run(model, x)
    assert (fused - plain).abs().max() > 1e-2  # the LoRA does something
    torch.testing.assert_close(fused, hooked, rtol=0, atol=1e-5)


def test_the_cap_fuses_the_first_layers_that_fit_and_hooks_the_rest(monkeypatch):
    model = _model()
    first = lora_fuse.fuse_cost(model[0])
    assert first == 32 * 16 * 4
    monkeypatch.setattr("nodes.lora.FUSE_BYTES", first)
    with patched(model, [_patch(model)]):
        assert "forward" in vars(model[0]) and not model[0]._forward_hooks
        assert "forward" not in vars(model[2]) and model[2]._forward_hooks


def test_leaving_the_block_restores_the_layers_bit_for_bit_even_on_errors():
    model, x = _model(), torch.randn(5, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = _run(model, x)
    with pytest.raises(RuntimeError, match="inside"), patched(model, [_patch(model)]):
        raise RuntimeError("inside")
    for layer in model:
        assert "forward" not in vars(layer) and not layer._forward_hooks
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(_run(model, x), plain)


def test_a_layer_whose_forward_was_replaced_is_hooked_not_fused():
    model, x = _model(), torch.randn(5, 16)
    replaced = model[0].forward
    model[0].forward = replaced  # someone else's instance forward: not ours to swap out
    with patched(model, [_patch(model)]):
        assert model[0]._forward_hooks and vars(model[0])["forward"] is replaced
        _run(model, x)
    assert vars(model[0])["forward"] is replaced


def test_a_kohya_convolution_lora_fuses_and_computes_what_its_hook_computes(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1))
    conv, x = model[0], torch.randn(2, 6, 9, 9)
    down, up = torch.randn(4, 6, 3, 3), torch.randn(8, 4, 1, 1)  # LoCon: kernel down, 1x1 up
    patch = LoraPatch("unet", {"0": LoraWeights(down, up, 2.0)}, 0.7, "conv.safetensors")
    plain = conv(x)
    with patched(model, [patch]):
        assert "forward" in vars(conv) and not conv._forward_hooks
        fused = conv(x)
    assert "forward" not in vars(conv) and torch.equal(conv(x), plain)
    monkeypatch.setattr("nodes.lora.FUSE_BYTES", 0)
    with patched(model, [patch]):
        assert conv._forward_hooks
        hooked = conv(x)
    assert (fused - plain).abs().max() > 1e-2
    torch.testing.assert_close(fused, hooked, rtol=0, atol=1e-4)


def test_convolutions_that_cannot_fuse_exactly_report_no_cost():
    conv = nn.Conv2d(6, 8, 3, padding=1)
    kohya = [(torch.randn(4, 6, 3, 3), torch.randn(8, 4, 1, 1), 1.0)]
    assert lora_fuse.fuse_cost(conv, kohya) == 8 * 6 * 3 * 3 * 4
    wide_up = [(torch.randn(4, 6, 3, 3), torch.randn(8, 4, 3, 3), 1.0)]
    assert lora_fuse.fuse_cost(conv, wide_up) is None  # up is not 1x1: not one convolution
    grouped = nn.Conv2d(6, 8, 3, padding=1, groups=2)
    assert (
        lora_fuse.fuse_cost(grouped, [(torch.randn(4, 3, 3, 3), torch.randn(8, 4, 1, 1), 1.0)])
        is None
    )
