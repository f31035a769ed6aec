"""What a study maximises for an SFT/RFT pair, and the range of it the adapters' Wilson bounds allow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainers.errors import RanksweepError
from trainers.grading import rft_points, sft_points

if TYPE_CHECKING:
    import pandas as pd

OBJECTIVES = ("points", "rft-accuracy", "sft-accuracy", "mean-accuracy")


@dataclass(frozen=True)
class Objective:
    """One objective: its name, how to print it, and its value for a pair of accuracies (fractions)."""

    name: str
    label: str  # axis label, with unit
    scale: float  # multiply a value by this to show it (accuracies as percent)
    noun: str  # what a shown value is ("points", "RFT accuracy")

    def values(self, sft_acc: pd.Series, rft_acc: pd.Series) -> pd.Series:
        """The objective for each pair; `points` adds mean accuracy / 100, as the study's score does."""
        mean = (sft_acc + rft_acc) / 2
        if self.name == "points":
            # Points are flat at 0 below 40% SFT / 60% RFT accuracy; the tie-break (< 0.01) keeps a
            # study climbing there and can never outweigh a real points difference.
            return pair_points(sft_acc, rft_acc) + mean / 100
        if self.name == "sft-accuracy":
            return sft_acc.astype(float)
        if self.name == "rft-accuracy":
            return rft_acc.astype(float)
        return mean.astype(float)

    def show(self, value: float) -> str:
        """A value as printed in tables and sentences ("42.51 points", "71.0% RFT accuracy")."""
        if self.name == "points":
            return f"{value:.2f} {self.noun}"
        return f"{value * self.scale:.1f}% {self.noun}"


def objective_for(name: str | None, config: dict) -> Objective:
    """The objective named on the command line, else the study's, else points."""
    chosen = name or config.get("objective") or "points"
    if chosen == "points":
        return Objective("points", "homework points (ties broken by mean accuracy)", 1.0, "points")
    if chosen == "sft-accuracy":
        return Objective(chosen, "SFT accuracy (%)", 100.0, "SFT accuracy")
    if chosen == "rft-accuracy":
        return Objective(chosen, "RFT accuracy (%)", 100.0, "RFT accuracy")
    if chosen == "mean-accuracy":
        return Objective(chosen, "mean of SFT and RFT accuracy (%)", 100.0, "mean accuracy")
    raise RanksweepError(f"Unknown objective '{chosen}'; use one of {', '.join(OBJECTIVES)}.")


def pair_points(sft_acc: pd.Series, rft_acc: pd.Series) -> pd.Series:
    """Homework points of each pair (SFT + RFT, extra credit included); accuracies are fractions."""
    return sft_acc.map(_finite(sft_points)) + rft_acc.map(_finite(rft_points))


def _finite(points_fn):
    """Points for a known accuracy, NaN for an unknown one (an adapter not graded yet)."""
    return lambda acc: float("nan") if acc != acc else points_fn(float(acc))
