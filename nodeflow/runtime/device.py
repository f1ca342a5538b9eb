"""Device and dtype policy: cuda > mps > cpu; half precision on a GPU, fp32 on the CPU."""

from __future__ import annotations

from typing import Any

from nodeflow.runtime import collector

DTYPES = ("auto", "fp32", "fp16", "bf16")


def pick_device(name: str = "auto") -> Any:
    with collector.paused():  # usually where a run first imports torch: long-lived objects
        import torch

    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} was asked for but CUDA is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(name: str, device: Any) -> Any:
    import torch

    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
