"""Read a ranksweep study from its Optuna storage into a trials DataFrame and its config dict."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

from sweep.records import KINDS, AdapterResult, TrialResult
from sweep.settings import StudyConfig
from sweep.storage import load_ranksweep_study, open_storage

if TYPE_CHECKING:
    import pandas as pd
    from optuna.storages import BaseStorage

# Per-adapter columns, prefixed with `sft_` / `rft_` (the fields of sweep.records.AdapterResult).
ADAPTER_ATTRS = tuple(f.name for f in fields(AdapterResult) if f.name != "kind")
PAIR_ATTRS = tuple(f.name for f in fields(TrialResult) if f.name not in KINDS)
# Every column `load_trials` guarantees, so an empty or young study still yields a usable frame.
TRIAL_COLUMNS = tuple(dict.fromkeys((  # the pair's ranks are adapter columns too: each column once
    "trial", "state", "value_score", "value_size_bytes", "datetime_start", "datetime_complete",
    *PAIR_ATTRS, *(f"{kind}_{attr}" for kind in KINDS for attr in ADAPTER_ATTRS),
)))
# Counts and bytes: kept whole numbers (nullable) although a trial that has none leaves a gap.
INT_COLUMNS = (
    "value_size_bytes", "size_bytes_predicted", "size_bytes", "budget_bytes",
    *(f"{kind}_{attr}" for kind in KINDS
      for attr in ("rank", "params", "raw_bytes_predicted", "raw_bytes", "zip_bytes", "questions")),
)


def load_trials(storage: str | BaseStorage, study_name: str) -> tuple[pd.DataFrame, StudyConfig]:
    """Every trial of a study (all states) as one row each, plus the study's config.

    Columns: `trial` (number), `state` (COMPLETE/PRUNED/FAIL/RUNNING/WAITING), `value_score`,
    `value_size_bytes` (the two objective values, bytes), start/complete times, every trial user attr
    of docs/design.md (missing ones as NaN), and any other user attr or sampler param (`sft_rank`,
    `alpha_ratio`, ...; a user attr of the same name wins).
    """
    import pandas as pd

    study, config = load_ranksweep_study(open_storage(storage), study_name,
                                         storage if isinstance(storage, str) else "its storage")

    rows = []
    for trial in study.get_trials(deepcopy=False):
        values = trial.values or [None, None]
        # The trial's record (sweep.records), flat; its params fill the pair of trials that never wrote one.
        # Adapters count only in COMPLETE trials: a trial stopped while writing its record is no result.
        result = TrialResult.from_trial(trial)
        if trial.state.name != "COMPLETE":
            result = replace(result, sft=None, rft=None)
        row: dict[str, Any] = {**trial.params, **result.to_attrs()}
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
