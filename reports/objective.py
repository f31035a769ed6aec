"""The study's objective as the report uses it: the one in sweep/objective.py (the loop's), re-exported so
report modules import their vocabulary from one place."""

from __future__ import annotations

from sweep.objective import OBJECTIVES, Objective, objective_for

__all__ = ["OBJECTIVES", "Objective", "objective_for"]
