"""What the hardware offers: the cores this process may use, and where bfloat16 matmuls are fast (avx512_bf16 or
AMX on a CPU, bf16 support on a GPU)."""

from __future__ import annotations

import contextlib
import os
from functools import lru_cache
from pathlib import Path

from trainers.errors import RanksweepError

# RANKSWEEP_CPU_BF16=1|0 forces bfloat16 weights on or off on a CPU (default: on only with native bf16 math).
CPU_BF16_ENV = "RANKSWEEP_CPU_BF16"
# RANKSWEEP_THREADS=N gives each process N torch threads (N workers on one machine: cores / N each).
THREADS_ENV = "RANKSWEEP_THREADS"


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


def use_bf16(device: str) -> bool:
    """Whether a base model on `device` is held in bfloat16 and trained under bf16 autocast: on CUDA, and on
    CPUs with native bf16 math; RANKSWEEP_CPU_BF16=1|0 forces the choice on a CPU (tests take both paths)."""
    if device.startswith("cuda"):
        return True
    if device != "cpu":
        return False
    forced = os.environ.get(CPU_BF16_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    # Without avx512_bf16/AMX, torch emulates bf16 and a matmul gets several times slower than float32.
    return bf16_is_fast("cpu")


def autocast(device, enabled: bool):
    """bfloat16 autocast on `device` when enabled, a no-op context otherwise."""
    import torch

    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=getattr(device, "type", str(device)), dtype=torch.bfloat16)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: taskset, a container's cpuset), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks on this OS
        return os.cpu_count() or 1


def thread_count(flag: int | None = None) -> int:
    """Torch threads for this process: `flag` (--threads), else $RANKSWEEP_THREADS, else every usable core."""
    if flag is not None:
        return flag
    text = os.environ.get(THREADS_ENV, "").strip()
    if not text:
        return usable_cores()
    if not text.isdigit() or int(text) < 1:
        raise RanksweepError(f"{THREADS_ENV}='{text}' is not valid: give a whole number of 1 or more (threads per "
                             "process), or unset it to use every core.")
    return int(text)


def set_threads(flag: int | None = None) -> int:
    """Give torch (and the commands this process starts, through OMP_NUM_THREADS) `thread_count(flag)` threads.

    Torch's default is every core of the machine, so two processes on one machine each ran a thread per
    core and a training step took 5-10x longer than alone (PRODUCT.md, 2026-12-07).
    """
    import torch

    threads = thread_count(flag)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads
