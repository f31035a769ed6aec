"""What the hardware runs fast: bfloat16 matmuls need avx512_bf16 or AMX on a CPU, bf16 support on a GPU."""

from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return frozenset()
    for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_is_fast(device) -> bool:
    """True where bfloat16 matmuls beat float32: CPUs with avx512_bf16/amx_bf16, GPUs that support bf16.

    Without those instructions torch emulates bf16 on a CPU, which is slower than float32.
    """
    import torch

    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        return torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())
    return False


def autocast(device, enabled: bool):
    """bfloat16 autocast on `device` when enabled, a no-op context otherwise."""
    import torch

    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=getattr(device, "type", str(device)), dtype=torch.bfloat16)
