"""The homework submission zip: which files go in, and its exact deflated size.

The submission is a deflate zip of DIR/homework/ (arcnames start with `homework/`) without caches, notes,
trainer checkpoints and training state. The sweep measures each trial's real total from the zipped size of
the tree without its adapter folders and the zipped size of each trial adapter put in place of
homework/sft_model/ and homework/rft_model/ (`combined_bytes`); export zips the real thing.
"""

from __future__ import annotations

import fnmatch
import io
import os
import tempfile
import zipfile
from pathlib import Path

from trainers.errors import RanksweepError

HOMEWORK = "homework"
# Where the homework keeps each kind's adapter, relative to its root: what the submission zips and its loaders read.
ADAPTER_HOMES = {"sft": f"{HOMEWORK}/sft_model", "rft": f"{HOMEWORK}/rft_model"}
SFT_FOLDER, RFT_FOLDER = ADAPTER_HOMES["sft"], ADAPTER_HOMES["rft"]
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
ZIP_END_RECORD = 22  # bytes of a zip's end-of-central-directory record (no comment)

# The homework's rules: folders whose whole content stays out, and file names that stay out anywhere.
EXCLUDED_DIRS = ("__pycache__", "checkpoint-*")
EXCLUDED_FILES = (
    "*.pyc",
    "*.md",
    "events.out.tfevents*",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state*.pth",
    "training_args.bin",
    "trainer_state.json",
)
# Our trainer's notes beside an adapter are for the study, never part of a submission.
OWN_ADAPTER_NOTES = ("training_log.csv", "ranksweep.json")


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _homework_dir(root: Path) -> Path:
    folder = Path(root) / HOMEWORK
    if not folder.is_dir():
        raise RanksweepError(f"'{root}' has no {HOMEWORK}/ folder: pass the directory that holds homework/ and data/.")
    return folder


def _adapter_members(folder: str, source: Path) -> list[tuple[str, Path]]:
    source = Path(source)
    missing = [name for name in ADAPTER_FILES if not (source / name).is_file()]
    if missing:
        raise RanksweepError(
            f"Adapter folder '{source}' lacks {', '.join(missing)}: "
            "point to a folder written by peft's save_pretrained."
        )
    return [(f"{folder}/{name}", source / name) for name in ADAPTER_FILES]


def _tree_members(root: Path) -> list[tuple[str, Path]]:
    root = Path(root)
    members = []
    for current, dirs, files in os.walk(_homework_dir(root)):
        dirs[:] = [d for d in dirs if not _matches(d, EXCLUDED_DIRS)]
        relative = Path(current).relative_to(root).as_posix()
        in_adapter_folder = relative in (SFT_FOLDER, RFT_FOLDER)
        for name in files:
            if _matches(name, EXCLUDED_FILES) or (in_adapter_folder and name in OWN_ADAPTER_NOTES):
                continue
            members.append((f"{relative}/{name}", Path(current) / name))
    return members


def bundle_members(root: Path | None, *, adapters: dict[str, Path] | None = None) -> list[tuple[str, Path]]:
    """The submission's (arcname, source file) pairs sorted by arcname; `adapters` replaces those folders' content."""
    adapters = {folder.rstrip("/"): Path(source) for folder, source in (adapters or {}).items()}
    members = _tree_members(root) if root is not None else []
    for folder, source in adapters.items():
        members = [m for m in members if not m[0].startswith(folder + "/")]
        members += _adapter_members(folder, source)
    return sorted(members)


def _write(members: list[tuple[str, Path]], target) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for arcname, source in members:
            try:
                archive.write(source, arcname)
            except OSError as exc:
                message = f"Cannot read '{source}' for the submission zip ({exc.strerror}); check that file."
                raise RanksweepError(message) from None


def zip_bytes(members: list[tuple[str, Path]]) -> int:
    """The exact size (bytes) of the deflate zip of these members, built in memory as zipfile writes it to disk."""
    buffer = io.BytesIO()  # seekable, so zipfile writes the same headers as for a file (no data descriptors)
    _write(members, buffer)
    return buffer.getbuffer().nbytes


def _adapter_dirs(sft_dir: Path | None, rft_dir: Path | None) -> dict[str, Path]:
    dirs = {SFT_FOLDER: sft_dir, RFT_FOLDER: rft_dir}
    return {folder: Path(source) for folder, source in dirs.items() if source is not None}


def submission_bytes(root: Path | None, *, sft_dir: Path | None = None, rft_dir: Path | None = None) -> int:
    """Zipped submission size (bytes): the homework tree, with sft_dir/rft_dir's adapter files in place if given."""
    adapters = _adapter_dirs(sft_dir, rft_dir)
    if root is None and not adapters:
        raise RanksweepError("Nothing to measure: pass a homework directory or at least one adapter folder.")
    return zip_bytes(bundle_members(root, adapters=adapters))


def combined_bytes(*zips: int) -> int:
    """The size of one zip of all the members of several zips (disjoint member names), from their sizes alone.

    In a deflate zip written by Python's zipfile below the zip64 limits, a member costs the same bytes
    wherever it sits (local header, compressed data, central-directory entry: none depends on the other
    members), and only the end record (ZIP_END_RECORD bytes) is per zip. So a trial adds its adapters'
    zip sizes, measured once when each adapter was trained, to the homework's rest instead of deflating
    the whole submission again (2-3 s a trial for embedded adapters). 0 stands for no zip at all.
    """
    present = [size for size in zips if size]
    if any(size < ZIP_END_RECORD for size in present):
        raise ValueError(f"A zip has at least {ZIP_END_RECORD} bytes, got {present}.")
    total = sum(present) - ZIP_END_RECORD * (len(present) - 1) if present else ZIP_END_RECORD
    if total >= zipfile.ZIP64_LIMIT:
        raise ValueError("Past the zip64 limit member sizes change; measure the zip itself.")
    return total


def rest_bytes(root: Path) -> int:
    """Zipped size (bytes) of homework/ without sft_model/ and rft_model/: what the adapters share the budget with."""
    members = [
        member
        for member in bundle_members(root)
        if not member[0].startswith((SFT_FOLDER + "/", RFT_FOLDER + "/"))
    ]
    return zip_bytes(members)


def write_zip(members: list[tuple[str, Path]], path: Path) -> int:
    """Write the submission zip to path atomically (a temporary file renamed into place); returns its bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        _write(members, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path.stat().st_size
