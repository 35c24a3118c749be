"""Device and dtype resolution: pick what is fast on the hardware at hand, never assume."""

from __future__ import annotations

import functools

import torch

__all__ = ["resolve_device", "resolve_dtype", "cpu_has_fast_bf16"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` → the first CUDA device if there is one, else the CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this machine has no CUDA GPU (torch {torch.__version__}); "
                         "use --device cpu")
    return dev


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


def resolve_dtype(dtype: str | torch.dtype, device: torch.device, *, cpu_bf16: bool = True) -> torch.dtype:
    """``auto`` → bfloat16 on a GPU that supports it (else float16); on a CPU, bfloat16 when it has native
    bf16 and ``cpu_bf16`` is true, else float32. A dtype name or a ``torch.dtype`` is taken as given.

    ``cpu_bf16=False`` is for models whose outputs must be reproducible rather than fast: the local LLM of
    :mod:`fluxprm.llm` caches each result by (model, prompt, params), so a result must not depend on the
    batch it ran in nor on whether the CPU has bf16. In bfloat16 on an AVX512-BF16 CPU, left padding
    changed SmolLM2-135M's greedy text for 1 of 5 prompts and moved judge log-probs by up to 0.1.
    PRM scoring keeps the default: there bf16 halves the memory traffic that bounds a forward.
    """
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
    return torch.bfloat16 if cpu_bf16 and cpu_has_fast_bf16() else torch.float32
