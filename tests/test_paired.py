"""Per-question outcomes in grades, and the paired intervals computed by hand on small planted outcome vectors."""

from __future__ import annotations

import json

import pytest

from sweep.paired import (
    PairEvidence,
    accuracy_difference,
    clopper_pearson,
    nll_difference,
    points_difference,
    seed_spread,
)
from trainers.grading import Grade, score, wilson_interval
from trainers.outcomes import QuestionOutcome, merge_outcomes, question_hash

pytestmark = pytest.mark.fast  # no test here builds a model


def outcomes(correct: list[bool], start: int = 0, nlls: list[float] | None = None) -> tuple[QuestionOutcome, ...]:
    return tuple(QuestionOutcome(start + i, question_hash(f"q{start + i}"), True, c,
                                 None if nlls is None else nlls[i]) for i, c in enumerate(correct))


def test_score_keeps_one_outcome_per_question_and_round_trips_through_json():
    grade = score("sft", ["<answer>2</answer>", "no answer", "<answer>9</answer>"], [2.0, 3.0, 4.0],
                  questions=["a", "b", "c"], nlls=[0.5, 1.0, 2.0], first_index=10)
    assert [(o.index, o.parsed, o.correct, o.nll) for o in grade.outcomes] == [
        (10, True, True, 0.5), (11, False, False, 1.0), (12, True, False, 2.0)]
    assert grade.outcomes[0].qhash == question_hash("a") != question_hash("b")
    stored = json.loads(json.dumps(grade.to_json()))
    assert Grade.from_json(stored) == grade


def test_a_grade_written_before_outcomes_still_loads():
    old = {"kind": "rft", "accuracy": 0.5, "answer_rate": 1.0, "ci_low": 0.2, "ci_high": 0.8, "questions": 4,
           "correct": 2, "parsed": 4, "points": 0.0, "seconds": 1.0}
    grade = Grade.from_json(old)
    assert grade.outcomes is None and grade.correct == 2 and grade.answer_nll is None


def test_merge_keeps_the_first_grade_of_a_question_and_sorts_by_index():
    first, later = outcomes([True, False]), outcomes([False, True, True], start=1)
    merged = merge_outcomes(later, first)
    assert [o.index for o in merged] == [0, 1, 2, 3]
    assert merged[1].correct is False and merged[1] == later[0]


def test_clopper_pearson_matches_closed_forms():
    # k = m: lower bound is (alpha/2)^(1/m); k = 0: upper bound is 1 - (alpha/2)^(1/m).
    low, high = clopper_pearson(10, 10)
    assert low == pytest.approx(0.025 ** 0.1, abs=1e-9) and high == 1.0
    low, high = clopper_pearson(0, 4)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** 0.25, abs=1e-9)
    assert clopper_pearson(0, 0) == (0.0, 1.0)


def test_all_agree_is_a_zero_difference_and_not_decisive():
    same = [True] * 30 + [False] * 70
    diff = accuracy_difference(same, same)
    assert (diff.estimate, diff.low, diff.high, diff.questions) == (0.0, 0.0, 0.0, 100)
    assert not diff.decisive


def test_all_disagree_spans_the_whole_range():
    first = [True] * 5 + [False] * 5
    second = [not x for x in first]
    diff = accuracy_difference(first, second)  # b = c = 5, m = n = 10: (2 pi - 1) over the CP interval of 5/10
    low, high = clopper_pearson(5, 10)
    assert diff.estimate == 0.0
    assert (diff.low, diff.high) == pytest.approx((2 * low - 1, 2 * high - 1))
    assert diff.low == pytest.approx(-0.6259, abs=1e-4) and not diff.decisive


