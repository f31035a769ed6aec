"""The study loop shared by `launch` and `worker`: ask a pair, skip what cannot or need not be trained,
run the trial, record it. Interrupted trials are failed and their pairs retried on the next run."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

from sweep.cache import ArtifactCache
from sweep.settings import StudySettings
from sweep.trial import TrialContext, adapter_spec, ensure_adapter, trial_attrs
from trainers.errors import RanksweepError

PARAMS = ("sft_rank", "rft_rank", "alpha_ratio", "lr", "epochs", "adapter_dtype")
HEARTBEAT_SECONDS = 20
INTERRUPTED = "interrupted"
CONSTRAINT_KEY = "constraints:size"  # the system attr `Trial.set_constraint("size", value)` writes


def open_storage(url: str, *, must_exist: bool = False):
    """An Optuna RDB storage with a heartbeat, so trials of a dead worker on another machine are failed."""
    from reports.study_io import open_storage as open_rdb

    return open_rdb(url, must_exist=must_exist, heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=6 * HEARTBEAT_SECONDS)


def load_existing(name: str, storage_url: str):
    """An existing study, or a RanksweepError that lists the studies the storage does hold."""
    import optuna

    storage = open_storage(storage_url, must_exist=True)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise RanksweepError(f"Study '{name}' does not exist in {storage_url} (studies there: {known}).")
    return optuna.load_study(study_name=name, storage=storage, sampler=_sampler(0))


def _sampler(seed: int):
    """Multivariate TPE. It reads each trial's constraint (CONSTRAINT_KEY) itself, so an over-budget pair
    counts as infeasible, and with its constant liar (the default) it treats other workers' RUNNING trials
    as bad results, so concurrent workers spread over the grid rather than all training the same pair."""
    from optuna.samplers import TPESampler

    class PairSampler(TPESampler):
        # TPE's constant liar also writes each relative sample into the trial's system attrs, so that
        # other workers see it before the params are set. `ask_pair` samples before the trial exists and
        # creates it with its params, which the liar reads directly: that extra write has no trial and
        # no purpose here.
        def sample_relative(self, study, trial, search_space):
            return self._sample_relative(study, trial, search_space)

    return PairSampler(seed=seed, multivariate=True, n_startup_trials=4)


def open_study(settings: StudySettings, homework_rest_bytes: int, *, force: bool = False):
    """Create the study, or resume it after checking it was made with the same model and data."""
    import optuna

    storage = open_storage(settings.storage)
    study = optuna.create_study(study_name=settings.name, storage=storage, load_if_exists=True,
                                directions=["maximize", "minimize"], sampler=_sampler(settings.seed))
    config = settings.to_config(homework_rest_bytes)
    previous = study.user_attrs.get("config")
    if previous:
        changed = [k for k, v in settings.identity().items() if previous.get(k) != v]
        if changed and not force:
            raise RanksweepError(
                f"Study '{settings.name}' was made with a different {', '.join(changed)}; "
                "use another --study name, or --force to continue it anyway."
            )
    study.set_user_attr("config", config)
    return study


def fail_interrupted(study) -> int:
    """Fail RUNNING trials whose process is gone: same host and dead pid, or a stale heartbeat."""
    import optuna
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)
    host, failed = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("host") == host and not _alive(trial.user_attrs.get("pid", -1)):
            study._storage.set_trial_user_attr(trial._trial_id, "error", f"{INTERRUPTED}: the process was killed")
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            failed += 1
    return failed


def set_trial_attrs(study, trial_id: int, attrs: dict, *, system_attrs: dict | None = None) -> None:
    """Write a trial's user attrs (and optionally system attrs) in one transaction.

    Each `set_user_attr` is a query, an upsert and a commit of its own (about 4 ms on SQLite here), and a
    trial records about 45 attrs: one by one they were most of a trial's orchestration time
    (bench/sweep_cost.py). One multi-row upsert in one transaction also means no reader ever sees half of
    a trial's results. Optuna has no public call for it, so this writes Optuna's attribute table itself on
    SQLite and PostgreSQL, and falls back to one `set_trial_user_attr` per attr anywhere else.
    """
    backend = getattr(study._storage, "_backend", study._storage)
    try:
        from optuna.storages import RDBStorage
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy.dialects import postgresql, sqlite
    except ImportError:
        RDBStorage = None
    dialects = {"sqlite": sqlite, "postgresql": postgresql}
    system_attrs = system_attrs or {}
    if RDBStorage is None or not isinstance(backend, RDBStorage) or backend.engine.name not in dialects:
        for key, value in attrs.items():
            study._storage.set_trial_user_attr(trial_id, key, value)
        for key, value in system_attrs.items():
            study._storage.set_trial_system_attr(trial_id, key, value)
        return
    with _create_scoped_session(backend.scoped_session, True) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        backend.check_trial_is_updatable(trial_id, trial.state)  # a finished trial is never changed
        for table, values in ((models.TrialUserAttributeModel, attrs),
                              (models.TrialSystemAttributeModel, system_attrs)):
            if not values:
                continue
            rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in values.items()]
            insert = dialects[backend.engine.name].insert(table).values(rows)
            session.execute(insert.on_conflict_do_update(index_elements=[table.trial_id, table.key],
                                                         set_={"value_json": insert.excluded.value_json}))


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def ask_pair(study, distributions: dict, trials: list, params: dict | None = None):
    """Like `study.ask`, but cheaper, and the trial names its host and pid from the moment it is RUNNING.

    `trials` is the loop's snapshot of the study. An enqueued trial is claimed first (the claim is
    atomic; its owner and params follow in the next writes, because writing the owner before the claim
    would let a worker that loses the claim overwrite the winner's). Otherwise the pair is `params`
    when given (the loop steering away from duplicates), or drawn from the sampler, and the trial is
    created RUNNING with its owner and params in one write. So a process killed at any point never
    leaves a RUNNING trial without an owner, and a trial costs one commit where `study.ask` plus one
    `suggest` per parameter took seven.
    """
    import optuna
    from optuna.trial import TrialState

    storage = study._storage
    for waiting in (t for t in trials if t.state == TrialState.WAITING):
        try:
            if storage.set_trial_state_values(waiting._trial_id, state=TrialState.RUNNING):
                set_trial_attrs(study, waiting._trial_id, _owner())
                trial = optuna.trial.Trial(study, waiting._trial_id)
                for name, distribution in distributions.items():
                    trial.suggest_categorical(name, distribution.choices)  # takes the enqueued values
                return trial
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker claimed and finished it meanwhile
    if params is None:
        params = _sample(study, distributions, trials)
    template = optuna.trial.create_trial(state=TrialState.RUNNING, params=params,
                                         distributions=distributions, user_attrs=_owner())
    return optuna.trial.Trial(study, storage.create_new_trial(study._study_id, template_trial=template))


def _sample(study, distributions: dict, trials: list) -> dict:
    """Draw one value per parameter from the study's sampler, as `Trial.suggest_*` would, before the trial
    exists. The sampler reads the loop's snapshot of the trials (`Study.ask` clears this per-thread cache
    for the same purpose: one read of the storage per trial)."""
    import optuna
    from optuna.trial import TrialState

    study._thread_local.cached_all_trials = trials
    sampler = study.sampler
    stand_in = optuna.trial.FrozenTrial(
        number=len(trials), state=TrialState.RUNNING, value=None, datetime_start=None, datetime_complete=None,
        params={}, distributions={}, user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=-1,
    )
    sampler.before_trial(study, stand_in)
    space = sampler.infer_relative_search_space(study, stand_in)
    relative = sampler.sample_relative(study, stand_in, space)
    params = {}
    for name, distribution in distributions.items():
        if distribution.single():
            params[name] = distribution.choices[0]
        elif name in relative and name in space:
            params[name] = relative[name]
        else:
            params[name] = sampler.sample_independent(study, stand_in, name, distribution)
    return params


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except (OSError, TypeError):
        return False


def _pair(params: dict) -> tuple:
    return tuple(params[k] for k in PARAMS)


@dataclass
class Progress:
    """Study-level counts: what has been trained and graded, what is left."""

    completed: set
    feasible: list
    target: int

    @property
    def untried(self) -> list:
        return [p for p in self.feasible if _pair(p) not in self.completed]

    @property
    def done(self) -> bool:
        return len(self.completed) >= self.target or not self.untried


def _completed_pairs(trials: list) -> set:
    from optuna.trial import TrialState

    return {_pair(t.params) for t in trials if t.state == TrialState.COMPLETE}


def _retry_interrupted(study, completed: set) -> None:
    """Enqueue the pair of each interrupted trial once, unless it completed since."""
    from optuna.trial import TrialState

    retried = set(study.user_attrs.get("retried", []))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if trial.number in retried or not str(trial.user_attrs.get("error", "")).startswith(INTERRUPTED):
            continue
        if set(PARAMS) <= set(trial.params) and _pair(trial.params) not in completed:
            study.enqueue_trial(trial.params, skip_if_exists=True)
        retried.add(trial.number)
    study.set_user_attr("retried", sorted(retried))


class _Heartbeat:
    """Records the trial's heartbeat in the storage while it runs (Optuna does this only in optimize())."""

    def __init__(self, study, trial):
        self._storage, self._trial_id = study._storage, trial._trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self._stop.is_set():
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception:
                pass  # a missed beat is harmless; the next one retries
            self._stop.wait(HEARTBEAT_SECONDS)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def _sigint_deferred():
    """Hold Ctrl-C back while the block runs (yields a list that is non-empty if one came), so it cannot land
    between a trial's creation and the code that would mark it failed. Only the main thread gets signals."""
    pending: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield pending
    finally:
        signal.signal(signal.SIGINT, previous)


