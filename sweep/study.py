"""The study loop shared by `launch` and `worker`, on Optuna's public API.

One `study.optimize` per process, as Optuna writes loops: before each trial Optuna fails trials whose heartbeat
went stale and re-enqueues their pair once (the storage's `RetryHeartbeatStaleTrialCallback`, sweep/storage.py),
asks the sampler (or takes a WAITING trial), keeps the trial's heartbeat while it runs, and tells the result.
`sweep.attempt.Attempt` is the trial's body: skip what cannot or need not be trained, else build and record the
pair. `Steer`, the callback after each trial (and the check before the first), fails at once this host's trials
whose process is gone and retries their pair (`fail_orphaned_trials`), reads the study once, stops it when it is
done (`Study.stop`) and, after a skip, enqueues an untried pair.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field

from sweep.attempt import Attempt, CtrlC, TrialFailed, owner_gone, pairs_taken
from sweep.objective import metric_names, study_directions
from sweep.records import PARAMS, TrialResult, pair_of
from sweep.settings import StudyConfig, StudySettings
from sweep.sizing import config_for, fits, predicted_pair, size_text
from sweep.storage import (load_ranksweep_study, mark_study, open_storage, ranksweep_config, stored_config,
                           write_config)
from sweep.studybar import StudyBar
from trainers.errors import RanksweepError

STARTUP_TRIALS = 4  # random pairs before TPE models the study


@dataclass
class Opened:
    """A study, the storage it lives in (opened by `sweep.storage.open_storage`) and this process's seed."""

    study: object  # optuna.Study
    storage: object  # optuna.storages.RDBStorage
    seed: int  # this process's sampler seed, recorded on its trials

    def trial_id(self, number: int) -> int:
        """The storage's id of trial `number` (what storage-level calls take)."""
        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, number)

    @property
    def config(self) -> StudyConfig:
        """The study's stored config (read afresh: a worker may have raised its trial target)."""
        return stored_config(self.study)


def process_seed() -> int:
    """A fresh seed for a process joining a study: each worker draws its own start-up pairs."""
    return secrets.randbelow(2**31)


def _sampler(seed: int):
    """Multivariate TPE. It reads each trial's `size` constraint, so over-budget pairs count as infeasible,
    and with its constant liar (Optuna's default) other workers' RUNNING trials count as bad results."""
    from optuna.samplers import TPESampler

    return TPESampler(seed=seed, multivariate=True, n_startup_trials=STARTUP_TRIALS)


def load_existing(name: str, storage_url: str, *, seed: int | None = None, writes: bool = False) -> Opened:
    """An existing ranksweep study, or a RanksweepError naming the studies the storage holds. Writes nothing;
    `writes`: the caller will, so a read-only storage is refused now."""
    storage = open_storage(storage_url, must_exist=True, heartbeat=True, writes=writes)
    seed = process_seed() if seed is None else seed
    study, _ = load_ranksweep_study(storage, name, storage_url, sampler=_sampler(seed))
    return Opened(study, storage, seed)


def check_resume(settings: StudySettings, config: StudyConfig, directions: list, *, force: bool, graded: bool = True) -> None:
    """Refuse to resume a study with another model or data (unless `force`), search space, training or grading
    settings, or direction. A study with no COMPLETE trial (`graded` False: say its first launch failed while
    sampling RFT data) holds no result to mix with, so it may change its model, data and settings."""
    changed = settings.identity_changes(config)
    if changed and not force and graded:
        raise RanksweepError(f"Study '{settings.name}' was made with a different {', '.join(changed)}; "
                             "use another --study name, or --force to continue it anyway.")
    # Optuna fixes each param's choices for the life of a study: other choices would break every later trial.
    spaced = settings.space_changes(config)
    if spaced:
        was = "; ".join(f"{k} {','.join(map(str, getattr(config, k)))}" for k in spaced)
        raise RanksweepError(f"Study '{settings.name}' searches other values ({was}); resume it with the same "
                             "--preset and search flags, or give another --study name for the new space.")
    # One frontier must not mix adapters trained on other rows or graded on other questions.
    effort = settings.effort_changes(config)
    if effort and graded:
        raise RanksweepError(f"Study '{settings.name}' was made with other training or grading settings "
                             f"({'; '.join(effort)}); resume it with the same flags, or give another --study name "
                             "to train and grade this way (adapters already trained come from the artifact cache).")
    wanted = [d.lower() for d in study_directions(settings.objective)]
    if [d.name.lower() for d in directions] != wanted:
        raise RanksweepError(f"Study '{settings.name}' optimises its first value the other way; objective "
                             f"'{settings.objective}' needs a new --study name.")


def open_study(settings: StudySettings, homework_rest_bytes: int, *, force: bool = False) -> Opened:
    """Create the study, or resume it after checking it; nothing is written until every check passed."""
    import optuna

    storage = open_storage(settings.storage, must_exist=False, heartbeat=True, writes=True)
    if settings.name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=settings.name, storage=storage, sampler=_sampler(settings.seed))
        graded = bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
        check_resume(settings, ranksweep_config(study, settings.storage), study.directions, force=force,
                     graded=graded)
    else:
        study = optuna.create_study(study_name=settings.name, storage=storage, sampler=_sampler(settings.seed),
                                    directions=study_directions(settings.objective))
        study.set_metric_names(metric_names(settings.objective))
    write_config(study, settings.study_config(homework_rest_bytes))
    mark_study(study)  # after the config: a study with the marker always has one
    return Opened(study, storage, settings.seed)


