"""Waiting on a condition instead of sleeping a guessed time: tests poll what they wait for, with a deadline."""

from __future__ import annotations

import time
from typing import Callable

POLL_SECONDS = 0.05


def wait_until(condition: Callable[[], object], *, timeout: float, what: str):
    """Poll `condition` until it returns a true value (returned), or fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_SECONDS)
