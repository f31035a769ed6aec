"""The recommendation's paired margins and the decision phase, on studies whose grades are planted in a real
artifact cache (no model): what it grades, when it stops, what it drops, and that a kill loses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.frontier import combined_frontier, pick
from sweep.objective import objective_for
from sweep.study_io import load_trials
from sweep.decision import AdapterRef, decide
from sweep.evidence import DecisionRecord, SeedEntry, extra_grade_path
from sweep.settings import StudyConfig, config_grading_key
from sweep.verdict import margins
from tests.study_fixtures import TrialSpec, adapter_key, write_study
from trainers.data import write_json_atomic
from trainers.grading import score
from trainers.outcomes import question_hash

POOL = 400


def question(i: int) -> str:
    return f"How many grams are there per {i} kg?"


def planted_grade(kind: str, right: list[bool], start: int, end: int) -> dict:
    """A grade of questions start..end-1 as grade_model stores it, answers right where `right` says."""
    completions = ["<answer>1</answer>" if right[i] else "<answer>2</answer>" for i in range(start, end)]
    grade = score(kind, completions, [1.0] * (end - start), questions=[question(i) for i in range(start, end)],
                  nlls=[0.5 if right[i] else 1.5 for i in range(start, end)], first_index=start)
    return grade.to_json()


class PlantedGrader:
    """Grades from planted answer vectors (one per adapter key); counts every grade and training it does."""

    def __init__(self, truth: dict[str, list[bool]], artifacts: Path, grading_key: str, pool: int = POOL,
                 fail_after: int | None = None):
        self.truth, self.artifacts, self.grading_key, self.pool = truth, artifacts, grading_key, pool
        self.graded: list[tuple[str, int, int]] = []
        self.trained: list[tuple[str, int]] = []
        self.fail_after = fail_after

    def grade(self, adapter: AdapterRef, start: int, end: int) -> None:
        if self.fail_after is not None and len(self.graded) >= self.fail_after:
            raise KeyboardInterrupt  # killed in the middle of this grade: nothing of it is written
        self.graded.append((adapter.key, start, end))
        write_json_atomic(extra_grade_path(adapter.dir, self.grading_key, start, end),
                          planted_grade(adapter.kind, self.truth[adapter.key], start, end))

    def train_seed(self, adapter: AdapterRef, seed: int, graded_to: int) -> SeedEntry:
        self.trained.append((adapter.key, seed))
        key = f"{adapter.key}-seed{seed}"
        folder = self.artifacts / "adapters" / key
        # Another seed answers like the first but for one question in ten, which it gets wrong.
        self.truth[key] = [r and i % 10 != 2 * seed for i, r in enumerate(self.truth[adapter.key])]
        write_json_atomic(folder / f"grade-{self.grading_key}.json",
                          planted_grade(adapter.kind, self.truth[key], 0, graded_to))
        return SeedEntry(seed, key, str(folder))

    def cannot_reseed(self, adapter: AdapterRef) -> str | None:
        return None


def plant_study(tmp_path: Path, specs: list[TrialSpec], truth: dict[str, list[bool]]):
    """A study of `specs` in SQLite whose adapters' first grades (questions 0..99) come from `truth`."""
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    artifacts = tmp_path / "cache"
    write_study(storage, "d", specs, artifacts=str(artifacts))
    trials, config = load_trials(storage, "d")
    key = config_grading_key(config)
    for spec in specs:
        for kind in ("sft", "rft"):
            name = adapter_key(kind, spec)
            write_json_atomic(artifacts / "adapters" / name / f"grade-{key}.json",
                              planted_grade(kind, truth[name], 0, 100))
    pairs = combined_frontier(trials, config)
    rec = pick(pairs, objective_for(None, config), config.budget_bytes, "d")
    return pairs, rec, key, artifacts


# Two pairs that share their RFT adapter; SFT 4 is right on every even question, SFT 8 on those and every 50th
# odd one: 2 more right answers per 100 questions, never fewer.
PICK, RIVAL = TrialSpec(8, 16, 52, 72), TrialSpec(4, 16, 50, 72)


