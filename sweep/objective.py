"""What a study optimises for an SFT/RFT pair: the one objective function the loop and the report share.

An objective reads each adapter's recorded numbers (`accuracy`, `points`, and whatever else a case
needs, such as `answer_nll`) from anything that has them as attributes: `sweep.records.AdapterResult`
in the loop, columns of a DataFrame in the report, so the arithmetic works on floats and pandas Series
alike. Its direction lives here too: the study's first objective is created with it and the report's
frontier reads it, so adding a minimised objective is one more case below. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainers.errors import RanksweepError

if TYPE_CHECKING:
    from sweep.settings import StudyConfig

MAXIMIZE, MINIMIZE = "maximize", "minimize"
SIZE_METRIC = "zipped bytes"  # the study's second value: the zipped submission, always minimised


@dataclass(frozen=True)
class Objective:
    """One objective: its name, direction, how to print it, and its value for a pair of adapters."""

    name: str
    direction: str  # MAXIMIZE or MINIMIZE: how the study's first value is optimised
    label: str  # axis label, with unit
    scale: float  # multiply a value by this to show it (accuracies as percent)
    noun: str  # what a shown value is ("points", "RFT accuracy")

    @property
    def sign(self) -> int:
        """+1 when higher is better, -1 when lower is: `sign * value` always grows with quality."""
        return 1 if self.direction == MAXIMIZE else -1

    def value(self, sft: Any, rft: Any) -> Any:
        """The objective of a pair; `sft`/`rft` have `accuracy` and `points` attributes (floats or Series)."""
        mean = (sft.accuracy + rft.accuracy) / 2
        if self.name == "points":
            # Points are flat at 0 below 40% SFT / 60% RFT accuracy; the tie-break (< 0.01) keeps a study
            # climbing there and can never outweigh a real points difference.
            return sft.points + rft.points + _tie_break(sft, rft, mean)
        if self.name == "answer-nll":
            # A result graded without an NLL (an older study, a homework grader) has no value here: NaN,
            # which the report leaves off its frontier and its pick.
            return (_nll(sft) + _nll(rft)) / 2
        if self.name == "sft-accuracy":
            return sft.accuracy * 1.0
        if self.name == "rft-accuracy":
            return rft.accuracy * 1.0
        return mean * 1.0

    def show(self, value: float) -> str:
        """A value as printed in tables and sentences ("42.51 points", "71.0% RFT accuracy")."""
        if self.name == "points":
            return f"{value:.2f} {self.noun}"
        if self.name == "answer-nll":
            return f"{value:.3f} {self.noun}"
        return f"{value * self.scale:.1f}% {self.noun}"


OBJECTIVES = {
    o.name: o
    for o in (
        Objective("points", MAXIMIZE, "homework points (ties broken by answer NLL)", 1.0, "points"),
        Objective("rft-accuracy", MAXIMIZE, "RFT accuracy (%)", 100.0, "RFT accuracy"),
        Objective("sft-accuracy", MAXIMIZE, "SFT accuracy (%)", 100.0, "SFT accuracy"),
        Objective("mean-accuracy", MAXIMIZE, "mean of SFT and RFT accuracy (%)", 100.0, "mean accuracy"),
        Objective("answer-nll", MINIMIZE, "mean answer NLL (nats per token, lower is better)", 1.0,
                  "nats per answer token"),
    )
}


def _nll(result: Any) -> Any:
    """`result.answer_nll`, NaN where it was not recorded (None)."""
    value = getattr(result, "answer_nll", None)
    return float("nan") if value is None else value


def _tie_break(sft: Any, rft: Any, mean_accuracy: Any) -> Any:
    """A bonus under 0.01 that grows as the pair's mean answer NLL falls (it moves where accuracy, in 1%
    steps, ties); mean accuracy / 100 for results recorded without an NLL."""
    sft_nll, rft_nll = getattr(sft, "answer_nll", None), getattr(rft, "answer_nll", None)
    if sft_nll is None or rft_nll is None:
        return mean_accuracy / 100
    bonus = 0.01 / (1 + (sft_nll + rft_nll) / 2)
    if hasattr(bonus, "where"):  # pandas Series: rows without an NLL fall back row by row
        return bonus.where(bonus.notna(), mean_accuracy / 100)
    return bonus if bonus == bonus else mean_accuracy / 100  # NaN check for floats


def objective_for(name: str | None, config: StudyConfig | None = None) -> Objective:
    """The objective named (on the command line), else the study config's, else points."""
    chosen = name or (config.objective if config is not None else None) or "points"
    if chosen not in OBJECTIVES:
        raise RanksweepError(f"Unknown objective '{chosen}'; use one of {', '.join(OBJECTIVES)}.")
    return OBJECTIVES[chosen]


def study_directions(objective: str) -> list[str]:
    """The study's two directions: the objective's, then the zipped size (bytes), always minimised."""
    return [objective_for(objective).direction, MINIMIZE]


def metric_names(objective: str) -> list[str]:
    """The names of the study's two values, as optuna-dashboard labels them."""
    return [objective_for(objective).name, SIZE_METRIC]
