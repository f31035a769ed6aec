"""A study's computed report as one record: what `reports.build` computes and its views (tables, plots, the
HTML page, the dashboard's note) read. Its own module, so that views need not import the builder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sweep.frontier import Recommendation
from sweep.objective import Objective

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Report:
    """A study's computed report: its tables, the recommendation (or why there is none)."""

    study: str
    storage: str
    config: StudyConfig
    goal: Objective
    budget_bytes: int
    trials: pd.DataFrame  # one row per trial (sweep.study_io.load_trials)
    adapters: pd.DataFrame  # one row per graded adapter
    pairs: pd.DataFrame  # every SFT×RFT pair (sweep.frontier.combined_frontier)
    recommendation: Recommendation | None
    problem: str | None  # why there is no recommendation
    margins: tuple = ()  # sweep.verdict.Margin: the pick against its rivals, paired on the same questions
    decision: object = None  # sweep.evidence.DecisionRecord, when the decision phase ran on the study
    rank_steps: tuple = ()  # sweep.verdict.RankStep: neighbouring ranks of one kind, paired
