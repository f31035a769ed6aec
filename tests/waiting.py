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


def wait_until_failed_as_stale(study, number: int, *, timeout: float = 60) -> None:
    """Run Optuna's own stale-trial check (`optuna.storages.fail_stale_trials`, what every `launch` and `worker`
    runs before a trial) until it fails trial `number`: a trial whose process was killed, once its heartbeat is
    older than the grace period of `study`'s storage (opened with `sweep.storage.open_storage(heartbeat=True)`,
    so the stale trial's pair is re-enqueued exactly as a launch would re-enqueue it)."""
    import optuna
    from optuna.trial import TrialState

    def failed() -> bool:
        optuna.storages.fail_stale_trials(study)
        return study.trials[number].state == TrialState.FAIL

    wait_until(failed, timeout=timeout, what=f"trial {number}'s heartbeat to go stale")
