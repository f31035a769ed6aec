"""Write a set of file changes all or nothing: every write is checked before the first one, every replaced
file is backed up first, and a write that still fails puts the files already written back.

Used by `ranksweep export` (rank constants, adapter copies under a homework root, or one --to config file).
Backups go to `<root>/.ranksweep/backups/<UTC time>/`, beside `homework/` and so never in the submission zip.
"""

from __future__ import annotations

import difflib
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sweep.files import nearest_existing, unwritable_advice, writable
from trainers.data import scratch_file
from trainers.errors import RanksweepError

BACKUPS = ".ranksweep/backups"


@dataclass(frozen=True)
class Change:
    """One file to write: its path (relative to the root it belongs to), old bytes (None: new file), new bytes."""

    path: str
    old: bytes | None
    new: bytes
    source: Path | None = None  # a file already holding `new` (an adapter file), so a dry run need not copy it

    def describe(self) -> str:
        """A unified diff for text, one line for binary adapter weights."""
        if self.path.endswith(".safetensors"):
            verb, old = ("replace", f"{len(self.old):,} bytes") if self.old is not None else ("create", "none")
            return f"{verb} {self.path} ({old} → {len(self.new):,} bytes)"
        # Rank files may be in any declared encoding; the diff is for reading, so undecodable bytes show as �.
        old_lines = self.old.decode("utf-8", "replace").splitlines(keepends=True) if self.old is not None else []
        diff = difflib.unified_diff(old_lines, self.new.decode("utf-8", "replace").splitlines(keepends=True),
                                    "/dev/null" if self.old is None else f"a/{self.path}", f"b/{self.path}")
        return "".join(line if line.endswith(("\n", "\r")) else line + "\n" for line in diff).rstrip("\n")


def inside(root: Path, relpath: str, what: str) -> Path:
    """root/relpath, refused if it (or a symbolic link on the way) leads outside root: ranksweep writes through a
    link only to a file inside root."""
    path = root / relpath
    if not path.resolve().is_relative_to(root.resolve()):
        if Path(os.path.normpath(path.absolute())).is_relative_to(root.absolute()):  # the words stay inside: a link
            raise RanksweepError(f"{what} '{relpath}' is a symbolic link (or lies under one) that leads outside the "
                                 f"homework folder {root}, to {path.resolve()}; ranksweep writes only inside that "
                                 "folder: replace the link with a copy of the file, or name a file inside it.")
        raise RanksweepError(f"{what} '{relpath}' is outside the homework folder {root}; name a file inside it.")
    return path


def target(root: Path, relpath: str) -> Path:
    """Where a change is written: through a symbolic link to the file it points at, so the link stays a link."""
    path = root / relpath
    return path.resolve() if path.is_symlink() else path


def check_writes(root: Path, changes: list[Change], *, backup: bool) -> None:
    """Refuse, before anything is written, a change that cannot be written: a read-only file, a dangling link,
    a folder in the way, or a folder ranksweep may not write in (the backup folder included)."""
    folders = [root / BACKUPS] if backup and any(c.old is not None for c in changes) else []
    for change in changes:
        path = target(root, change.path)
        if (root / change.path).is_symlink() and not path.exists():
            raise RanksweepError(f"{change.path} is a link to {path}, which does not exist; fix the link and export "
                                 "again.")
        if path.exists() and not path.is_file():
            raise RanksweepError(f"{change.path} is not a regular file; move it away and export again.")
        if path.exists() and not writable(path):
            raise RanksweepError(f"{change.path} is read-only, so nothing was written; {unwritable_advice(path)} "
                                 "and export again, or use --dry-run and edit it by hand.")
        folders.append(path.parent)
    for folder in folders:
        existing = nearest_existing(folder)
        if not existing.is_dir() or not writable(existing):
            shown = existing.relative_to(root) if existing.is_relative_to(root) else existing
            raise RanksweepError(f"Cannot write in '{shown}' (read-only or not a folder), so nothing was written; "
                                 "make it writable and export again.")


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes through a temp file in the same folder and os.replace, keeping an old file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = scratch_file(path)  # named by host and pid: a killed export's temp file is removed next time
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _backup(root: Path, changes: list[Change]) -> Path:
    base = inside(root, BACKUPS, "Backup folder")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H-%M-%SZ")
    n = 1
    while True:  # two exports within one second get -2, -3, ...
        folder = base / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir(parents=True)
            break
        except FileExistsError:
            n += 1
    try:
        for change in changes:
            if change.old is not None:
                write_atomic(folder / change.path, change.old)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # half a backup is no backup
        raise
    return folder


def _undo(root: Path, written: list[Change]) -> list[str]:
    """Put back the files already written (old bytes, or no file for a created one); returns what could not be."""
    stuck = []
    for change in reversed(written):
        try:
            if change.old is None:
                target(root, change.path).unlink(missing_ok=True)
            else:
                write_atomic(target(root, change.path), change.old)
        except OSError:
            stuck.append(change.path)
    return stuck


def apply(root: Path, changes: list[Change], *, backup: bool = True) -> Path | None:
    """Check every write, back up every file about to be replaced, then write each change; a failed write puts
    the files already written back and raises RanksweepError. Returns the backup folder (None if none)."""
    check_writes(root, changes, backup=backup)
    folder = None
    if backup and any(c.old is not None for c in changes):
        try:
            folder = _backup(root, changes)
        except OSError as exc:
            raise RanksweepError(f"Backing up the files to replace failed ({exc.strerror or exc}); nothing was "
                                 "changed.") from None
    written: list[Change] = []
    for change in changes:
        try:
            write_atomic(target(root, change.path), change.new)
        except OSError as exc:
            stuck = _undo(root, written)
            done = ", ".join(c.path for c in written)
            if not written:
                after = "nothing was changed"
            elif not stuck:
                after = f"{done} {'was' if len(written) == 1 else 'were'} put back as before, so nothing changed"
            else:
                after = (f"{', '.join(stuck)} could not be put back: copy {'it' if len(stuck) == 1 else 'them'} "
                         f"from {folder.relative_to(root) if folder else 'your own copy'}")
            raise RanksweepError(f"Writing {change.path} failed ({exc.strerror or exc}); {after}.") from None
        written.append(change)
    return folder