def feasible_pairs(settings: StudySettings, rest_bytes: int) -> list[dict]:
    """The search space's pairs whose predicted zipped size fits the budget; a RanksweepError when none does
    (called before the study is touched, so an impossible budget or unknown model writes nothing)."""
    model_config = config_for(settings.base_model)

    def predict(p):
        return predicted_pair(model_config, p, rest_bytes)

    feasible = [p for p in settings.space.points() if fits(predict(p).total_compressed_bytes, settings.budget_bytes)]
    if not feasible:
        smallest = min(settings.space.points(), key=lambda p: predict(p).total_compressed_bytes)
        raise RanksweepError(
            f"No pair fits the budget of {size_text(settings.budget_bytes)}: the smallest, "
            f"sft={smallest['sft_rank']}/rft={smallest['rft_rank']}, needs up to "
            f"{size_text(predict(smallest).total_compressed_bytes)}."
        )
    return feasible


@dataclass
class Progress:
    """Where the study stands, from one read of its trials: what is complete, running, waiting, left."""

    feasible: list  # the feasible pairs (dicts of PARAMS)
    target: int  # the study's, read from storage with the trials: every process stops at the same total
    completed: set = field(default_factory=set)
    running: set = field(default_factory=set)  # pairs RUNNING in some process (this one's trial has ended)
    waiting: int = 0  # WAITING trials: retries and steered pairs, taken before the sampler is asked
    given_up: set = field(default_factory=set)  # pairs that failed in this process for their own reasons
    taken: int = 0  # complete pairs plus trials in flight: what counts toward the target

    def read(self, trials: list, target: int) -> Progress:
        self.target, self.taken = target, pairs_taken(trials)
        by_state = {"COMPLETE": set(), "RUNNING": set()}
        for t in trials:
            if t.state.name in by_state and set(PARAMS) <= set(t.params):
                by_state[t.state.name].add(pair_of(t.params))
        self.completed, self.running = by_state["COMPLETE"], by_state["RUNNING"]
        self.waiting = sum(t.state.name == "WAITING" for t in trials)
        return self

    @property
    def untried(self) -> list:
        """Feasible pairs nobody has completed, is running, or has given up on here."""
        busy = self.completed | self.running | self.given_up
        return [p for p in self.feasible if pair_of(p) not in busy]

    @property
    def done(self) -> bool:
        return self.taken >= self.target or not (self.untried or self.waiting)


def fail_orphaned_trials(opened: Opened) -> list[int]:
    """Fail the RUNNING trials of this host whose process is gone (killed, or its pid reused) and enqueue each pair
    once more, as Optuna does for a stale heartbeat, but at once; returns their numbers. Trials of other hosts wait
    for the heartbeat rule."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    retry = opened.storage.get_heartbeat_stale_trial_callback()
    failed = []
    for trial in opened.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not owner_gone(TrialResult.from_attrs(trial.user_attrs)):
            continue
        trial_id = opened.trial_id(trial.number)
        try:
            if not opened.storage.set_trial_state_values(trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # another process failed it first, and retried it
            continue
        failed.append(trial.number)
        if retry is not None:
            retry(opened.study, opened.storage.get_trial(trial_id))
    return failed


class Steer:
    """Optuna's callback after each trial (and the check before the first): read the study once, show where it
    stands, stop when it is done, and steer the next trial to an untried pair after a skip."""

    def __init__(self, opened: Opened, state: Progress, attempt: Attempt, bar: StudyBar, ctrl_c: CtrlC):
        self.opened, self.state, self.attempt, self.bar, self.ctrl_c = opened, state, attempt, bar, ctrl_c
        self.rng = random.Random(opened.seed)

    def done(self, study) -> bool:
        """Whether the study is done; when it is not and the last trial was skipped, enqueue an untried pair."""
        import optuna

        # Dead processes' trials are failed (their pairs re-enqueued) before the read, or they would count as in
        # flight toward the target: this host's at once, any host's once its heartbeat is stale (Optuna does that
        # too before each trial, after this read).
        fail_orphaned_trials(self.opened)
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)  # one read per trial: other workers complete pairs too
        state, attempt = self.state, self.attempt
        self.bar.update(state.read(trials, self.opened.config.trials), trials, seconds=attempt.last_seconds)
        if state.done:
            return True
        if attempt.steer and state.untried and not state.waiting:
            # The sampler proposed a pair that was skipped; the next trial takes an untried one instead.
            study.enqueue_trial(self.rng.choice(state.untried))
        attempt.steer = False
        return False

    def __call__(self, study, trial) -> None:
        if self.attempt.failed_pair is not None:
            self.state.given_up.add(self.attempt.failed_pair)
        self.ctrl_c.raise_if_pending()  # a Ctrl-C between trials ends the run here
        if self.done(study):
            study.stop()


def run_study(opened: Opened, settings: StudySettings, builder, *, progress: bool = True) -> Progress:
    """Run trials until the study's target of distinct complete pairs is complete or in flight (counted over every
    process), or no feasible pair is left to try; each trial's adapters come from `builder` (a
    sweep.builder.PairBuilder)."""
    rest = opened.config.homework_rest_bytes
    state = Progress(feasible=feasible_pairs(settings, rest), target=settings.trials)
    with CtrlC() as ctrl_c, StudyBar(settings, enabled=progress) as bar:
        attempt = Attempt(opened, settings, rest, builder, ctrl_c)
        steer = Steer(opened, state, attempt, bar, ctrl_c)
        if not steer.done(opened.study):
            opened.study.optimize(attempt, catch=(TrialFailed,), callbacks=[steer])
    return state
