"""Rules about the user's paths that several floors share: may ranksweep write here, which folder it would write
in, and can a study name also name a folder."""

from __future__ import annotations

import array
import fcntl
import os
import shlex
from pathlib import Path

from sweep.shell import command
from trainers.errors import RanksweepError

MAX_STUDY_NAME_BYTES = 200  # the report folder is named after the study and file names stop at 255 bytes


def writable(path: Path) -> bool:
    """Whether ranksweep may write in or over `path`: the OS allows it and, since root ignores file modes,
    someone has not marked it read-only either."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return os.access(path, os.W_OK) and bool(mode & 0o222)


# Linux inode flags (FS_IOC_GETFLAGS): `chattr +i` / `chattr +a`. Root's writes fail on them whatever the mode says.
_FS_IOC_GETFLAGS = 0x80086601
_IMMUTABLE_OR_APPEND = 0x10 | 0x20


def _inode_flags(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return 0
    try:
        flags = array.array("l", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        return flags[0]
    except OSError:  # a file system without inode flags
        return 0
    finally:
        os.close(fd)


def unwritable_advice(path: Path) -> str:
    """What makes a path `writable` refused writable again: chmod only when its mode is what forbids it."""
    path = Path(path)
    if _inode_flags(path) & _IMMUTABLE_OR_APPEND:
        return (f"it is marked immutable or append-only (lsattr shows it), which no chmod changes: remove the mark "
                f"with `{command('chattr', '-i', '-a', path)}` (as root)")
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "it lies on a file system mounted read-only: remount it read-write or copy the tree elsewhere"
        stat = path.stat()
    except OSError:
        return "make it writable"
    if stat.st_uid not in (os.getuid(), 0) and os.getuid() != 0:
        return f"it belongs to another user (uid {stat.st_uid}): ask them, or copy the tree and export into the copy"
    return "make it writable (chmod u+w)"


def nearest_existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists: the folder a write under `path` would start in."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def writable_folder(folder: Path, flag: str) -> Path:
    """Refuse a folder that cannot be created (a path under a regular file, a read-only parent) before the
    study is created or anything trained; nothing is written here."""
    existing = nearest_existing(folder.absolute())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RanksweepError(f"Cannot write to {flag} '{folder}': '{existing}' is not a writable folder; "
                             "choose another path.")
    return folder


def unusable_study_name(text: str) -> str | None:
    """Why `text` cannot be a study name that also names its report folder (empty, only dots, a control
    character, over MAX_STUDY_NAME_BYTES), as a sentence to show; None when it can."""
    problem = None
    if not text.strip():
        problem = "it is empty"
    elif set(text) <= {"."}:
        problem = "a name made only of dots cannot name a folder"
    elif any(ord(c) < 32 or ord(c) == 127 for c in text):
        problem = "it holds a control character"
    elif len(text.encode("utf-8")) > MAX_STUDY_NAME_BYTES:
        problem = f"it is longer than {MAX_STUDY_NAME_BYTES} bytes"
    if problem is None:
        return None
    shown = shlex.quote(text if len(text) <= 60 else text[:40] + "...")
    return f"{shown} is not a usable study name ({problem}); pick a short name such as hw3"
