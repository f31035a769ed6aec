"""What a person sees in the saved report: the Pareto plot's rank labels stay apart in the PNG as written
(after the legend has narrowed the axes), and the budget reads as the page's header says it."""

from __future__ import annotations

import re

import pytest

import study_fixtures as sf
from reports.build import build
from reports.plots import pareto_figure, png_bytes

pytestmark = pytest.mark.fast  # no test here builds a model

MIB = 1024 * 1024
# Every pair graded 0 of 100 on both adapters: all points sit on one line, their labels crowd each other.
FLAT = [sf.TrialSpec(s, r, 0, 0) for s, r in ((2, 8), (8, 16), (1, 4), (4, 16), (8, 2), (16, 4), (1, 1), (1, 8), (4, 1),
                                              (1, 2))]  # the pairs a real 10-trial study on `tiny` trained


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('legibility')}/studies.db"
    sf.write_sweep_study(url)
    sf.write_study(url, "flat", FLAT, budget=int(62.5 * MIB))
    # The same pairs graded before the NLL was recorded, below the points thresholds: mean accuracy on the axis.
    sf.write_study(url, "flat-older", [sf.TrialSpec(s.sft_rank, s.rft_rank, 20 + s.sft_rank, 30 + s.rft_rank, nll=False)
                                       for s in FLAT], budget=int(62.5 * MIB))
    return url


def saved_labels(report):
    """The rank labels of the Pareto figure and their boxes, as laid out in the saved PNG."""
    fig = pareto_figure(report.pairs, report.trials, report.goal, report.budget_bytes, "t")
    png_bytes(fig)  # savefig runs the final layout: the boxes below are the ones in the file
    renderer = fig.canvas.get_renderer()
    labels = [t for t in fig.axes[0].texts if re.fullmatch(r"\d+/\d+( α.*)?", t.get_text())]
    return fig, labels, [t.get_window_extent(renderer) for t in labels]


@pytest.mark.parametrize("study,objective", [("sweep", None), ("flat", None), ("flat-older", None),
                                             ("sweep", "answer-nll")])
def test_rank_labels_do_not_overlap_in_the_saved_figure(storage, study, objective):
    report = build(storage, study, objective)
    _, labels, boxes = saved_labels(report)
    overlapping = [(labels[i].get_text(), labels[j].get_text()) for i, a in enumerate(boxes)
                   for j, b in enumerate(boxes) if i < j and a.overlaps(b)]
    assert len(labels) >= 4 and overlapping == []


def test_budget_in_the_legend_has_the_headers_precision(storage):
    fig, _, _ = saved_labels(build(storage, "flat"))
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "budget 62.50 MiB" in legend


def test_the_recommendation_says_the_budget_as_the_header_does(storage):
    report = build(storage, "flat")
    assert "the 62.50 MiB budget" in report.recommendation.reason
