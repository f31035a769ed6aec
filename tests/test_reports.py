"""`reports` and `ranksweep report` on real SQLite studies written by tests/study_fixtures.py."""

from __future__ import annotations

import base64
import re
from dataclasses import replace

import optuna

import pytest
import study_fixtures as sf  # tests/ is on sys.path under pytest

from sweep import frontier as fr
from reports.build import FILES, build, render, write_files
from reports.plots import PARETO_PIXELS, RANKS_PIXELS
from sweep.bundle import combined_bytes
from sweep.objective import OBJECTIVES
from sweep.records import TrialResult
from trainers.errors import RanksweepError

pytestmark = pytest.mark.fast  # no test here builds a model


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """One SQLite storage holding every fixture study."""
    import optuna

    url = f"sqlite:///{tmp_path_factory.mktemp('studies') / 'studies.db'}"
    opened = optuna.storages.RDBStorage(url)
    for write in (sf.write_sweep_study, sf.write_single_trial_study, sf.write_unsampled_best_study,
                  sf.write_infeasible_study, sf.write_ungraded_study, sf.write_low_accuracy_study):
        write(opened)
    opened.remove_session()
    return url


@pytest.fixture(scope="module")
def sweep_files(storage):
    """The sweep study's report, computed and rendered once."""
    report = build(storage, "sweep")
    return report, render(report)


@pytest.fixture(scope="module")
def sweep(storage):
    trials, config = fr.load_trials(storage, "sweep")
    return trials, config, fr.combined_frontier(trials, config)


def dominates(a, b) -> bool:
    """a is at least as good as b on both objectives and better on one."""
    return (a["objective"] >= b["objective"] and a["size_bytes"] <= b["size_bytes"]
            and (a["objective"] > b["objective"] or a["size_bytes"] < b["size_bytes"]))


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# --- loading -----------------------------------------------------------------------------------------

def test_load_trials_has_every_trial_in_every_state(sweep):
    trials, config, _ = sweep
    assert list(trials["trial"]) == list(range(len(sf.SWEEP)))
    assert list(trials["state"]) == [
        {"complete": "COMPLETE", "over-budget": "PRUNED", "duplicate": "PRUNED", "fail": "FAIL",
         "running": "RUNNING"}[spec.outcome] for spec in sf.SWEEP]
    # Ranks of trials that never got user attrs come from their params.
    assert list(trials["sft_rank"]) == [spec.sft_rank for spec in sf.SWEEP]
    assert config.budget_bytes == sf.BUDGET_BYTES and config.homework_rest_bytes == sf.REST_BYTES
    assert trials.loc[5, "error"].startswith("OutOfMemoryError")


def test_missing_study_names_the_studies_there(storage):
    with pytest.raises(RanksweepError, match=r"No study named 'nope'.*single, sweep"):
        fr.load_trials(storage, "nope")


def test_missing_sqlite_file_is_an_error_and_is_not_created(tmp_path):
    with pytest.raises(RanksweepError, match="--storage"):
        fr.load_trials(f"sqlite:///{tmp_path / 'absent.db'}", "sweep")
    assert not (tmp_path / "absent.db").exists()


# --- adapters and pairs ---------------------------------------------------------------------------------

def test_adapter_table_has_one_row_per_graded_adapter(sweep):
    trials, _, _ = sweep
    adapters = fr.adapter_table(trials)
    done = [spec for spec in sf.SWEEP if spec.outcome == "complete"]
    for kind in ("sft", "rft"):
        rows = adapters[adapters["kind"] == kind].set_index("key")
        expected = {sf.adapter_key(kind, spec): spec for spec in done}
        assert set(rows.index) == set(expected)
        for key, spec in expected.items():
            assert rows.loc[key, "zip_bytes"] == sf.zip_bytes(kind, spec)
            assert rows.loc[key, "accuracy"] == pytest.approx(getattr(spec, f"{kind}_correct") / 100)
    shared = adapters[adapters["key"] == sf.adapter_key("sft", sf.SWEEP[1])].iloc[0]
    assert (shared["n_trials"], shared["first_trial"]) == (2, 1)  # trial 4 reused it from the cache


