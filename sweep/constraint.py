"""A trial's size constraint, written in the two forms its readers take.

Optuna 5's `Trial.set_constraint(key, value)` stores the system attr `constraints:<key>`, which TPE reads.
optuna-dashboard 0.21 (the version the `dashboard` extra pins) still reads only the older list-valued system
attr `constraints`, so the same value is also written there, through the storage's public
`set_trial_system_attr`: the one storage-level write ranksweep makes. TPE reads both forms (as constraints `size`
and `0`); an infeasible pair then counts its excess twice, which changes no order. Drop the second write once the
dashboard reads `constraints:<key>`.
"""

from __future__ import annotations

SIZE_CONSTRAINT = "size"  # zipped bytes over the budget: <= 0 is feasible
LEGACY_CONSTRAINTS = "constraints"  # the system attr optuna-dashboard 0.21 reads


def write_size_constraint(trial, storage, trial_id: int, over_bytes: float) -> None:
    """Record `over_bytes` (zipped size minus budget) as the trial's constraint in both forms."""
    trial.set_constraint(SIZE_CONSTRAINT, over_bytes)
    storage.set_trial_system_attr(trial_id, LEGACY_CONSTRAINTS, [over_bytes])