def truth_table(extra_every: int = 50) -> dict[str, list[bool]]:
    rival = [i % 2 == 0 for i in range(POOL)]
    better = [r or i % extra_every == 1 for i, r in enumerate(rival)]
    return {adapter_key("sft", PICK): better, adapter_key("sft", RIVAL): rival,
            adapter_key("rft", PICK): [i % 100 < 72 for i in range(POOL)]}


@pytest.mark.fast
def test_margin_of_the_pick_over_a_smaller_pair_is_paired_and_in_words(tmp_path):
    truth = truth_table()
    pairs, rec, key, _ = plant_study(tmp_path, [PICK, RIVAL], truth)
    assert (rec.sft_rank, rec.rft_rank) == (8, 16)
    found = margins(pairs, (rec.sft_key, rec.rft_key), key, DecisionRecord())
    assert [m.other for m in found] == ["SFT 4 / RFT 16"]
    m = found[0]
    # 2 more right answers of 100 in SFT's linear range: 25 x 0.02 / 0.2 = 2.5 points; one question's swing is 1.25.
    assert m.points.estimate == pytest.approx(2.5) and m.points.questions == 100
    assert m.points.low >= 0 and not m.decisive  # no resample turns it around; too few draw a discordant one
    assert m.extra_bytes > 0
    text = m.sentence()
    assert text.startswith("SFT 8 / RFT 16 beats SFT 4 / RFT 16 by 2.5 points (95% paired interval 0.0 to ")
    assert "MiB more: not decisive: the interval includes 0; grading about" in text
    assert m.nll.estimate < 0  # the planted NLL follows the right answers


@pytest.mark.fast
def test_decision_phase_grades_rounds_until_decisive(tmp_path):
    truth = truth_table()
    pairs, rec, key, artifacts = plant_study(tmp_path, [PICK, RIVAL], truth)
    grader = PlantedGrader(truth, artifacts, key)
    saved = []
    out = decide(pairs, (rec.sft_key, rec.rft_key), key, DecisionRecord(), grader, first_questions=100,
                 round_questions=50, save=saved.append, progress=False)
    assert out.stopped == "SFT 8 / RFT 16 is decisive over every rival."
    assert out.record.dropped and out.record.dropped[0].startswith("SFT 4 / RFT 16: behind SFT 8 / RFT 16")
    # The three distinct adapters (the RFT one is shared) graded in rounds of 50, the same questions each.
    rounds = sorted({(s, e) for _, s, e in grader.graded})
    assert rounds[0] == (100, 150) and all(b[0] == a[1] for a, b in zip(rounds, rounds[1:]))
    assert len(grader.graded) == 3 * len(rounds) and out.record.questions == rounds[-1][1] < POOL
    assert not grader.trained
    assert saved[-1] == out.record and saved[-1].verdict == out.stopped
    # The report's margin, read back from the cache and the record, is decisive too.
    m = margins(pairs, (rec.sft_key, rec.rft_key), key, out.record)[0]
    assert m.decisive and m.points.questions == out.record.questions and m.sentence().endswith(": decisive")


@pytest.mark.fast
def test_decision_phase_trains_seeds_when_the_pool_is_spent_and_says_what_it_would_take(tmp_path):
    truth = truth_table(extra_every=10**6)  # SFT 8 right exactly where SFT 4 is beyond the first 100 questions
    truth[adapter_key("sft", PICK)][1] = truth[adapter_key("sft", PICK)][3] = True
    pairs, rec, key, artifacts = plant_study(tmp_path, [PICK, RIVAL], truth)
    grader = PlantedGrader(truth, artifacts, key, pool=200)
    out = decide(pairs, (rec.sft_key, rec.rft_key), key, DecisionRecord(), grader, first_questions=100,
                 round_questions=50, max_seeds=2, save=lambda r: None, progress=False)
    assert out.record.questions == 200
    assert sorted(grader.trained) == sorted((k, 1) for k in (adapter_key("sft", PICK), adapter_key("sft", RIVAL),
                                                               adapter_key("rft", PICK)))
    assert "spent with 1 rival(s) still open" in out.stopped
    # Every seed is graded on every question so far, and the margin now counts both seeds of each adapter.
    assert all(len(v) == 1 for v in out.record.seeds.values())
    assert not out.margins[0].decisive and out.margins[0].points.questions == 200


