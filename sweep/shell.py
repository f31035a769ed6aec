"""Command lines ranksweep prints (resume hints, homework commands, their logs): one quoting rule for all."""

from __future__ import annotations

import shlex


def command(*words) -> str:
    """A command line to print that pastes back into a POSIX shell as the same words: each word quoted where
    it needs to be (shlex.join), the program included."""
    return shlex.join(str(word) for word in words)
