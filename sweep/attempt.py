"""One trial's body, as `study.optimize` runs it: take the pair, skip it when it cannot or need not be
trained, else build and record it. Also the Ctrl-C guard that keeps an interrupt inside that body."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from sweep import bundle
from sweep.builder import PairBuilder, PairOutcome
from sweep.cache import observe_seals
from sweep.constraint import write_size_constraint
from sweep.objective import objective_for
from sweep.records import INTERRUPTED, PARAMS, Pair, TrialResult, pair_of
from sweep.settings import StudySettings
from sweep.sizing import config_for, fits, predicted_pair
from trainers.errors import RanksweepError
from trainers.processes import alive, host, start_time

TARGET_REACHED = "target-reached"  # a skip: the study's target of pairs was complete or in flight elsewhere


def this_process() -> dict:
    """The owner attrs a trial records (TrialResult's host, pid, pid_started): this host and this process."""
    pid = os.getpid()
    owner = {"host": host(), "pid": pid, "pid_started": start_time(pid)}
    return {k: v for k, v in owner.items() if v is not None}


def owner_gone(result: TrialResult) -> bool:
    """Whether a trial's process is known to be gone: it ran on this host, and its pid is absent or now names a
    process that started later. Another host's trial cannot be judged here (its heartbeat tells)."""
    return result.host == host() and isinstance(result.pid, int) and not alive(result.pid, result.pid_started)


def pairs_taken(trials: list, below: int | None = None) -> int:
    """Distinct complete pairs plus trials in flight (RUNNING; with `below`, only those numbered below it): what
    counts toward a study's target, so that every process sharing the study stops at its total."""
    complete = {pair_of(t.params) for t in trials if t.state.name == "COMPLETE"}
    return len(complete) + sum(t.state.name == "RUNNING" and (below is None or t.number < below) for t in trials)


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
        # Remembered even when raised: a KeyboardInterrupt that lands in a finalizer (SQLAlchemy's weakref
        # callbacks) is printed and dropped by Python, and the trial must still end as interrupted.
        self.pending = True
        if self.armed:
            raise KeyboardInterrupt

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

    def __init__(self, opened, settings: StudySettings, rest_bytes: int, builder: PairBuilder, guard: CtrlC):
        self.opened, self.settings, self.rest_bytes = opened, settings, rest_bytes
        self.builder, self.guard = builder, guard  # guard: the run's Ctrl-C handler, armed during a build
        self.model_config = config_for(settings.base_model)
        self.choices = settings.space.dimensions()
        self.steer = False  # the last trial was skipped: steer the next one to an untried pair
        self.failed_pair = None  # the last trial's pair, when it failed for its own reasons
        self.last_seconds = None  # wall time of the last trained trial

    def predict(self, params: dict):
        return predicted_pair(self.model_config, params, self.rest_bytes)

    def __call__(self, trial) -> list[float]:
        import optuna

        self.failed_pair, self.last_seconds = None, None
        params = {name: trial.suggest_categorical(name, list(self.choices[name])) for name in PARAMS}
        owner = {**this_process(), "sampler_seed": self.opened.seed}
        for key, value in owner.items():
            trial.set_user_attr(key, value)
        predicted = self.predict(params)
        skip = self.skip_reason(trial, params, predicted.total_compressed_bytes)
        if skip:
            self.write(trial, TrialResult(**params, **owner, skipped=skip, budget_bytes=self.settings.budget_bytes,
                                          size_bytes_predicted=predicted.total_compressed_bytes,
                                          feasible=False if skip == "over-budget" else None))
            self.steer = skip != TARGET_REACHED
            raise optuna.TrialPruned(skip)
        started = time.perf_counter()
        sealed: dict[str, list[str]] = {"trained": [], "derived": []}

        def on_seal(spec) -> None:  # written at once: a kill -9 later in the trial keeps it
            which = "derived" if spec.derived else "trained"
            sealed[which].append(f"{spec.kind}:{spec.key}")
            for key, value in TrialResult(**{which: ",".join(sealed[which])}).to_attrs().items():
                trial.set_user_attr(key, value)

        try:
            self.guard.armed = True
            if self.guard.pending:
                raise KeyboardInterrupt
            with observe_seals(on_seal):
                outcome = self.builder.build(Pair.from_params(params))
            if self.guard.pending:  # the interrupt raised during the build was dropped by a finalizer
                raise KeyboardInterrupt
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
        """Why this pair is not trained now: over the budget, already complete, running in another process, or the
        study's target already complete or in flight.

        Each trial writes its params before it reads the others', so of two trials that take one pair at once
        at least one sees the other: both may step aside, never both train it. Of two trials started at once when
        one pair is left to the target, the one numbered first goes on (it existed before the other read)."""
        if not fits(predicted_bytes, self.settings.budget_bytes):
            return "over-budget"
        reasons = {"COMPLETE": "duplicate", "RUNNING": "running-elsewhere"}
        others = self.opened.study.get_trials(deepcopy=False, states=_busy_states())
        for other in others:
            if other.number != trial.number and pair_of(other.params) == pair_of(params):
                return reasons[other.state.name]
        if pairs_taken(others, below=trial.number) >= self.opened.config.trials:
            return TARGET_REACHED
        return None

    def write(self, trial, result: TrialResult) -> None:
        """Record the trial's attrs, then its size constraint (measured, else predicted: sweep/constraint.py)."""
        for key, value in result.to_attrs().items():
            trial.set_user_attr(key, value)
        write_size_constraint(trial, self.opened.storage, self.opened.trial_id(trial.number),
                              float(result.size - self.settings.budget_bytes))

    def interrupted(self, trial, params: dict) -> None:
        """Ctrl-C: the trial is marked with why it stopped, and its pair enqueued once for the next run."""
        trial.set_user_attr("error", f"{INTERRUPTED}: stopped by the user (Ctrl-C)")
        from optuna.storages import RetryFailedTrialCallback  # heavy: optuna loads with the study, not the CLI

        frozen = self.opened.storage.get_trial(self.opened.trial_id(trial.number))
        retried = "retry_of" in trial.user_attrs or RetryFailedTrialCallback.retried_trial_number(frozen) is not None
        if not retried:  # a retry (of a Ctrl-C, or of Optuna's stale-heartbeat rule) is not retried again
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
        size_bytes=size_bytes, feasible=fits(size_bytes, settings.budget_bytes),
        points=sft.points + rft.points, mean_accuracy=(sft.accuracy + rft.accuracy) / 2,
        score=objective_for(settings.objective).value(sft, rft), device=outcome.device, sft=sft, rft=rft, **extra,
    )


def _busy_states():
    from optuna.trial import TrialState

    return (TrialState.RUNNING, TrialState.COMPLETE)