@pytest.mark.fast
def test_a_kill_during_the_decision_phase_loses_at_most_the_running_grade(tmp_path):
    truth = truth_table()
    pairs, rec, key, artifacts = plant_study(tmp_path, [PICK, RIVAL], truth)
    whole = PlantedGrader(dict(truth), artifacts, key)
    expected = decide(pairs, (rec.sft_key, rec.rft_key), key, DecisionRecord(), whole, first_questions=100,
                      save=lambda r: None, progress=False)
    for path in artifacts.rglob("grade-*+q*.json"):  # start again from the trials' grades alone
        path.unlink()
    saved: list[DecisionRecord] = []
    killed = PlantedGrader(dict(truth), artifacts, key, fail_after=4)
    with pytest.raises(KeyboardInterrupt):
        decide(pairs, (rec.sft_key, rec.rft_key), key, DecisionRecord(), killed, first_questions=100,
               save=saved.append, progress=False)
    assert saved[-1].questions == 150  # the first round was recorded; the second was cut after one grade
    again = PlantedGrader(dict(truth), artifacts, key)
    out = decide(pairs, (rec.sft_key, rec.rft_key), key, saved[-1], again, first_questions=100,
                 save=saved.append, progress=False)
    assert out.stopped == expected.stopped and out.record.questions == expected.record.questions
    assert len(killed.graded) + len(again.graded) == len(whole.graded)  # nothing graded twice
    assert out.margins == expected.margins


@pytest.mark.fast
def test_decision_phase_stops_at_its_time_budget(tmp_path):
    truth = truth_table()
    pairs, rec, key, artifacts = plant_study(tmp_path, [PICK, RIVAL], truth)
    ticks = iter(range(0, 10**6, 45))  # each look at the clock: 45 s later
    grader = PlantedGrader(truth, artifacts, key)
    out = decide(pairs, (rec.sft_key, rec.rft_key), key, DecisionRecord(), grader, first_questions=100,
                 minutes=1, save=lambda r: None, progress=False, clock=lambda: next(ticks))
    assert out.stopped.startswith("stopped at the 1-minute budget with 1 rival(s) still open")
    assert out.record.questions == 150


@pytest.mark.fast
def test_report_status_and_plot_show_the_margins_before_and_after_the_decision_phase(tmp_path):
    from reports.build import build, marked_pairs, render, summary
    from reports.plots import pareto_data
    from sweep.evidence import load_record, save_record
    from tests.conftest import run_main

    truth = truth_table()
    pairs, rec, key, artifacts = plant_study(tmp_path, [PICK, RIVAL], truth)
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    report = build(storage, "d")
    assert [m.decisive for m in report.margins] == [False]
    text = summary(report)
    assert "  next best: SFT 8 / RFT 16 beats SFT 4 / RFT 16 by 2.5 points (95% paired interval 0.0 to" in text
    marks = pareto_data(marked_pairs(report), report.trials, report.goal, report.budget_bytes).points
    assert marks.loc[marks["is_pick"], ["sft_rank", "rft_rank"]].values.tolist() == [[8, 16]]
    assert marks.loc[marks["indistinct"], ["sft_rank", "rft_rank"]].values.tolist() == [[4, 16]]
    files = render(report)
    csv = files["margins.csv"].decode().splitlines()
    assert csv[0].startswith("pick,rival,relation,extra_mib,points_diff,points_low,points_high,questions")
    assert csv[1].startswith("SFT 8 / RFT 16,SFT 4 / RFT 16,next best,") and ",False," in csv[1]
    assert "beats SFT 4 / RFT 16 by 2.5 points" in files["report.html"].decode()

    import optuna

    study = optuna.load_study(study_name="d", storage=storage)
    decide(pairs, (rec.sft_key, rec.rft_key), key, DecisionRecord(), PlantedGrader(truth, artifacts, key),
           first_questions=100, save=lambda r: save_record(study, r), progress=False)
    assert load_record(storage, "d").verdict == "SFT 8 / RFT 16 is decisive over every rival."
    report = build(storage, "d")
    assert [m.decisive for m in report.margins] == [True]
    assert not pareto_data(marked_pairs(report), report.trials, report.goal, report.budget_bytes).points[
        "indistinct"].any()
    status = run_main("status", "--study", "d", "--storage", storage)
    assert status.returncode == 0, status.stderr
    assert "Recommended: SFT rank 8, RFT rank 16" in status.stdout
    assert ": decisive" in status.stdout and "Decision phase: " in status.stdout
    assert "is decisive over every rival." in status.stdout


