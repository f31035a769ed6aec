"""Read a ranksweep study from its Optuna storage into a trials DataFrame and its config dict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainers.errors import RanksweepError

if TYPE_CHECKING:
    import pandas as pd
    from optuna.storages import BaseStorage

KINDS = ("sft", "rft")

# Per-adapter trial attrs (docs/design.md, "What a study stores"), prefixed with `sft_` / `rft_`.
ADAPTER_ATTRS = (
    "rank", "alpha", "lr", "epochs", "params", "raw_bytes_predicted", "raw_bytes", "zip_bytes",
    "accuracy", "ci_low", "ci_high", "answer_rate", "questions", "points",
    "train_seconds", "grade_seconds", "cache_hit", "key", "dir",
)
PAIR_ATTRS = (
    "adapter_dtype", "size_bytes_predicted", "size_bytes", "budget_bytes", "feasible",
    "points", "mean_accuracy", "score", "device", "skipped", "error",
)
# Every column `load_trials` guarantees, so an empty or young study still yields a usable frame.
TRIAL_COLUMNS = (
    "trial", "state", "value_score", "value_size_bytes", "datetime_start", "datetime_complete",
    *PAIR_ATTRS, *(f"{kind}_{attr}" for kind in KINDS for attr in ADAPTER_ATTRS),
)
# Counts and bytes: kept whole numbers (nullable) although a trial that has none leaves a gap.
INT_COLUMNS = (
    "value_size_bytes", "size_bytes_predicted", "size_bytes", "budget_bytes",
    *(f"{kind}_{attr}" for kind in KINDS
      for attr in ("rank", "params", "raw_bytes_predicted", "raw_bytes", "zip_bytes", "questions")),
)


def open_storage(storage: str | BaseStorage, *, must_exist: bool = True, **rdb_kwargs) -> BaseStorage:
    """Open an Optuna storage by URL; with `must_exist`, a missing SQLite file is a user error.

    `rdb_kwargs` go to `RDBStorage` (the sweep adds its heartbeat). Errors are one RanksweepError line.
    """
    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the CLI prints its own progress
    if not isinstance(storage, str):
        return storage
    if storage.startswith("sqlite:"):
        database = sqlalchemy.engine.make_url(storage).database
        # RDBStorage would silently create an empty database; reading a study must never do that.
        if must_exist and database and database != ":memory:" and not Path(database).is_file():
            raise RanksweepError(
                f"No study storage at {database}; pass --storage with the URL the study was launched with."
            )
        # SQLite allows one writer at a time: workers on one machine wait for the lock instead of failing
        # with "database is locked" (the default wait is 5 s, shorter than a busy study's writes can take).
        rdb_kwargs.setdefault("engine_kwargs", {"connect_args": {"timeout": 60}})
    try:
        return optuna.storages.RDBStorage(storage, **rdb_kwargs)
    except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise RanksweepError(f"Cannot open the storage {storage} ({reason}); check the --storage URL.") from None


def load_trials(storage: str | BaseStorage, study_name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every trial of a study (all states) as one row each, plus the study's `config` user attr.

    Columns: `trial` (number), `state` (COMPLETE/PRUNED/FAIL/RUNNING/WAITING), `value_score`,
    `value_size_bytes` (the two objective values, bytes), start/complete times, every trial user attr
    of docs/design.md (missing ones as NaN), and any other user attr or sampler param (`sft_rank`,
    `alpha_ratio`, ...; a user attr of the same name wins).
    """
    import optuna
    import pandas as pd

    opened = open_storage(storage)
    names = optuna.get_all_study_names(opened)
    if study_name not in names:
        known = ", ".join(sorted(names)) if names else "none"
        raise RanksweepError(f"No study named '{study_name}' in {storage}; studies there: {known}.")
    study = optuna.load_study(study_name=study_name, storage=opened)
    config = _config(study.user_attrs.get("config"), study_name)

    rows = []
    for trial in study.get_trials(deepcopy=False):
        values = trial.values or [None, None]
        # Params first: a pruned, failed or running trial has its ranks only there (the runner records
        # the user attrs once both adapters are graded); the user attrs, when present, are the schema.
        row: dict[str, Any] = {**trial.params, **trial.user_attrs}
        row.update({
            "trial": trial.number,
            "state": trial.state.name,
            "value_score": values[0],
            "value_size_bytes": values[1] if len(values) > 1 else None,
            "datetime_start": trial.datetime_start,
            "datetime_complete": trial.datetime_complete,
        })
        rows.append(row)
    frame = pd.DataFrame(rows)
    missing = [column for column in TRIAL_COLUMNS if column not in frame.columns]
    frame = pd.concat([frame, pd.DataFrame(columns=missing, index=frame.index, dtype=object)], axis=1)
    # Reported columns first, in schema order; anything the runner adds later follows.
    extra = [column for column in frame.columns if column not in TRIAL_COLUMNS]
    frame = frame[list(TRIAL_COLUMNS) + extra]
    for column in INT_COLUMNS:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if (numbers.dropna() % 1 == 0).all():
            frame[column] = numbers.astype("Int64")
    return frame.sort_values("trial", ignore_index=True), config


def _config(raw: Any, study_name: str) -> dict[str, Any]:
    """The study config as a dict; a study without one was not launched by ranksweep."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = None
    if not isinstance(raw, dict):
        raise RanksweepError(
            f"Study '{study_name}' has no ranksweep config; report only on studies made by `ranksweep launch`."
        )
    return raw
