"""Read and write the homework's JSON data formats, with validation that names the first bad entry.

train.json / valid.json: a JSON list of [question, answer]            e.g. ["How many gram are there per 6 kg?", 6000.0]
rft.json:                a JSON list of [question, answer, reasoning]  the reasoning ends in <answer>6000</answer>
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from trainers.errors import RanksweepError
from trainers.processes import alive


@dataclass(frozen=True)
class QA:
    """One question with its float answer."""

    question: str
    answer: float


@dataclass(frozen=True)
class RFTRow:
    """One question, its answer and a reasoning chain that ends in <answer>…</answer>."""

    question: str
    answer: float
    reasoning: str


def parse_json(text: str | bytes):
    """json.loads, with every way a hostile or broken file can fail turned into ValueError with a short reason:
    bad syntax or encoding, an integer over Python's 4300-digit limit, nesting deeper than the parser's stack."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = str(exc).split(";")[0] if "digits" in str(exc) else str(exc)
        raise ValueError(reason[:200]) from None


def _load_list(path: Path) -> list:
    if not path.is_file():
        raise RanksweepError(f"Data file '{path}' does not exist.")
    try:
        data = parse_json(path.read_bytes())
    except ValueError as exc:
        raise RanksweepError(f"Data file '{path}' is not valid JSON ({exc}).") from None
    if not isinstance(data, list):
        raise RanksweepError(f"Data file '{path}' must hold a JSON list, not {type(data).__name__}.")
    if not data:
        raise RanksweepError(f"Data file '{path}' is an empty list: it needs at least one entry.")
    return data


def checked_number(value, where: str) -> float:
    """A number read from a data or config file as a finite float, or a RanksweepError whose sentence names
    `where` (e.g. "Data file 'x.json' entry 3 answer"): booleans, strings, integers past a float's range
    (JSON has no limit) and NaN/infinity are refused. The one conversion every numeric field goes through."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RanksweepError(f"{where} is {_shown(value)}, not a number; write a plain number there.")
    try:
        number = float(value)
    except OverflowError:
        raise RanksweepError(f"{where} is an integer of {len(str(value)):,} digits, too large for a 64-bit float "
                             "(at most about 1.8e308); write a smaller number there.") from None
    if not math.isfinite(number):
        raise RanksweepError(f"{where} is {_shown(value)}, not a finite number; write a plain number there.")
    return number


def _shown(value) -> str:
    try:
        return json.dumps(value)[:120]
    except ValueError:  # an integer past Python's digit limit for str()
        return "an integer too long to print"


def _bad(path: Path, index: int, entry, expected: str) -> RanksweepError:
    return RanksweepError(f"Data file '{path}' entry {index} is {_shown(entry)}, expected {expected}.")


def read_qa(path: str | Path) -> list[QA]:
    """Read a [question, answer] file (extra columns, e.g. RFT reasoning, are ignored)."""
    path = Path(path)
    rows = []
    for i, entry in enumerate(_load_list(path)):
        ok = isinstance(entry, list) and len(entry) >= 2 and isinstance(entry[0], str) and entry[0].strip()
        if not ok:
            raise _bad(path, i, entry, "[question, number]")
        rows.append(QA(entry[0], checked_number(entry[1], f"Data file '{path}' entry {i}'s answer")))
    return rows


def read_rft(path: str | Path) -> list[RFTRow]:
    """Read a [question, answer, reasoning] file."""
    path = Path(path)
    rows = []
    for i, entry in enumerate(_load_list(path)):
        ok = (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and entry[0].strip()
            and isinstance(entry[2], str)
            and entry[2].strip()
        )
        if not ok:
            raise _bad(path, i, entry, "[question, number, reasoning]")
        rows.append(RFTRow(entry[0], checked_number(entry[1], f"Data file '{path}' entry {i}'s answer"), entry[2]))
    return rows


def scratch_prefix(name: str) -> str:
    """The name start of a temp file or folder beside `name`: it carries this host and pid, so a later write can
    tell a killed writer's leftovers (pid gone) from a live one's, and from anything that is not ranksweep's."""
    return f".{name}.tmp-{socket.gethostname()}-{os.getpid()}-"


def remove_stale_scratch(folder: Path) -> list[Path]:
    """Delete the temp files and folders that writes on this host left in `folder` when they were killed (their
    pid is gone). Another host's, a live process's and names not made by `scratch_prefix` are kept."""
    folder, host, removed = Path(folder), socket.gethostname(), []
    for entry in folder.glob(".*.tmp-*") if folder.is_dir() else []:
        try:
            owner, pid, _ = entry.name.rsplit("-", 2)
            dead = owner.endswith(f".tmp-{host}") and not alive(int(pid))
        except ValueError:  # not one of ours
            continue
        if not dead:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def scratch_file(path: Path) -> tuple[int, str]:
    """(fd, name) of a new temp file beside `path`, after removing killed writers' leftovers there. The temp file
    already has the mode `path` will have: an old file's own, else what the umask gives a new file (mkstemp's
    owner-only mode would otherwise replace it)."""
    remove_stale_scratch(path.parent)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=scratch_prefix(path.name), suffix=".tmp")
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.fchmod(fd, mode)
    return fd, name


def write_json_atomic(path: str | Path, data) -> None:
    """Write JSON through a temporary file in the same folder, so a crash never leaves half a file (and the
    temp file of a write that was killed is removed by the next write in that folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = scratch_file(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_qa(path: str | Path, rows: list[QA]) -> None:
    write_json_atomic(path, [[r.question, r.answer] for r in rows])


def write_rft(path: str | Path, rows: list[RFTRow]) -> None:
    write_json_atomic(path, [[r.question, r.answer, r.reasoning] for r in rows])


def file_sha256(path: str | Path) -> str:
    """Content hash of a data file, used in cache keys and study configs."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