def test_decide_on_a_real_tiny_study_grades_more_questions_then_seeds_and_resumes(ranksweep, tmp_path):
    import json

    import optuna

    from sweep.evidence import adapter_outcomes, load_record
    from sweep.settings import config_grading_key
    from tests.small_data import write_small_data

    root = write_small_data(tmp_path)
    storage = f"sqlite:///{root}/studies.db"
    # launch runs the phase after its trials (here with a budget named, the search being too short for the default).
    launched = ranksweep("launch", "--study", "t", "--storage", storage, "--base-model", "tiny", "--device", "cpu",
                         "--preset", "quick", "--sft-ranks", "4,16", "--rft-ranks", "4", "--budget-mb", "0.4",
                         "--trials", "2", "--train-data", root / "train.json", "--valid-data", root / "valid.json",
                         "--rft-data", root / "rft.json", "--max-examples", "16", "--questions", "4",
                         "--artifacts", root / "artifacts", "--no-progress", "--decide-minutes", "20")
    assert launched.returncode == 0, launched.stderr
    study = optuna.load_study(study_name="t", storage=storage)
    key = config_grading_key(StudyConfig.from_attrs(study.user_attrs["config"]))
    for trial in study.get_trials():  # every new grade keeps its per-question outcomes
        for kind in ("sft", "rft"):
            stored = json.loads((Path(trial.user_attrs[f"{kind}_dir"]) / f"grade-{key}.json").read_text())["outcomes"]
            assert [row["i"] for row in stored] == [0, 1, 2, 3] and all(len(row["h"]) == 10 for row in stored)
    record = load_record(storage, "t")
    # The random-weight model answers nothing right: the two pairs tie at 0 points on all 8 questions, the pool
    # is spent in one round, each of the 3 adapters is trained twice more (seeds 1 and 2) and the phase says so.
    assert (record.rounds, record.questions) == (1, 8)
    assert [[e.seed for e in v] for v in record.seeds.values()] == [[1, 2]] * 3
    assert "spent with 1 rival(s) still open" in record.verdict and record.verdict[1:] in launched.stdout
    assert "score the same points on every question graded" in record.verdict
    assert "not decisive" in launched.stdout
    for entries in record.seeds.values():
        outcomes = adapter_outcomes(entries[0].dir, key)
        assert [o.index for o in outcomes] == list(range(8))  # the new seed graded on every question so far
    # A rerun finds everything on disk: nothing trained or graded again, the same verdict.
    grades = sorted(p.name for p in (root / "artifacts" / "adapters").rglob("grade-*.json"))
    again = ranksweep("decide", "--study", "t", "--storage", storage, "--device", "cpu", "--no-progress")
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (root / "artifacts" / "adapters").rglob("grade-*.json")) == grades
    assert load_record(storage, "t").verdict == record.verdict
    status = ranksweep("status", "--study", "t", "--storage", storage)
    assert "Seed spread (an adapter's points are the mean over its seeds):" in status.stdout
    assert "  SFT rank 4: accuracy 0%, 0%, 0% over 3 seeds (8 questions); points 0.0 ± 0.0 (seed SD)" in status.stdout


