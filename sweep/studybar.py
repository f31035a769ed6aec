"""The study-level progress line: trial i of N, best feasible result so far, time per trial, ETA.

It sits at the top (position 0); the trainers' per-training bars appear below it."""

from __future__ import annotations

import sys


class StudyBar:
    def __init__(self, settings, *, enabled: bool = True):
        from tqdm import tqdm

        self._seconds: list[float] = []
        self._bar = tqdm(total=settings.trials, desc=f"study {settings.name}", unit="trial", position=0,
                         leave=True, disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                         bar_format="{desc}: {n}/{total} trials |{bar:20}| {postfix}")

    @staticmethod
    def _best(trials: list) -> str:
        from optuna.trial import TrialState

        best = None
        for t in trials:
            if t.state != TrialState.COMPLETE:
                continue
            if t.user_attrs.get("feasible") and (best is None or t.values[0] > best.values[0]):
                best = t
        if best is None:
            return "best: none feasible yet"
        a = best.user_attrs
        return (f"best: sft={a['sft_rank']}/rft={a['rft_rank']} {a['points']:.1f} pts "
                f"(acc {a['sft_accuracy']:.0%}/{a['rft_accuracy']:.0%}) {a['size_bytes'] / 2**20:.1f} MiB")

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
