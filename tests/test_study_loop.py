"""The study loop on the fast floor: `ranksweep launch` and `worker` as a user runs them, with real SQLite
storage, real data files and Optuna's own sampler, but a builder that plants each adapter's grade instead of
training it (tests/planted_builder.py). What this floor cannot see (training, grading, the artifact cache) is
tests/test_study.py's, on the tiny model.

Sizes are the 360M model's (sweep/sizing.py's `smollm2-360m` shape): under 50 MiB, rank 8 + rank 16 fits and
rank 16 + rank 16 does not, so the budget decides, as it does for the homework. The loop's tests run in
tens of seconds, not milliseconds: every trial writes its record into SQLite as a real study does."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import optuna
import pytest
from optuna.trial import TrialState

import sweep.commands.running as running
from planted_builder import PlantedBuilder, planted_accuracy
from small_data import write_small_data
from sweep.records import Pair, TrialResult
from sweep.sizing import config_for, pair_size
from trainers.errors import RanksweepError
from trainers.grading import points

# A hang guard, not a speed check: a study of a few trials writes a few hundred SQLite transactions.
pytestmark = [pytest.mark.fast, pytest.mark.timeout(120)]

MODEL = "smollm2-360m"
BUDGET_MB = 50
SFT_RANKS, RFT_RANKS = (4, 8, 16), (8, 16, 32)  # 5 of the 9 pairs fit


def fits(sft: int, rft: int) -> bool:
    return pair_size(config_for(MODEL), sft, rft, "fp32").total_compressed_bytes <= BUDGET_MB * 2**20


FEASIBLE = {(s, r) for s in SFT_RANKS for r in RFT_RANKS if fits(s, r)}


@pytest.fixture
def planted(monkeypatch):
    """Every launch and worker in this test builds its pairs with one PlantedBuilder (returned)."""
    builder = PlantedBuilder(MODEL)
    monkeypatch.setattr(running, "builder_for", lambda settings, progress: builder)
    return builder


@pytest.fixture
def workdir(tmp_path) -> Iterator[Path]:
    """Data files and the study's SQLite file, in memory-backed /dev/shm where the machine has it: the same
    SQLite, without a disk flush per committed attr (about 430 commits a study here; 15 ms each on this disk)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield write_small_data(tmp_path)
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="ranksweep-test-") as folder:
        yield write_small_data(Path(folder))


def launch(ranksweep, root: Path, study: str, trials: int, *extra: str):
    return ranksweep(
        "launch", "--study", study, "--storage", f"sqlite:///{root}/studies.db", "--base-model", MODEL,
        "--device", "cpu", "--preset", "quick", "--strategy", "independent",
        "--sft-ranks", ",".join(map(str, SFT_RANKS)), "--rft-ranks", ",".join(map(str, RFT_RANKS)),
        "--budget-mb", str(BUDGET_MB), "--trials", str(trials), "--train-data", root / "train.json",
        "--valid-data", root / "valid.json", "--rft-data", root / "rft.json", "--artifacts", root / "artifacts",
        "--no-progress", *extra, cwd=root,
    )


