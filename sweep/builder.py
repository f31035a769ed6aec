"""The one interface through which the trial runner gets a pair's two adapters.

The runner (sweep/attempt.py) asks a `PairBuilder` for a `Pair` and records the `PairOutcome` it returns; it
knows nothing of how the adapters were made. ranksweep's own trainer (`sweep.trial.RanksweepBuilder`) and
homework mode (the user's own commands) implement it; the CLI picks one. A builder that makes no model
(the fast tests' loop) implements it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sweep.records import AdapterResult, Pair


@dataclass(frozen=True)
class PairOutcome:
    """A built pair: its two graded adapters, and the submission's measured zip size when the builder zipped
    the real submission (bytes; None: the runner adds up the measured parts)."""

    sft: AdapterResult
    rft: AdapterResult
    zip_bytes: int | None = None
    device: str | None = None  # where the adapters were trained and graded ("cpu", "cuda", ...)


class PairBuilder(Protocol):
    """Makes (or reuses) and grades the two adapters of a pair."""

    def build(self, pair: Pair) -> PairOutcome:
        """The pair's outcome; raise RanksweepError for what the user must fix (the study stops), any other
        exception for a failure of this trial alone (the study goes on)."""
        ...