@pytest.mark.fast
def test_launch_gives_the_phase_a_share_of_its_search_time_and_none_when_short(tmp_path):
    import optuna

    from sweep.decision import after_launch_minutes

    settings = type("S", (), {"trainer": "ranksweep"})()
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    write_study(storage, "done", [PICK, RIVAL])
    study = optuna.load_study(study_name="done", storage=storage)
    assert after_launch_minutes(study, settings, None, 20 * 60) == pytest.approx(3.0)  # 15% of 20 min
    assert after_launch_minutes(study, settings, None, 6 * 60) == 0.0  # 0.9 min: below the 1-minute floor
    assert after_launch_minutes(study, settings, 5.0, 60) == 5.0 and after_launch_minutes(study, settings, 0, 3600) == 0
    homework = type("S", (), {"trainer": "homework"})()
    assert after_launch_minutes(study, homework, None, 3600) == 0.0
    write_study(storage, "busy", [PICK, TrialSpec(2, 8, outcome="running")])
    busy = optuna.load_study(study_name="busy", storage=storage)
    assert after_launch_minutes(busy, settings, None, 3600) == 0.0  # a trial still runs elsewhere


@pytest.mark.fast
def test_neighbouring_ranks_compare_by_the_exact_mcnemar_interval(tmp_path):
    from reports.build import build, summary

    truth = truth_table(extra_every=10)  # SFT 8 right on SFT 4's 50 of the first 100 and on 10 odd ones more
    plant_study(tmp_path, [PICK, RIVAL], truth)
    report = build(f"sqlite:///{tmp_path / 'studies.db'}", "d")
    [step] = report.rank_steps  # one kind with two ranks: RFT has one adapter
    assert (step.kind, step.low_rank, step.high_rank) == ("sft", 4, 8)
    # b = 10 discordant questions all won by rank 8, c = 0: (10/100) x (2 x 0.025^(1/10) - 1) = 0.0383 at the low end.
    assert step.accuracy.estimate == pytest.approx(0.10) and step.accuracy.low == pytest.approx(0.0383, abs=1e-4)
    assert step.accuracy.decisive and step.nll.estimate == pytest.approx(-0.10)
    assert ("  SFT rank 8 against rank 4: accuracy +10.0 points (95% exact McNemar interval +3.8 to +10.0, "
            "100 questions), answer NLL -0.100") in summary(report)


@pytest.mark.fast
def test_a_rival_that_wins_on_more_questions_becomes_the_recommendation(tmp_path):
    from sweep.evidence import save_record
    from sweep.frontier import recommend

    import optuna

    truth = truth_table()
    rival, better = truth[adapter_key("sft", RIVAL)], truth[adapter_key("sft", PICK)]
    # SFT 8 leads by 2 on the trials' 100 questions, then misses one even question in five that SFT 4 answers.
    for i in range(100, POOL):
        better[i] = rival[i] and i % 10 != 0
    pairs, rec, key, artifacts = plant_study(tmp_path, [PICK, RIVAL], truth)
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.load_study(study_name="d", storage=storage)
    out = decide(pairs, (rec.sft_key, rec.rft_key), key, DecisionRecord(), PlantedGrader(truth, artifacts, key),
                 first_questions=100, save=lambda r: save_record(study, r), progress=False)
    assert out.pick == "SFT 4 / RFT 16" and out.stopped == "SFT 4 / RFT 16 is decisive over every rival."
    assert out.record.dropped[-1].startswith("SFT 8 / RFT 16: behind SFT 4 / RFT 16 by ")
    moved = recommend(storage, "d")  # what export takes
    assert (moved.sft_rank, moved.rft_rank) == (4, 16) and moved.size_bytes < rec.size_bytes
    assert moved.reason.startswith("Chosen by the decision phase over the first pass's SFT 8 / RFT 16")
