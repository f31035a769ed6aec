"""Whether a process recorded earlier is still running: the writer of a scratch file, the owner of a RUNNING trial.

Only this host's processes can be judged. A pid alone can mislead once the kernel hands it to a newer process, so
a record may carry the process's start time too (Linux's /proc; elsewhere the pid alone decides).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def host() -> str:
    """This machine's name, as records of a process's owner spell it."""
    return socket.gethostname()


def start_time(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat); None where unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = text.rsplit(")", 1)[-1].split()  # the command name before ")" may hold spaces
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def alive(pid: int, started: int | None = None) -> bool:
    """Whether process `pid` of this host runs, and is the one that started at `started` when that is given."""
    if not isinstance(pid, int) or pid <= 0:  # 0 and negatives name process groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        pass
    except OverflowError:
        return False
    if started is None:
        return True
    now = start_time(pid)
    return now is None or now == started
