"""Write a trained adapter folder atomically: PEFT's own files plus training_log.csv and ranksweep.json.

The folder is assembled in a temporary sibling and renamed into place, so a reader never sees half an
adapter and a failed run leaves an older adapter at the same path untouched.
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import tempfile
from pathlib import Path

from trainers.data import remove_stale_scratch, scratch_prefix, write_json_atomic
from trainers.errors import RanksweepError, TrainingDiverged

ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINING_LOG = "training_log.csv"
NOTES = "ranksweep.json"
ADAPTER_CONFIG = "adapter_config.json"
# Everything a save leaves in an adapter folder (PEFT writes its README.md model card too).
FOLDER_FILES = frozenset({ADAPTER_WEIGHTS, ADAPTER_CONFIG, "README.md", TRAINING_LOG, NOTES})


def is_adapter_folder(path: Path) -> bool:
    """Whether `path` is a folder holding an adapter and nothing else (so replacing it loses no other file)."""
    path = Path(path)
    if not path.is_dir() or not (path / ADAPTER_CONFIG).is_file():
        return False
    return all(entry.name in FOLDER_FILES and entry.is_file() for entry in path.iterdir())


def write_training_log(path: Path, log: list[tuple[int, float, float, float]]) -> None:
    """One CSV row per optimizer step: step, loss, learning rate, seconds since training started."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "lr", "seconds"])
        for step, loss, lr, seconds in log:
            writer.writerow([step, f"{loss:.6f}", f"{lr:.6g}", f"{seconds:.3f}"])


def _replace_dir(tmp: Path, out_dir: Path, replace: bool) -> None:
    """Put the finished folder in place. Replacing: an old out_dir is moved aside first and deleted only afterwards.
    Not replacing: one rename claims out_dir, which succeeds only while out_dir is absent or an empty folder, so of
    two writers that both found it free the second fails here instead of replacing the first's adapter."""
    if not replace:
        try:
            os.rename(tmp, out_dir)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            raise RanksweepError(f"'{out_dir}' was written by another process while this adapter trained; it was left "
                                 "as it is and this adapter was not saved: choose a new path.") from None
        return
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=scratch_prefix(out_dir.name)))
        os.replace(out_dir, old / "adapter")
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_finite(peft_model, adapter_dtype: str) -> None:
    """Refuse to save weights that are not all finite (NaN from a diverged run, or fp16 overflow)."""
    import torch

    bad = [name for name, p in peft_model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
    if bad:
        raise TrainingDiverged(
            f"The trained adapter holds non-finite weights ({len(bad)} tensors, e.g. {bad[0]}) in {adapter_dtype}; "
            "nothing was saved: lower the learning rate" + (", or save in fp32" if adapter_dtype == "fp16" else "") + ".")


def save_adapter(peft_model, out_dir: Path, adapter_dtype: str, notes: dict, log, *, replace: bool = True) -> int:
    """Save the PEFT folder with its log and notes (plus `raw_bytes`) at out_dir; return the weights' bytes.
    `replace=False`: an out_dir that another writer filled meanwhile is kept and a RanksweepError raised."""
    import torch

    if adapter_dtype == "fp16":
        # Cast in place so PEFT's own save path (tensor names, header layout) writes the float16 file.
        for param in peft_model.parameters():
            if param.requires_grad:
                param.data = param.data.to(torch.float16)
    check_finite(peft_model, adapter_dtype)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(out_dir.parent)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=scratch_prefix(out_dir.name)))
    try:
        peft_model.save_pretrained(tmp)
        raw_bytes = (tmp / ADAPTER_WEIGHTS).stat().st_size
        write_training_log(tmp / TRAINING_LOG, log)
        write_json_atomic(tmp / NOTES, {**notes, "raw_bytes": raw_bytes})
        _replace_dir(tmp, out_dir, replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return raw_bytes
