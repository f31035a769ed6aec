"""The study-level progress line: trial i of N, best feasible result so far, time per trial, ETA.

It sits at the top (position 0); the trainers' per-training bars appear below it."""

from __future__ import annotations

import sys

from sweep.objective import objective_for
from sweep.records import TrialResult
from sweep.sizing import mib


class StudyBar:
    def __init__(self, settings, *, enabled: bool = True):
        from tqdm import tqdm

        self._seconds: list[float] = []
        self._bar = tqdm(total=settings.trials, desc=f"study {settings.name}", unit="trial", position=0,
                         leave=True, disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                         bar_format="{desc}: {n}/{total} trials |{bar:20}| {postfix}")
        self._sign = objective_for(settings.objective).sign

    def _best(self, trials: list) -> str:
        best, best_value = None, None
        for t in trials:
            if t.state.name != "COMPLETE":
                continue
            result = TrialResult.from_trial(t)
            value = self._sign * t.values[0]
            if result.feasible and result.sft and result.rft and (best is None or value > best_value):
                best, best_value = result, value
        if best is None:
            return "best: none feasible yet"
        return (f"best: sft={best.sft_rank}/rft={best.rft_rank} {best.points:.1f} pts "
                f"(acc {best.sft.accuracy:.0%}/{best.rft.accuracy:.0%}) {mib(best.size_bytes):.1f} MiB")

    def update(self, state, trials: list, seconds: float | None = None) -> None:
        """Redraw from the study loop's snapshot of the trials; `seconds` is the trial that just finished."""
        if seconds is not None:
            self._seconds.append(seconds)
        done = min(len(state.completed), self._bar.total)
        parts = [self._best(trials)]
        if self._seconds:
            per_trial = sum(self._seconds) / len(self._seconds)
            left = max(0, min(self._bar.total - done, len(state.untried)))
            parts.append(f"{per_trial:.0f} s/trial, ETA {left * per_trial / 60:.1f} min")
        self._bar.n = done
        self._bar.set_postfix_str(" | ".join(parts), refresh=True)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
