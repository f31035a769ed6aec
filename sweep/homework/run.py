"""Run a command of the user's homework (its training, bundle, grader, or its own benchmark) in a subprocess
with a timeout, its output going to a log file, and a failure turned into one sentence plus its last lines."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sweep.shell import command
from trainers.errors import RanksweepError

TAIL_LINES = 12


class HomeworkCommandError(RanksweepError):
    """A homework command failed, timed out or could not start; the message ends with its last lines."""


@dataclass(frozen=True)
class CommandRun:
    """A finished command: its argument list, wall seconds, everything it printed, and the log that keeps it
    (None when the caller asked for no lasting log)."""

    args: list[str]
    seconds: float
    text: str
    log: Path | None

    def output(self) -> str:
        return self.text


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last non-empty lines of a command's output, indented for an error message."""
    kept = [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line.strip()][-lines:]
    return "\n".join(f"    {line}" for line in kept) or "    (no output)"


def last_lines(text: str, log: Path | None) -> str:
    """'its last lines (LOG):' and the tail, for an error message; the log is named only when it is kept."""
    return f"its last lines{f' ({log})' if log is not None else ''}:\n{tail(text)}"


def run_logged(args: list[str], *, cwd: Path, log: Path | None, timeout: float, what: str,
               env: dict | None = None) -> CommandRun:
    """Run `args` in `cwd`, appending stdout and stderr to `log` (None: to a temporary file removed when the command
    ends, so an error names no file that is gone); HomeworkCommandError, ending in its last lines, when it fails."""
    if log is None:
        with tempfile.TemporaryDirectory(prefix="ranksweep-log-") as scratch:
            run = _run(args, cwd=cwd, log=Path(scratch) / "command.log", keep=False, timeout=timeout, what=what,
                       env=env)
        return run
    return _run(args, cwd=cwd, log=log, keep=True, timeout=timeout, what=what, env=env)


def _run(args: list[str], *, cwd: Path, log: Path, keep: bool, timeout: float, what: str,
         env: dict | None) -> CommandRun:
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", **(env or {})}
    # The homework is run as the user runs it, from its own folder: nothing of ranksweep's path leaks in.
    full_env.pop("PYTHONPATH", None)
    named = log if keep else None
    started = time.perf_counter()
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {command(*args)}\n")
        out.flush()
        try:
            process = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                       start_new_session=True)
        except OSError as exc:
            raise HomeworkCommandError(f"{what} could not start ({command(args[0])}: {exc.strerror}); "
                                       "check the command in ranksweep.toml.") from None
        try:
            code = process.wait(timeout=timeout)
        except BaseException as exc:  # a timeout, or Ctrl-C: the whole process group goes
            _kill_group(process)
            if isinstance(exc, subprocess.TimeoutExpired):
                raise HomeworkCommandError(
                    f"{what} ran past its timeout of {timeout:g} s and was stopped (raise it in ranksweep.toml); "
                    f"{last_lines(_read(log), named)}") from None
            raise
    seconds = time.perf_counter() - started
    if code != 0:
        raise HomeworkCommandError(f"{what} failed with exit code {code}; {last_lines(_read(log), named)}")
    return CommandRun(args=args, seconds=seconds, text=_read(log), log=named)


def _read(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