def load(root: Path, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{root}/studies.db")


def ranks(trial) -> tuple[int, int]:
    return trial.params["sft_rank"], trial.params["rft_rank"]


def test_the_loop_builds_only_pairs_that_fit_and_records_them(ranksweep, planted, workdir):
    assert FEASIBLE == {(4, 8), (4, 16), (8, 8), (8, 16), (16, 8)}  # rank 8 + 16 fits 50 MiB, 16 + 16 does not
    result = launch(ranksweep, workdir, "s", trials=3)
    assert result.returncode == 0, result.stderr
    assert "Study 's': 3 pairs trained and graded." in result.stdout

    study = load(workdir, "s")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3 and len({ranks(t) for t in complete}) == 3
    # The builder was asked for exactly the completed pairs, each once, every one of them within the budget.
    assert sorted((p.sft_rank, p.rft_rank) for p in planted.built) == sorted(ranks(t) for t in complete)
    assert {(p.sft_rank, p.rft_rank) for p in planted.built} <= FEASIBLE
    budget = BUDGET_MB * 2**20
    for t in complete:
        record = TrialResult.from_attrs(t.user_attrs)
        sft, rft = record.sft, record.rft
        assert (sft.accuracy, rft.accuracy) == (planted_accuracy("sft", sft.rank), planted_accuracy("rft", rft.rank))
        assert record.points == points("sft", sft.accuracy) + points("rft", rft.accuracy)
        assert record.size_bytes <= record.size_bytes_predicted <= budget and record.feasible
        assert t.values == [record.score, record.size_bytes]
        assert t.constraints["size"] == record.size_bytes - budget < 0
    # A pair the sampler proposed over the budget is pruned untrained and named so, with its predicted size.
    for t in study.get_trials(states=(TrialState.PRUNED,)):
        record = TrialResult.from_attrs(t.user_attrs)
        assert record.skipped in ("over-budget", "duplicate")
        assert (record.skipped == "over-budget") == (ranks(t) not in FEASIBLE)


def test_the_loop_stops_when_every_feasible_pair_was_tried_and_a_resume_builds_nothing_twice(
        ranksweep, planted, workdir):
    first = launch(ranksweep, workdir, "s", trials=2)
    assert first.returncode == 0, first.stderr
    result = launch(ranksweep, workdir, "s", trials=100)
    assert result.returncode == 0, result.stderr
    assert f"every feasible pair has been tried ({len(FEASIBLE)} complete, 100 asked for)" in result.stdout
    complete = load(workdir, "s").get_trials(states=(TrialState.COMPLETE,))
    assert {ranks(t) for t in complete} == FEASIBLE
    built = [(p.sft_rank, p.rft_rank) for p in planted.built]
    assert sorted(built) == sorted(FEASIBLE)  # across both runs, each pair built once


def test_a_worker_joins_and_raises_the_target(ranksweep, planted, workdir):
    assert launch(ranksweep, workdir, "s", trials=2).returncode == 0
    result = ranksweep("worker", "--study", "s", "--storage", f"sqlite:///{workdir}/studies.db", "--device", "cpu",
                       "--trials", "4", "--no-progress", cwd=workdir)
    assert result.returncode == 0, result.stderr
    complete = load(workdir, "s").get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4 and len({ranks(t) for t in complete}) == 4
    assert len(planted.built) == 4


def test_a_failing_trial_is_recorded_and_the_study_goes_on(ranksweep, monkeypatch, workdir):
    failing = (8, 16)
    builder = PlantedBuilder(MODEL, fail=(failing,))
    monkeypatch.setattr(running, "builder_for", lambda settings, progress: builder)
    result = launch(ranksweep, workdir, "s", trials=100)
    assert result.returncode == 0, result.stderr
    assert "failed (MemoryError: planted failure of sft=8/rft=16); the study goes on" in result.stderr
    study = load(workdir, "s")
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert [ranks(t) for t in failed] == [failing]
    assert failed[0].user_attrs["error"] == "MemoryError: planted failure of sft=8/rft=16"
    # Every other feasible pair completed; the failed one was not tried again in this run.
    assert {ranks(t) for t in study.get_trials(states=(TrialState.COMPLETE,))} == FEASIBLE - {failing}
    assert [(p.sft_rank, p.rft_rank) for p in builder.built].count(failing) == 1


def test_an_error_the_user_must_fix_stops_the_study_with_one_line(ranksweep, monkeypatch, workdir):
    builder = PlantedBuilder(MODEL, stop=RanksweepError("The homework's grader printed no score; check grader/."))
    monkeypatch.setattr(running, "builder_for", lambda settings, progress: builder)
    result = launch(ranksweep, workdir, "s", trials=4)
    assert result.returncode == 2
    assert result.stderr == "ranksweep: error: The homework's grader printed no score; check grader/.\n"
    assert len(builder.built) == 1  # the study stopped at its first trial
    trials = load(workdir, "s").get_trials()
    [failed] = [t for t in trials if t.state == TrialState.FAIL]  # (a pair proposed over budget is PRUNED first)
    assert failed.user_attrs["error"].startswith("The homework's grader")
    assert {t.state for t in trials} <= {TrialState.FAIL, TrialState.PRUNED}


def test_export_recommends_the_best_pair_the_loop_found(ranksweep, planted, workdir):
    """Accuracy rises with rank, so the pick is the feasible pair with the most points, smallest on a tie."""
    assert launch(ranksweep, workdir, "s", trials=100).returncode == 0
    storage = f"sqlite:///{workdir}/studies.db"

    def pair_points(pair):
        return points("sft", planted_accuracy("sft", pair[0])) + points("rft", planted_accuracy("rft", pair[1]))

    def pair_bytes(pair):
        return pair_size(config_for(MODEL), *pair, "fp32").total_raw_bytes

    best = max(pair_points(p) for p in FEASIBLE)
    expected = min((p for p in FEASIBLE if pair_points(p) == best), key=pair_bytes)
    out = workdir / "ranks.json"
    result = ranksweep("export", "--to", out, "--study", "s", "--storage", storage, cwd=workdir)
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    assert (doc["sft"]["rank"], doc["rft"]["rank"]) == expected, doc

    status = ranksweep("status", "--study", "s", "--storage", storage, "--json", cwd=workdir)
    assert status.returncode == 0, status.stderr
    assert sum(t["state"] == "COMPLETE" for t in json.loads(status.stdout)["trials"]) == len(FEASIBLE)


def test_a_planted_pair_is_a_plain_pair():
    """The builder answers the loop's typed Pair, so the seam it stands on is the one ranksweep's trainer uses."""
    builder = PlantedBuilder(MODEL)
    outcome = builder.build(Pair(sft_rank=8, rft_rank=16, alpha_ratio=4.0, lr=1e-3, epochs=1.0, adapter_dtype="fp32"))
    assert (outcome.sft.rank, outcome.rft.rank) == (8, 16)
    assert outcome.sft.zip_bytes < outcome.sft.raw_bytes and outcome.zip_bytes is None
