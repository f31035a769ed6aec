"""One trial's body, as `study.optimize` runs it: take the pair, skip it when it cannot or need not be
trained, else build and record it. Also the Ctrl-C guard that keeps an interrupt inside that body."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

from sweep import bundle
from sweep.builder import PairBuilder, PairOutcome
from sweep.objective import objective_for
from sweep.records import INTERRUPTED, PARAMS, Pair, TrialResult, pair_of
from sweep.settings import StudySettings
from trainers.errors import RanksweepError

SIZE_CONSTRAINT = "size"  # zipped bytes over the budget: <= 0 is feasible


class TrialFailed(Exception):
    """A trial failed for its own reasons (recorded in its `error` attr); the study goes on."""


class CtrlC:
    """Ctrl-C raises KeyboardInterrupt only inside a trial's body, where the trial is marked failed and its pair
    re-enqueued; elsewhere (Optuna creating or telling a trial) it waits until that step is over."""

    def __init__(self):
        self.armed = False
        self.pending = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.armed:
            raise KeyboardInterrupt
        self.pending = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # only the main thread gets signals
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def raise_if_pending(self):
        if self.pending:
            raise KeyboardInterrupt


class Attempt:
    """The callable `study.optimize` runs for each trial; returns [objective, zipped bytes]."""

    def __init__(self, opened, settings: StudySettings, rest_bytes: int, builder: PairBuilder):
        from sweep.sizing import config_for

        self.opened, self.settings, self.rest_bytes = opened, settings, rest_bytes
        self.builder = builder
        self.model_config = config_for(settings.base_model)
        self.choices = settings.space.dimensions()
        self.guard = CtrlC()
        self.steer = False  # the last trial was skipped: steer the next one to an untried pair
        self.failed_pair = None  # the last trial's pair, when it failed for its own reasons
        self.last_seconds = None  # wall time of the last trained trial

    def predict(self, params: dict):
        from sweep.sizing import pair_size

        return pair_size(self.model_config, params["sft_rank"], params["rft_rank"], params["adapter_dtype"],
                         rest_bytes=self.rest_bytes)

    def __call__(self, trial) -> list[float]:
        import optuna

        self.failed_pair, self.last_seconds = None, None
        params = {name: trial.suggest_categorical(name, list(self.choices[name])) for name in PARAMS}
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "sampler_seed": self.opened.seed}
        for key, value in owner.items():
            trial.set_user_attr(key, value)
        predicted = self.predict(params)
        skip = self.skip_reason(trial, params, predicted.total_compressed_bytes)
        if skip:
            self.write(trial, TrialResult(**params, **owner, skipped=skip, budget_bytes=self.settings.budget_bytes,
                                          size_bytes_predicted=predicted.total_compressed_bytes,
                                          feasible=False if skip == "over-budget" else None))
            self.steer = True
            raise optuna.TrialPruned(skip)
        started = time.perf_counter()
        try:
            self.guard.armed = True
            if self.guard.pending:
                raise KeyboardInterrupt
            outcome = self.builder.build(Pair.from_params(params))
            self.guard.armed = False
        except KeyboardInterrupt:
            self.guard.armed = False
            self.interrupted(trial, params)
            raise
        except RanksweepError as exc:  # the user's to fix: the study stops with one sentence
            self.guard.armed = False
            trial.set_user_attr("error", str(exc)[:500])
            raise
        except Exception as exc:  # one failing trial (a bug, out of memory) must not end the study
            self.guard.armed = False
            trial.set_user_attr("error", f"{type(exc).__name__}: {str(exc)[:500]}")
            print(f"ranksweep: warning: trial {trial.number} failed ({type(exc).__name__}: {exc}); "
                  "the study goes on", file=sys.stderr)
            self.failed_pair = pair_of(params)
            raise TrialFailed(str(exc)) from exc
        seconds = time.perf_counter() - started
        result = record_pair(self.settings, params, outcome, predicted, trial_seconds=round(seconds, 3), **owner)
        self.write(trial, result)
        self.last_seconds = seconds
        return [result.score, result.size_bytes]

    def skip_reason(self, trial, params: dict, predicted_bytes: int) -> str | None:
        """Why this pair is not trained now: over the budget, already complete, or running in another process.

        Each trial writes its params before it reads the others', so of two trials that take one pair at once
        at least one sees the other: both may step aside, never both train it."""
        if predicted_bytes > self.settings.budget_bytes:
            return "over-budget"
        reasons = {"COMPLETE": "duplicate", "RUNNING": "running-elsewhere"}
        for other in self.opened.study.get_trials(deepcopy=False, states=_busy_states()):
            if other.number != trial.number and pair_of(other.params) == pair_of(params):
                return reasons[other.state.name]
        return None

    def write(self, trial, result: TrialResult) -> None:
        """Record the trial's attrs, then its size constraint (measured, else predicted) in both of Optuna's
        forms: `constraints:size`, which `Trial.set_constraint` writes and TPE reads, and the list-valued
        `constraints`, which TPE also reads and optuna-dashboard 0.21 reads alone."""
        for key, value in result.to_attrs().items():
            trial.set_user_attr(key, value)
        size = result.size_bytes if result.size_bytes is not None else result.size_bytes_predicted
        over = float(size - self.settings.budget_bytes)
        trial.set_constraint(SIZE_CONSTRAINT, over)
        self.opened.storage.set_trial_system_attr(self.opened.trial_id(trial.number), "constraints", [over])

    def interrupted(self, trial, params: dict) -> None:
        """Ctrl-C: the trial is marked with why it stopped, and its pair enqueued once for the next run."""
        trial.set_user_attr("error", f"{INTERRUPTED}: stopped by the user (Ctrl-C)")
        system_attrs = self.opened.storage.get_trial_system_attrs(self.opened.trial_id(trial.number))
        if "retry_of" not in trial.user_attrs and "failed_trial" not in system_attrs:  # a retry is not retried
            self.opened.study.enqueue_trial(params, user_attrs={"retry_of": trial.number})


def record_pair(settings: StudySettings, params: dict, outcome: PairOutcome, predicted, **extra) -> TrialResult:
    """The trial's record: the pair's zipped size (the builder's measured zip, else the measured parts added up:
    the homework's rest, then each adapter, `bundle.combined_bytes`), its points and objective; `extra` adds
    owner and timing fields."""
    sft, rft = outcome.sft, outcome.rft
    size_bytes = outcome.zip_bytes
    if size_bytes is None:
        size_bytes = bundle.combined_bytes(predicted.rest_bytes, sft.zip_bytes, rft.zip_bytes)
    return TrialResult(
        **{k: params[k] for k in PARAMS},
        budget_bytes=settings.budget_bytes, size_bytes_predicted=predicted.total_compressed_bytes,
        size_bytes=size_bytes, feasible=size_bytes <= settings.budget_bytes,
        points=sft.points + rft.points, mean_accuracy=(sft.accuracy + rft.accuracy) / 2,
        score=objective_for(settings.objective).value(sft, rft), device=outcome.device, sft=sft, rft=rft, **extra,
    )


def _busy_states():
    from optuna.trial import TrialState

    return (TrialState.RUNNING, TrialState.COMPLETE)
