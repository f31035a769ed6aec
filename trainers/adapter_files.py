"""Write a trained adapter folder atomically: PEFT's own files plus training_log.csv and ranksweep.json.

The folder is assembled in a temporary sibling and renamed into place, so a reader never sees half an
adapter and a failed run leaves an older adapter at the same path untouched.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from pathlib import Path

from trainers.data import write_json_atomic

ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINING_LOG = "training_log.csv"
NOTES = "ranksweep.json"


def write_training_log(path: Path, log: list[tuple[int, float, float, float]]) -> None:
    """One CSV row per optimizer step: step, loss, learning rate, seconds since training started."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "lr", "seconds"])
        for step, loss, lr, seconds in log:
            writer.writerow([step, f"{loss:.6f}", f"{lr:.6g}", f"{seconds:.3f}"])


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Put the finished folder in place; an old out_dir is moved aside first and deleted only afterwards."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, old / "adapter")
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_adapter(peft_model, out_dir: Path, adapter_dtype: str, notes: dict, log) -> int:
    """Save the PEFT folder with its log and notes (plus `raw_bytes`) at out_dir; return the weights' bytes."""
    import torch

    if adapter_dtype == "fp16":
        # Cast in place so PEFT's own save path (tensor names, header layout) writes the float16 file.
        for param in peft_model.parameters():
            if param.requires_grad:
                param.data = param.data.to(torch.float16)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        peft_model.save_pretrained(tmp)
        raw_bytes = (tmp / ADAPTER_WEIGHTS).stat().st_size
        write_training_log(tmp / TRAINING_LOG, log)
        write_json_atomic(tmp / NOTES, {**notes, "raw_bytes": raw_bytes})
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return raw_bytes