def test_every_pair_is_enumerated_with_its_size_source(sweep):
    trials, _, pairs = sweep
    adapters = fr.adapter_table(trials)
    assert len(pairs) == (adapters["kind"] == "sft").sum() * (adapters["kind"] == "rft").sum()
    by_trial = trials.set_index("trial")
    for _, row in pairs.iterrows():
        if row["sampled"]:
            assert row["size_source"] == "measured"
            assert row["size_bytes"] == by_trial.loc[row["trial"], "size_bytes"]
        else:
            assert row["size_source"] == "sum of parts"
            # Added up the way the loop adds up a trained pair (one zip's end record, not three).
            assert row["size_bytes"] == combined_bytes(sf.REST_BYTES, row["sft_zip_bytes"], row["rft_zip_bytes"])
            assert row["size_bytes"] == row["sft_zip_bytes"] + row["rft_zip_bytes"] + sf.REST_BYTES - 2 * 22
        assert row["feasible"] == (row["size_bytes"] <= sf.BUDGET_BYTES)
        assert row["objective_low"] <= row["objective"] <= row["objective_high"]
    # Trial 8 ran under an older, larger budget: measured, sampled, and over today's budget.
    eight = pairs[pairs["trial"] == 8].iloc[0]
    assert eight["sampled"] and not eight["feasible"]


def test_frontier_is_exactly_the_non_dominated_feasible_pairs(sweep):
    _, _, pairs = sweep
    feasible = pairs[pairs["feasible"]]
    front = pairs[pairs["on_frontier"]]
    assert len(front) >= 3 and (pairs.loc[~pairs["feasible"], "on_frontier"] == False).all()  # noqa: E712
    for _, row in front.iterrows():
        assert not any(dominates(other, row) for _, other in feasible.iterrows())
    for _, row in feasible[~feasible["on_frontier"]].iterrows():
        assert any(dominates(best, row) for _, best in front.iterrows())


def test_combined_frontier_is_at_least_as_good_as_the_trials(sweep):
    trials, _, pairs = sweep
    front = pairs[pairs["on_frontier"]]
    done = trials[(trials["state"] == "COMPLETE") & (trials["size_bytes"] <= sf.BUDGET_BYTES)]
    assert len(done) == 7
    for _, trial in done.iterrows():
        assert ((front["objective"] >= trial["value_score"] - 1e-9)
                & (front["size_bytes"] <= trial["value_size_bytes"])).any(), trial["trial"]
    # The study's own score and the recomputed objective agree on every sampled pair.
    sampled = pairs[pairs["sampled"]].set_index("trial")
    for _, trial in trials[trials["state"] == "COMPLETE"].iterrows():
        assert sampled.loc[trial["trial"], "objective"] == pytest.approx(trial["value_score"])


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_pairs_objective_is_the_study_loops_own_function(storage, sweep, name):
    """The report scores every pair, trained together or not, with sweep.objective, the function the loop
    tells Optuna: recomputed here from the adapters' records as the loop would, at the grade and at both ends
    of the adapters' 95% ranges (Wilson bounds; answer NLL ± 1.96 SE)."""
    trials, config, _ = sweep
    pairs = fr.combined_frontier(trials, config, name)
    study = optuna.load_study(study_name="sweep", storage=storage)
    adapters = {a.key: a for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
                for a in TrialResult.from_trial(t).adapters()}
    goal = OBJECTIVES[name]

    def worst(a):
        return replace(a, accuracy=a.ci_low, points=a.points_low, answer_nll=a.answer_nll + 1.96 * a.answer_nll_se)

    def best(a):
        return replace(a, accuracy=a.ci_high, points=a.points_high, answer_nll=a.answer_nll - 1.96 * a.answer_nll_se)

    assert pairs["objective"].notna().all()
    for _, row in pairs.iterrows():
        sft, rft = adapters[row["sft_key"]], adapters[row["rft_key"]]
        assert sft.answer_nll is not None and rft.answer_nll_se is not None  # the fixtures record the NLL
        assert row["objective"] == pytest.approx(goal.value(sft, rft), abs=1e-9)
        ends = sorted([goal.value(worst(sft), worst(rft)), goal.value(best(sft), best(rft))])
        assert (row["objective_low"], row["objective_high"]) == pytest.approx(tuple(ends), abs=1e-9)
        assert ends[0] < row["objective"] < ends[1]  # a real range, for the NLL objective too


# --- recommendation ---------------------------------------------------------------------------------------

def test_recommend_picks_the_best_feasible_pair(storage, sweep):
    _, _, pairs = sweep
    rec = fr.recommend(storage, "sweep")
    best = pairs[pairs["feasible"]]["objective"].max()
    assert rec.objective_value == best
    assert (rec.sft_rank, rec.rft_rank, rec.trial, rec.points) == (8, 16, 1, 51.0)
    assert (rec.sft_alpha, rec.rft_alpha, rec.adapter_dtype) == (32.0, 64.0, "fp32")
    assert rec.sft_key == sf.adapter_key("sft", sf.SWEEP[1]) and rec.sft_dir.endswith(rec.sft_key)
    assert rec.size_bytes == sf.measured_bytes(sf.SWEEP[1])
    assert "trial 1" in rec.reason and rec.reason.endswith(".")
    # 100 questions leave wide intervals: the smallest pair whose range reaches the pick's is named.
    match = re.fullmatch(r"interval overlaps the smaller pair sft=(\d+)/rft=(\d+) \((\d+\.\d) MiB\)", rec.overlaps)
    assert match
    low = pairs[(pairs["sft_rank"] == rec.sft_rank) & (pairs["rft_rank"] == rec.rft_rank)
                & (pairs["trial"] == 1)]["objective_low"].iloc[0]
    reaching = pairs[pairs["feasible"] & (pairs["size_bytes"] < rec.size_bytes) & (pairs["objective_high"] >= low)]
    smallest = reaching.sort_values("size_bytes").iloc[0]
    assert (int(match[1]), int(match[2])) == (smallest["sft_rank"], smallest["rft_rank"])


