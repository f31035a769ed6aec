"""The answer NLL in `status` and `report`, the Pareto plot's axis where points are flat, and studies graded
before ranksweep recorded the NLL, on real SQLite studies written by tests/study_fixtures.py."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
import study_fixtures as sf
from cli_runner import run_main

from reports.build import build, render
from reports.plots import OBJECTIVE, TIE_ACCURACY, TIE_NLL, pareto_data
from trainers.errors import RanksweepError

pytestmark = pytest.mark.fast  # no test here builds a model

MIB = 1024 * 1024
# Every pair graded 0 of 100 (the random `tiny` model): points and accuracy are flat, the NLL is not.
FLAT = [sf.TrialSpec(s, r, 0, 0) for s, r in ((2, 8), (8, 16), (1, 4), (4, 16), (8, 2), (1, 1))]
# Below the points thresholds, graded before the NLL was recorded: only mean accuracy separates the pairs.
FLAT_OLDER = [sf.TrialSpec(s, r, 20 + s, 30 + r, nll=False) for s, r in ((2, 8), (8, 16), (1, 4), (4, 16))]


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    import optuna

    url = f"sqlite:///{tmp_path_factory.mktemp('nll') / 'studies.db'}"
    opened = optuna.storages.RDBStorage(url)
    sf.write_sweep_study(opened)
    sf.write_older_study(opened)
    sf.write_mixed_nll_study(opened)
    sf.write_study(opened, "flat", FLAT)
    sf.write_study(opened, "flat-older", FLAT_OLDER)
    opened.remove_session()
    return url


def nll(kind: str, spec: sf.TrialSpec) -> tuple[float, float]:
    return sf.answer_nll(kind, spec, getattr(spec, f"{kind}_correct") / 100)


# --- status -----------------------------------------------------------------------------------------------

def test_status_json_and_text_show_each_adapters_nll(storage):
    doc = json.loads(run_main("status", "--study", "sweep", "--storage", storage, "--json").stdout)
    one = doc["trials"][1]  # sf.SWEEP[1]: SFT 8 / RFT 16
    assert (one["sft_answer_nll"], one["sft_answer_nll_se"]) == nll("sft", sf.SWEEP[1])
    assert (one["rft_answer_nll"], one["rft_answer_nll_se"]) == nll("rft", sf.SWEEP[1])
    assert doc["trials"][2]["sft_answer_nll"] is None  # pruned: never graded
    text = run_main("status", "--study", "sweep", "--storage", storage)
    assert text.returncode == 0 and "sft NLL" in text.stdout.splitlines()[0]
    row = next(line for line in text.stdout.splitlines() if line.split()[:2] == ["1", "COMPLETE"])
    sft, rft = nll("sft", sf.SWEEP[1]), nll("rft", sf.SWEEP[1])
    assert f"{sft[0]:.3f}±{sft[1]:.3f}" in row and f"{rft[0]:.3f}±{rft[1]:.3f}" in row


def test_status_of_an_older_study_shows_dashes(storage):
    doc = json.loads(run_main("status", "--study", "older", "--storage", storage, "--json").stdout)
    assert all(t["sft_answer_nll"] is None and t["rft_answer_nll_se"] is None for t in doc["trials"])
    text = run_main("status", "--study", "older", "--storage", storage)
    assert text.returncode == 0 and text.stderr == ""
    rows = [line.split() for line in text.stdout.splitlines()[1:] if "COMPLETE" in line]
    assert len(rows) == 3 and all(row[-2:] == ["-", "-"] for row in rows)


# --- report tables --------------------------------------------------------------------------------------

def test_report_csvs_and_page_carry_the_nll(storage):
    report = build(storage, "sweep")
    files = render(report)
    front = list(csv.DictReader(io.StringIO(files["frontier.csv"].decode())))
    assert front and all(row["answer_nll"] for row in front)
    for row in front:  # the pair's NLL is its adapters' mean; its SE the SE of that mean
        s, r = float(row["sft_answer_nll"]), float(row["rft_answer_nll"])
        s_se, r_se = float(row["sft_answer_nll_se"]), float(row["rft_answer_nll_se"])
        assert float(row["answer_nll"]) == pytest.approx((s + r) / 2)
        assert float(row["answer_nll_se"]) == pytest.approx((s_se ** 2 + r_se ** 2) ** 0.5 / 2)
    trials = {int(row["trial"]): row for row in csv.DictReader(io.StringIO(files["trials.csv"].decode()))}
    assert float(trials[1]["sft_answer_nll"]) == nll("sft", sf.SWEEP[1])[0]
    assert float(trials[1]["rft_answer_nll_se"]) == nll("rft", sf.SWEEP[1])[1]
    page = files["report.html"].decode()
    pick = report.pairs[(report.pairs["trial"] == 1)].iloc[0]
    assert "answer NLL ± SE" in page and f"{pick['answer_nll']:.3f} ± {pick['answer_nll_se']:.3f}" in page
    sft = nll("sft", sf.SWEEP[1])
    assert f"{sft[0]:.3f} ± {sft[1]:.3f}" in page.split("<h2>Graded adapters</h2>")[1]


def test_an_older_study_without_nll_reports_with_empty_cells(storage):
    report = build(storage, "older")
    assert report.recommendation is not None and (report.recommendation.sft_rank, report.recommendation.rft_rank) == (8, 16)
    files = render(report)
    front = list(csv.DictReader(io.StringIO(files["frontier.csv"].decode())))
    assert front and all(row["answer_nll"] == "" and row["sft_answer_nll_se"] == "" for row in front)
    frontier_part = files["report.html"].decode().split("<h2>Pareto frontier</h2>")[1].split("<h2>")[0]
    column = re.findall(r"<th>(.*?)</th>", frontier_part).index("answer NLL ± SE")
    rows = [re.findall(r'<td class="num">(.*?)</td>', row) for row in frontier_part.split("<tr>")[2:]]
    assert len(rows) == len(front) and all(row[column] == "-" for row in rows)


def test_answer_nll_objective_on_an_older_study_is_one_sentence(storage, tmp_path):
    with pytest.raises(RanksweepError, match="graded before ranksweep recorded the answer NLL"):
        build(storage, "older", "answer-nll")
    out = tmp_path / "out"
    result = run_main("report", "--study", "older", "--storage", storage, "--objective", "answer-nll", "--out", out)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert not out.exists()


def test_answer_nll_objective_leaves_out_pairs_without_an_nll(storage):
    report = build(storage, "mixed", "answer-nll")
    pairs = report.pairs
    scored = pairs[pairs["objective"].notna()]
    assert len(scored) == 1 and len(pairs) == 9  # only SFT 8 / RFT 16 (trial 2) was graded with an NLL
    assert not pairs.loc[pairs["objective"].isna(), "on_frontier"].any()
    rec = report.recommendation
    assert (rec.sft_rank, rec.rft_rank, rec.trial) == (8, 16, 2)
    assert "Lowest mean answer NLL" in rec.reason and "8 more pair(s)" in rec.reason
    data = pareto_data(pairs, report.trials, report.goal, report.budget_bytes)
    assert data.left_out == 8 and len(data.points) == 1
    render(report)  # draws without the pairs it cannot place


# --- the Pareto plot's axis -----------------------------------------------------------------------------

def test_flat_points_plot_the_answer_nll_that_breaks_the_tie(storage):
    report = build(storage, "flat")
    assert (report.pairs["points"] == 0).all() and (report.pairs["mean_accuracy"] == 0).all()
    data = pareto_data(report.pairs, report.trials, report.goal, report.budget_bytes)
    assert data.axis.quantity == TIE_NLL and data.axis.inverted and "0.00 points" in data.axis.why
    assert data.points["y"].tolist() == pytest.approx(report.pairs["answer_nll"].tolist())
    assert data.points["y"].nunique() > 1  # it separates the pairs that points and accuracy do not
    # The pick is the pair the axis puts on top: the lowest NLL that fits.
    rec = report.recommendation
    fits = data.points[data.points["feasible"]]
    top = fits.loc[fits["y"].idxmin()]
    assert (top["sft_rank"], top["rft_rank"]) == (rec.sft_rank, rec.rft_rank)
    assert (data.points["y_low"] < data.points["y"]).all() and (data.points["y"] < data.points["y_high"]).all()


def test_flat_points_without_nll_plot_mean_accuracy(storage):
    report = build(storage, "flat-older")
    assert (report.pairs["points"] == 0).all()
    data = pareto_data(report.pairs, report.trials, report.goal, report.budget_bytes)
    assert data.axis.quantity == TIE_ACCURACY and not data.axis.inverted
    assert data.points["y"].tolist() == pytest.approx((report.pairs["mean_accuracy"] * 100).tolist())


def test_varied_points_plot_the_objective(storage):
    report = build(storage, "sweep")
    data = pareto_data(report.pairs, report.trials, report.goal, report.budget_bytes)
    assert data.axis.quantity == OBJECTIVE and data.axis.why is None and not data.axis.inverted
    assert data.points["y"].tolist() == pytest.approx(report.pairs["objective"].tolist())
    nll_goal = build(storage, "sweep", "answer-nll")
    data = pareto_data(nll_goal.pairs, nll_goal.trials, nll_goal.goal, nll_goal.budget_bytes)
    assert data.axis.quantity == OBJECTIVE and data.axis.inverted  # minimised: better is still up
    assert data.points["y"].tolist() == pytest.approx(nll_goal.pairs["answer_nll"].tolist())
