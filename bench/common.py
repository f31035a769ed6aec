"""Shared pieces of the benchmarks: the machine description, medians, the matmul reference, tables, JSON results.

Benchmarks are run by hand (`python bench/<name>.py`), never by `make test`: their numbers depend on the
machine and on whatever else it is running, so each comparison runs both sides in one process run, on
the same model and data, and reports the ratio of medians.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def machine() -> dict:
    """CPU model, core count, library versions and whether a GPU was visible."""
    import torch

    model = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    versions = {}
    for name in ("transformers", "peft", "optuna"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": caps.get("cpu_capability") if isinstance(caps, dict) else None,
        "avx512_bf16": bool(isinstance(caps, dict) and caps.get("avx512_bf16")),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **versions,
        "cuda": torch.cuda.is_available(),
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    """Wall seconds of one call, and its result."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def matmul_gflops(n: int = 2048, repeats: int = 5, dtype: str = "float32") -> float:
    """Median dense n×n matmul rate on this CPU (GFLOP/s, 2·n³ FLOPs per product)."""
    import torch

    kind = getattr(torch, dtype)
    a, b = torch.randn(n, n, dtype=kind), torch.randn(n, n, dtype=kind)
    a @ b  # warm-up
    rates = []
    for _ in range(repeats):
        seconds, _ = timed(torch.matmul, a, b)
        rates.append(2 * n**3 / seconds / 1e9)
    return median(rates)


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (MiB; ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain fixed-width text table of `columns` from `rows`."""
    def cell(value):
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    cells = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def write_result(name: str, args, payload: dict) -> Path:
    """Write bench/results/<name>.json with the command, sizes, machine and results; return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "command": "python " + " ".join(shlex.quote(a) for a in [f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "args": {k: v for k, v in vars(args).items()},
        "measured_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        **payload,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    return path