def test_one_sided_difference_is_decisive_where_two_wilson_intervals_overlap():
    # 100 questions: B right on 50, A right on those 50 and 10 more. Paired: b = 10, c = 0.
    second = [True] * 50 + [False] * 50
    first = [True] * 60 + [False] * 40
    diff = accuracy_difference(first, second)
    assert diff.estimate == pytest.approx(0.10)
    # By hand: pi's CP lower bound for 10/10 is 0.025^(1/10) = 0.69150; (10/100) * (2 * 0.69150 - 1) = 0.03830.
    assert diff.low == pytest.approx(0.1 * (2 * 0.025 ** 0.1 - 1), abs=1e-6)
    assert diff.low == pytest.approx(0.03830, abs=1e-5) and diff.high == pytest.approx(0.10)
    assert diff.decisive
    # The unpaired view of the same grades cannot tell them apart: the two Wilson intervals overlap.
    a_low, _ = wilson_interval(60, 100)
    _, b_high = wilson_interval(50, 100)
    assert a_low < b_high


def test_nll_difference_is_paired():
    # Each question's NLL drops by exactly 0.1 while questions differ by a lot: the paired interval is a point;
    # two independent standard errors would span about +-0.5 nats.
    second = [0.2, 1.5, 0.9, 2.4, 0.1, 3.0]
    first = [x - 0.1 for x in second]
    diff = nll_difference(first, second)
    assert diff.estimate == pytest.approx(-0.1)
    assert diff.low == pytest.approx(-0.1) and diff.high == pytest.approx(-0.1)
    assert diff.decisive
    # One question against the trend: mean -0.05, differences (-0.1 x5, +0.2): SD by hand.
    first[0] = second[0] + 0.2
    diff = nll_difference(first, second)
    d = [0.2, -0.1, -0.1, -0.1, -0.1, -0.1]
    mean = sum(d) / 6
    se = (sum((x - mean) ** 2 for x in d) / 5 / 6) ** 0.5
    assert diff.estimate == pytest.approx(mean) and diff.high == pytest.approx(mean + 1.96 * se)
    assert not diff.decisive


def pair(sft: list[bool], rft: list[bool], *more_sft_seeds: list[bool]) -> PairEvidence:
    return PairEvidence(sft=(outcomes(sft), *(outcomes(s) for s in more_sft_seeds)), rft=(outcomes(rft),))


def test_points_difference_identical_pairs_is_zero_everywhere():
    a = pair([True] * 50 + [False] * 50, [True] * 65 + [False] * 35)
    diff = points_difference(a, a, resamples=200)
    assert (diff.estimate, diff.low, diff.high) == (0.0, 0.0, 0.0) and not diff.decisive


def test_points_difference_all_disagree_is_the_whole_scale():
    # A right on everything, B wrong on everything, both kinds: every resample gives 25 + 30 points.
    a, b = pair([True] * 20, [True] * 20), pair([False] * 20, [False] * 20)
    diff = points_difference(a, b, resamples=200)
    assert (diff.estimate, diff.low, diff.high) == (55.0, 55.0, 55.0) and diff.decisive


def test_points_difference_one_sided_is_seeded_and_reproducible():
    # SFT: A right on 55 of 100, B on 45 of them (points 18.75 against 6.25); RFT equal at 65% (12.5 each).
    rft = [True] * 65 + [False] * 35
    a = pair([True] * 55 + [False] * 45, rft)
    b = pair([True] * 45 + [False] * 55, rft)
    diff = points_difference(a, b, resamples=500, seed=3)
    assert diff.estimate == pytest.approx(12.5)
    assert 0 < diff.low < 12.5 < diff.high <= 25
    assert diff.decisive
    assert points_difference(a, b, resamples=500, seed=3) == diff


