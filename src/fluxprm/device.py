"""Device and dtype resolution: pick what is fast on the hardware at hand, never assume."""

from __future__ import annotations

import functools

import torch

__all__ = ["resolve_device", "resolve_dtype", "cpu_has_fast_bf16"]


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → the first CUDA device if there is one, else the CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bfloat16 dot products (AVX512-BF16 or AMX).

    Without them PyTorch emulates bfloat16 matmuls and float32 is faster; with them bfloat16 halves
    memory traffic, which is what bounds a small PRM's forward on a CPU.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto`` → bfloat16 on a GPU that supports it and on CPUs with native bf16, else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
             "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}
    if dtype in names:
        return names[dtype]
    if dtype != "auto":
        raise ValueError(f"unknown dtype {dtype!r}: use auto, bfloat16, float16 or float32")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