def feasible_pairs(settings: StudySettings, rest_bytes: int) -> list[dict]:
    """The search space's pairs whose predicted zipped size fits the budget; a RanksweepError when none does
    (launch calls it before creating the study, so an impossible budget or unknown model writes nothing)."""
    from sweep.sizing import config_for, pair_size

    model_config = config_for(settings.base_model)

    def predict(p):
        return pair_size(model_config, p["sft_rank"], p["rft_rank"], p["adapter_dtype"], rest_bytes=rest_bytes)

    feasible = [p for p in settings.space.points() if predict(p).total_compressed_bytes <= settings.budget_bytes]
    if not feasible:
        smallest = min(settings.space.points(), key=lambda p: predict(p).total_compressed_bytes)
        size = predict(smallest).total_compressed_bytes / 2**20
        raise RanksweepError(
            f"No pair fits the budget of {settings.budget_bytes / 2**20:.2f} MiB: the smallest, "
            f"sft={smallest['sft_rank']}/rft={smallest['rft_rank']}, needs up to {size:.2f} MiB."
        )
    return feasible


def run_study(study, settings: StudySettings, *, progress: bool = True) -> Progress:
    """Run trials until `settings.trials` distinct pairs are complete or every feasible pair was tried."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    from sweep.sizing import config_for, pair_size
    from sweep.studybar import StudyBar

    model_config = config_for(settings.base_model)
    rest = study.user_attrs["config"]["homework_rest_bytes"]

    def predict(p):
        return pair_size(model_config, p["sft_rank"], p["rft_rank"], p["adapter_dtype"], rest_bytes=rest)

    feasible = feasible_pairs(settings, rest)
    fail_interrupted(study)
    state = Progress(completed=_completed_pairs(study.get_trials(deepcopy=False)), feasible=feasible,
                     target=settings.trials)
    _retry_interrupted(study, state.completed)
    distributions = {k: CategoricalDistribution(list(v)) for k, v in settings.space.dimensions().items()}
    ctx = TrialContext(settings, ArtifactCache(settings.artifacts))
    rng = random.Random(settings.seed)
    bar = StudyBar(settings, enabled=progress)
    steer, seconds = None, None
    while True:
        trials = study.get_trials(deepcopy=False)  # one read per trial: other workers complete pairs too
        state.completed = _completed_pairs(trials)
        bar.update(state, trials, seconds=seconds)
        seconds = None
        if state.done:
            break
        with _sigint_deferred() as pending:
            trial = ask_pair(study, distributions, trials, params=steer)
        steer = None
        # Ctrl-C anywhere in the trial, not only while training, leaves it failed rather than RUNNING.
        try:
            if pending:
                raise KeyboardInterrupt
            params = {k: trial.params[k] for k in PARAMS}
            predicted = predict(params)
            skip = None
            if predicted.total_compressed_bytes > settings.budget_bytes:
                skip = "over-budget"
            elif _pair(params) in state.completed:
                skip = "duplicate"
            if skip:
                set_trial_attrs(study, trial._trial_id,
                               {"skipped": skip, "size_bytes_predicted": predicted.total_compressed_bytes})
                study.tell(trial, state=TrialState.PRUNED)
                # The sampler may keep proposing pairs that cost nothing to reject; the next trial takes an
                # untried one instead.
                steer = rng.choice(state.untried)
                continue
            started = time.perf_counter()
            try:
                with _Heartbeat(study, trial):
                    sft = ensure_adapter(ctx, adapter_spec(ctx, "sft", params), progress=progress)
                    rft = ensure_adapter(ctx, adapter_spec(ctx, "rft", params), progress=progress)
                    attrs, score, size_bytes = trial_attrs(ctx, sft, rft, predicted)
            except RanksweepError as exc:
                trial.set_user_attr("error", str(exc)[:500])
                study.tell(trial, state=TrialState.FAIL)
                raise
            except Exception as exc:  # one failing trial (a bug, out of memory) must not end the study
                trial.set_user_attr("error", f"{type(exc).__name__}: {str(exc)[:500]}")
                study.tell(trial, state=TrialState.FAIL)
                print(f"ranksweep: warning: trial {trial.number} failed ({type(exc).__name__}: {exc}); "
                      "the study goes on", file=sys.stderr)
                state.feasible = [p for p in state.feasible if _pair(p) != _pair(params)]
                continue
            attrs["trial_seconds"] = round(time.perf_counter() - started, 3)
            # The budget as an Optuna constraint (what `Trial.set_constraint("size", ...)` stores, <= 0 is
            # feasible), written with the attrs instead of in a commit of its own.
            set_trial_attrs(study, trial._trial_id, attrs,
                           system_attrs={CONSTRAINT_KEY: float(size_bytes - settings.budget_bytes)})
            study.tell(trial, [score, size_bytes])
            seconds = time.perf_counter() - started
        except KeyboardInterrupt:
            if study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                trial.set_user_attr("error", f"{INTERRUPTED}: stopped by the user (Ctrl-C)")
                study.tell(trial, state=TrialState.FAIL)
            bar.close()
            raise
    bar.close()
    return state