def test_points_difference_fails_where_an_unpaired_bootstrap_would_call_it_noise():
    import numpy as np

    from trainers.grading import sft_points

    rft = [True] * 65 + [False] * 35
    a_sft, b_sft = [True] * 55 + [False] * 45, [True] * 45 + [False] * 55
    diff = points_difference(pair(a_sft, rft), pair(b_sft, rft), resamples=1000, seed=0)
    # Each pair's questions drawn on their own (what two independent grades would allow): the interval reaches
    # below 0. Paired, B's right answers are a subset of A's and every resample keeps A ahead.
    rng = np.random.default_rng(0)
    unpaired = [sft_points(np.array(a_sft)[rng.integers(0, 100, 100)].mean())
                - sft_points(np.array(b_sft)[rng.integers(0, 100, 100)].mean()) for _ in range(1000)]
    assert np.quantile(unpaired, 0.025) < 0 < diff.low


def test_seed_spread_makes_a_small_difference_not_decisive():
    rft = [True] * 65 + [False] * 35
    # A's SFT at two seeds: 60% and 50% (25 and 12.5 points, SD 8.84); B at 50%: a gap of 6.25 points.
    a = pair([True] * 60 + [False] * 40, rft, [True] * 50 + [False] * 50)
    b = pair([True] * 50 + [False] * 50, rft)
    assert seed_spread(a) == pytest.approx((2 * 6.25 ** 2) ** 0.5)
    assert seed_spread(b) is None
    diff = points_difference(a, b, resamples=300)
    assert diff.estimate == pytest.approx(6.25)  # A's points: the mean over its seeds
    assert diff.seed_spread == pytest.approx(8.8388, abs=1e-3)
    assert not diff.decisive


def test_points_that_differ_only_by_float_rounding_are_a_tie():
    # 60% scores 25 x (0.6 - 0.4) / 0.2 = 24.999999999999996 points, 61% is clipped to 25: the same points.
    rft = [True] * 65 + [False] * 35
    a, b = pair([True] * 60 + [False] * 40, rft), pair([True] * 61 + [False] * 39, rft)
    diff = points_difference(a, b, resamples=300)
    assert diff.estimate == 0.0 and diff.high >= 0 and not diff.decisive


def test_the_homework_runner_keeps_per_question_samples_where_the_benchmark_gives_them(tmp_path):
    """RUNNER (sweep/homework/grade.py) on two small benchmarks: one whose samples name question and is_correct
    (the course template's), one that returns tuples (totals only)."""
    import subprocess
    import sys

    from sweep.homework.grade import RUNNER, benchmark_outcomes

    (tmp_path / "hw.py").write_text(
        "from dataclasses import dataclass\n"
        "@dataclass\n"
        "class Sample:\n"
        "    question: str\n    answer: float\n    correct_answer: float\n    is_correct: bool\n"
        "class Data(list):\n"
        "    def __init__(self, split): super().__init__([['a', 1.0], ['b', 2.0], ['c', 3.0]])\n"
        "def load(): return None\n"
        "def bench(model, data, limit):\n"
        "    answers = [1.0, float('nan'), 9.0][:limit]\n"
        "    samples = [Sample(q, x, t, x == t) for (q, t), x in zip(data, answers)]\n"
        "    return {'accuracy': 1 / 3, 'answer_rate': 2 / 3, 'samples': samples}\n"
        "def totals(model, data, limit):\n"
        "    return {'accuracy': 1 / 3, 'answer_rate': 2 / 3, 'samples': [('a', 1.0, 1.0)]}\n")
    records = []
    for benchmark in ("hw:bench", "hw:totals"):
        out = tmp_path / f"{benchmark[3:]}.json"
        subprocess.run([sys.executable, "-c", RUNNER, "hw:load", "hw:Data", "valid", benchmark, "10", str(out)],
                       cwd=tmp_path, check=True)
        records.append(json.loads(out.read_text()))
    kept = benchmark_outcomes(records[0])
    assert [(o.index, o.qhash, o.parsed, o.correct) for o in kept] == [
        (0, question_hash("a"), True, True), (1, question_hash("b"), False, False), (2, question_hash("c"), True, False)]
    assert records[1]["samples"] is None and benchmark_outcomes(records[1]) is None
