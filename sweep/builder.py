"""The one interface through which the trial runner gets a pair's two adapters.

The runner (sweep/attempt.py) asks a `PairBuilder` for a `Pair` and records the `PairOutcome` it returns; it
knows nothing of how the adapters were made. ranksweep's own trainer (`sweep.trial.RanksweepBuilder`) and
homework mode (the user's own commands) implement it; the CLI picks one. A builder that makes no model
(the fast tests' loop) implements it too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from sweep import bundle
from sweep.cache import AdapterSpec, Entry
from sweep.records import AdapterResult, Pair
from sweep.sizing import adapter_size, config_for
from trainers.grading import points


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


def adapter_zip_bytes(kind: str, folder: Path) -> int:
    """The adapter folder zipped alone, under the arcnames it has in the submission (homework/<kind>_model/)."""
    return bundle.submission_bytes(None, **{f"{kind}_dir": folder})


def adapter_result(spec: AdapterSpec, folder: Path, entry: Entry, grade: dict, base_model: str, *,
                   grade_seconds: float, **overrides) -> AdapterResult:
    """A builder's record of one graded adapter: its spec's hyperparameters, sizes measured from the cache entry
    (bytes) and predicted from the base model, the grade (fractions; the points range at its Wilson bounds when
    it has them) and the seconds this process spent. `overrides` replace fields the builder knows better."""
    predicted = adapter_size(config_for(base_model), spec.rank, spec.config.adapter_dtype)
    ci_low, ci_high = grade.get("ci_low"), grade.get("ci_high")
    result = AdapterResult(
        kind=spec.kind, rank=spec.rank, alpha=spec.alpha, lr=spec.config.lr, epochs=spec.config.epochs,
        dtype=spec.config.adapter_dtype, accuracy=grade["accuracy"], key=spec.key, dir=str(folder.resolve()),
        params=predicted.params, raw_bytes_predicted=predicted.raw_bytes,
        raw_bytes=(folder / "adapter_model.safetensors").stat().st_size,
        # Entries sealed before their zip size was recorded are zipped here.
        zip_bytes=entry.manifest.zip_bytes or adapter_zip_bytes(spec.kind, folder),
        ci_low=ci_low, ci_high=ci_high, answer_rate=grade.get("answer_rate"), questions=grade.get("questions"),
        points=grade["points"],
        points_low=points(spec.kind, ci_low) if ci_low is not None else None,
        points_high=points(spec.kind, ci_high) if ci_high is not None else None,
        answer_nll=grade.get("answer_nll"), answer_nll_se=grade.get("answer_nll_se"),
        train_seconds=round(entry.seconds, 3), grade_seconds=round(grade_seconds, 3), cache_hit=entry.cache_hit,
    )
    return replace(result, **overrides) if overrides else result