def test_recommend_can_pick_a_pair_never_trained_together(storage):
    rec = fr.recommend(storage, "unsampled")
    assert (rec.sft_rank, rec.rft_rank, rec.trial) == (8, 16, None)
    assert rec.size_bytes == combined_bytes(sf.REST_BYTES, sf.zip_bytes("sft", sf.TrialSpec(8, 4)),
                                            sf.zip_bytes("rft", sf.TrialSpec(4, 16)))
    assert "never trained as one trial" in rec.reason


def test_points_ties_are_broken_by_mean_accuracy(storage):
    trials, config = fr.load_trials(storage, "low")
    pairs = fr.combined_frontier(trials, config)
    assert (pairs["points"] == 0).all()
    rec = fr.recommend(storage, "low")
    assert (rec.sft_rank, rec.rft_rank, rec.points) == (2, 4, 0.0)
    assert "breaking a tie" in rec.reason


def test_objective_override_changes_the_pick(storage, sweep):
    _, _, pairs = sweep
    rec = fr.recommend(storage, "sweep", objective="rft-accuracy")
    feasible = pairs[pairs["feasible"]]
    assert rec.objective_value == feasible["rft_accuracy"].max() == 0.72
    # Ties on RFT accuracy go to the smallest pair: the smallest SFT adapter beside the best RFT one.
    assert rec.size_bytes == feasible[feasible["rft_accuracy"] == 0.72]["size_bytes"].min()
    assert rec.sft_rank == 1
    with pytest.raises(RanksweepError, match="Unknown objective"):
        fr.recommend(storage, "sweep", objective="speed")


# --- edge cases -------------------------------------------------------------------------------------------

def test_single_trial_study(storage):
    trials, config = fr.load_trials(storage, "single")
    pairs = fr.combined_frontier(trials, config)
    assert len(pairs) == 1 and pairs["on_frontier"].all() and pairs["trial"].tolist() == [0]
    rec = fr.recommend(storage, "single")
    assert (rec.trial, rec.overlaps) == (0, None)
    assert "the only pair that fits" in rec.reason


def test_study_without_a_feasible_pair_still_reports(storage):
    report = build(storage, "infeasible")
    assert len(report.pairs) == 4 and not report.pairs["feasible"].any() and not report.pairs["on_frontier"].any()
    assert report.recommendation is None and "no pair within 10.00 MiB" in report.problem
    with pytest.raises(RanksweepError, match="no pair within 10.00 MiB"):
        fr.recommend(storage, "infeasible")
    files = render(report)
    assert png_size(files["pareto.png"]) == PARETO_PIXELS
    assert "No recommendation" in files["report.html"].decode()
    assert files["frontier.csv"].decode().startswith("trial,sft_rank,rft_rank,size_mib,points,sft_accuracy,")


def test_study_without_graded_trials_has_empty_tables_and_still_draws(storage):
    report = build(storage, "ungraded")
    assert report.adapters.empty and list(report.adapters.columns) == list(fr.ADAPTER_COLUMNS)
    assert report.pairs.empty and list(report.pairs.columns) == list(fr.PAIR_COLUMNS)
    assert "no graded SFT/RFT pair yet" in report.problem
    files = render(report)
    assert png_size(files["pareto.png"]) == PARETO_PIXELS and png_size(files["ranks.png"]) == RANKS_PIXELS
    assert files["trials.csv"].decode().count("\n") == 1 + 3
    page = files["report.html"].decode()
    assert "no graded trials yet" in page and "still running" in page


# --- files ------------------------------------------------------------------------------------------------

def test_render_gives_pngs_of_fixed_size_and_a_self_contained_page(sweep_files):
    report, files = sweep_files
    assert list(files) == list(FILES)
    assert png_size(files["pareto.png"]) == PARETO_PIXELS and png_size(files["ranks.png"]) == RANKS_PIXELS
    page = files["report.html"].decode()
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(e) for e in embedded] == [files["pareto.png"], files["ranks.png"]]
    assert "<h2>Pareto frontier</h2>" in page and "Recommended pair" in page and "still running" in page
    assert "interval overlaps the smaller pair" in page and "homework_rest_bytes" in page
    # The advice works on a finished study: a resume refuses another --questions, a new study does not.
    assert "launch a new --study with the same flags and a larger --questions" in page
    assert "(--questions) would tell them apart" not in page
    frontier_part = page.split("<h2>Pareto frontier</h2>")[1].split("<h2>")[0]
    adapters_part = page.split("<h2>Graded adapters</h2>")[1].split("<h2>")[0]
    assert frontier_part.count("<tr><td") == report.pairs["on_frontier"].sum()  # one table row per frontier pair
    assert adapters_part.count("<tr><td") == len(report.adapters)  # one per graded adapter
    trials_csv = files["trials.csv"].decode().splitlines()
    assert len(trials_csv) == 1 + len(sf.SWEEP) and trials_csv[0].startswith("trial,state,sft_rank,rft_rank,")


def test_rank_labels_do_not_overlap(sweep_files):
    from sweep.objective import objective_for
    from reports.plots import pareto_figure

    report, _ = sweep_files
    fig = pareto_figure(report.pairs, report.trials, objective_for(None, report.config), sf.BUDGET_BYTES, "t")
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t for t in ax.texts if re.fullmatch(r"\d+/\d+( α.*)?", t.get_text())]
    frontier = report.pairs[report.pairs["on_frontier"]]
    frontier_labels = {f"{s}/{r}" for s, r in zip(frontier["sft_rank"], frontier["rft_rank"])}
    drawn = {t.get_text().split()[0] for t in labels}
    assert frontier_labels <= drawn  # every frontier pair is named
    assert len(labels) > len(frontier)  # other pairs are named where there is room
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_write_files_replaces_old_files_and_leaves_no_temp(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "frontier.csv").write_text("stale")
    written = write_files({"frontier.csv": b"new", "trials.csv": b"t"}, out)
    assert [p.name for p in written] == ["frontier.csv", "trials.csv"]
    assert (out / "frontier.csv").read_bytes() == b"new"
    assert sorted(p.name for p in out.iterdir()) == ["frontier.csv", "trials.csv"]
    with pytest.raises(RanksweepError, match="is a file"):
        write_files({"a": b""}, out / "trials.csv")


# --- the command ------------------------------------------------------------------------------------------

def test_cli_report_writes_five_files(ranksweep, storage, tmp_path):
    result = ranksweep("report", "--study", "sweep", "--storage", storage, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "runs" / "sweep" / "report"
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert all((out / name).stat().st_size > 0 for name in FILES)
    assert "Recommended: SFT rank 8, RFT rank 16" in result.stdout and "Pareto frontier" in result.stdout
    header, *rows = (out / "frontier.csv").read_text().splitlines()
    assert header.startswith("trial,sft_rank,rft_rank,size_mib,points,sft_accuracy,rft_accuracy")
    assert any(row.startswith(",") for row in rows)  # unsampled pairs leave `trial` empty


def test_cli_missing_study_is_one_line_and_exit_2(ranksweep, storage, tmp_path):
    result = ranksweep("report", "--study", "nope", "--storage", storage, "--out", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("ranksweep: error: No study named 'nope'")
    assert not (tmp_path / "out").exists()


def test_records_round_trip_and_read_older_studies():
    """A record reads back as written; attrs of an older study (no per-adapter dtype, points bounds, NLL,
    origin) read with defaults, and keys the records do not know are ignored."""
    result = sf.trial_result(sf.SWEEP[1], sf.BUDGET_BYTES)
    assert TrialResult.from_attrs(result.to_attrs()) == result
    older = {k: v for k, v in result.to_attrs().items()
             if not k.endswith(("_dtype", "_points_low", "_points_high", "_origin", "_parent_key", "sampler_seed",
                               "_answer_nll", "_answer_nll_se"))
             or k == "adapter_dtype"}
    older["constraint"] = 1.0  # a key of an earlier schema
    read = TrialResult.from_attrs(older)
    assert read.sft.dtype == "fp32" and read.sft.origin == "trained" and read.sft.parent_key is None
    assert read.sft.points_low is None and read.sft.answer_nll is None and read.sampler_seed is None
    assert read.sft.accuracy == result.sft.accuracy and read.size_bytes == result.size_bytes
    # A trial that stopped before grading has a pair (from its params) and no adapters.
    pruned = TrialResult.from_attrs({"skipped": "over-budget"}, {"sft_rank": 16, "rft_rank": 16})
    assert (pruned.sft_rank, pruned.sft, pruned.rft) == (16, None, None)
