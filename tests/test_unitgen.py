"""The built-in unit-conversion data: deterministic, varied, numerically right, and train/valid disjoint."""

from __future__ import annotations

import re

import pytest

from trainers.data import QA, read_qa
from trainers.errors import RanksweepError
from trainers.unitgen import (
    CATEGORIES,
    LEVELS,
    PHRASINGS,
    UNITS_BY_NAME,
    builtin_data,
    convert,
    generate_questions,
    round_significant,
)

pytestmark = pytest.mark.fast  # no test here builds a model


def _pattern(phrasing: str) -> re.Pattern:
    parts = re.split(r"(\{n\}|\{src\}|\{to\})", phrasing)
    groups = {"{n}": r"(?P<n>[0-9.]+)", "{src}": r"(?P<src>.+?)", "{to}": r"(?P<to>.+?)"}
    return re.compile("".join(groups.get(part, re.escape(part)) for part in parts))


PATTERNS = {phrasing: _pattern(phrasing) for phrasing in PHRASINGS}


def _parse(question: str):
    """(phrasing, amount, from-unit name, to-unit name) of a generated question."""
    for phrasing, pattern in PATTERNS.items():
        match = pattern.fullmatch(question)
        if match and match["src"] in UNITS_BY_NAME and match["to"] in UNITS_BY_NAME:
            return phrasing, float(match["n"]), match["src"], match["to"]
    raise AssertionError(f"no phrasing reads {question!r}")


def test_same_seed_same_rows_other_seed_other_rows():
    first = generate_questions(200, seed=7)
    assert first == generate_questions(200, seed=7)
    other = generate_questions(200, seed=8)
    assert len({r.question for r in first} & {r.question for r in other}) < 20
    assert generate_questions(50, seed=7) == first[:50]  # a longer list extends a shorter one


def test_questions_are_distinct_and_answers_are_floats():
    rows = generate_questions(1000, seed=0)
    assert len({r.question for r in rows}) == 1000
    assert all(isinstance(r.answer, float) and 0.05 <= r.answer <= 1e8 for r in rows)


def test_every_category_and_phrasing_appears_and_every_answer_checks_out():
    rows = generate_questions(1000, seed=0)
    phrasings, categories = set(), set()
    for row in rows:
        phrasing, amount, src, dst = _parse(row.question)
        phrasings.add(phrasing)
        categories.add(UNITS_BY_NAME[src][0])
        assert UNITS_BY_NAME[src][0] == UNITS_BY_NAME[dst][0], row
        assert row.answer == convert(amount, src, dst), row
    assert phrasings == set(PHRASINGS)
    assert categories == set(CATEGORIES)
    assert {"length", "mass", "time", "volume", "speed", "data", "area"} <= categories


@pytest.mark.parametrize(
    "amount, src, dst, expected",
    [
        (6, "kg", "gram", 6000.0),
        (1, "mile", "km", 1.60934),
        (3, "feet", "inches", 36.0),
        (2, "hours", "s", 7200.0),
        (1, "week", "minutes", 10080.0),
        (1, "gallon", "L", 3.78541),
        (100, "km/h", "m/s", 27.7778),
        (60, "mph", "km/h", 96.5606),
        (1, "GiB", "MB", 1073.74),
        (8, "bits", "byte", 1.0),
        (1, "acre", "square feet", 43560.0),
        (1, "hectare", "m^2", 10000.0),
        (1, "kWh", "kJ", 3600.0),
        (1, "atm", "kPa", 101.325),
    ],
)
def test_hand_checked_conversions(amount, src, dst, expected):
    assert convert(amount, src, dst) == expected


def test_round_significant_keeps_six_digits():
    assert round_significant(6000.0004) == 6000.0
    assert round_significant(0.000123456789) == 0.000123457
    assert round_significant(33378601.07) == 33378600.0


def test_conversion_across_categories_is_refused():
    with pytest.raises(ValueError):
        convert(1, "kg", "meter")


def test_builtin_files_are_disjoint_readable_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKSWEEP_CACHE", str(tmp_path))
    train_path, valid_path = builtin_data()
    assert train_path == tmp_path / "data" / "builtin-v1" / "train.json"
    assert valid_path == tmp_path / "data" / "builtin-v1" / "valid.json"
    train, valid = read_qa(train_path), read_qa(valid_path)
    assert len(train) == 1000 and len(valid) == 200
    assert train == generate_questions(1000, seed=0)
    assert not {r.question for r in train} & {r.question for r in valid}
    assert valid == generate_questions(200, seed=1, exclude={r.question for r in train})
    stamps = (train_path.stat().st_mtime_ns, valid_path.stat().st_mtime_ns)
    assert builtin_data() == (train_path, valid_path)
    assert (train_path.stat().st_mtime_ns, valid_path.stat().st_mtime_ns) == stamps
    assert sorted(p.name for p in train_path.parent.iterdir()) == ["train.json", "valid.json"]


def test_levels_are_deterministic_and_distinct():
    from trainers.unitgen import LEVELS

    assert set(LEVELS) == {"metric-prefix", "homework"}
    for name in LEVELS:
        rows = generate_questions(300, seed=3, level=name)
        assert rows == generate_questions(300, seed=3, level=name)
        assert len({r.question for r in rows}) == 300
    # The homework level is today's generator unchanged: existing studies keep their data files.
    assert generate_questions(100, seed=0, level="homework") == generate_questions(100, seed=0)
    assert LEVELS["homework"].folder == "builtin-v1"
    with pytest.raises(RanksweepError):
        generate_questions(3, seed=0, level="impossible")


def test_metric_prefix_questions_are_whole_amounts_with_checked_answers():
    from trainers.units import PREFIXED

    by_name = {name: (category, unit) for category, units in PREFIXED.items() for unit in units for name in unit.names}
    # A name both tables know has one size, so the two levels never disagree on a unit.
    for name, (_, unit) in by_name.items():
        if name in UNITS_BY_NAME:
            assert UNITS_BY_NAME[name][1].size == unit.size, name
    rows = generate_questions(1000, seed=0, level="metric-prefix")
    categories = set()
    for row in rows:
        phrasing, amount, src, dst = _parse_prefixed(row.question, by_name)
        assert amount.is_integer() and amount >= 1
        assert by_name[src][0] == by_name[dst][0]
        categories.add(by_name[src][0])
        assert row.answer == round_significant(amount * by_name[src][1].size / by_name[dst][1].size)
        assert 0.05 <= row.answer <= 1e8 and isinstance(row.answer, float)
    assert categories == set(PREFIXED)
    assert rows[0] == QA("What is the equivalent of 17 milliseconds in microseconds?", 17000.0)  # pinned: the cache
    # folder name promises these exact files


def _parse_prefixed(question: str, by_name: dict):
    for phrasing, pattern in PATTERNS.items():
        match = pattern.fullmatch(question)
        if match and match["src"] in by_name and match["to"] in by_name:
            return phrasing, float(match["n"]), match["src"], match["to"]
    raise AssertionError(f"no phrasing reads {question!r}")


def test_builtin_files_per_level_are_valid_homework_json(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("RANKSWEEP_CACHE", str(tmp_path))
    train_path, valid_path = builtin_data("metric-prefix")
    assert train_path == tmp_path / "data" / LEVELS["metric-prefix"].folder / "train.json"
    raw = json.loads(train_path.read_text())
    assert len(raw) == 1000 and all(isinstance(q, str) and isinstance(a, float) for q, a in raw)
    train, valid = read_qa(train_path), read_qa(valid_path)
    assert len(valid) == 200 and not {r.question for r in train} & {r.question for r in valid}


# The files of a level are cached under its folder name: a generator change that keeps the name would serve
# stale questions from every existing cache (it happened once). Change a level's output: bump its folder.
GENERATOR_FINGERPRINTS = {"metric-prefix-v3": "8cd4b1ec8e7d8962", "builtin-v1": "af70755e04161978"}


@pytest.mark.parametrize("name", sorted(LEVELS))
def test_a_levels_questions_change_only_with_its_folder_name(name):
    import hashlib
    import json

    rows = generate_questions(1000, 0, level=name)
    digest = hashlib.sha256(json.dumps([[r.question, r.answer] for r in rows]).encode()).hexdigest()[:16]
    assert GENERATOR_FINGERPRINTS.get(LEVELS[name].folder) == digest, (
        f"level {name}'s questions changed: bump its folder name and record the new fingerprint")


def test_metric_prefix_questions_go_from_the_larger_unit_to_the_smaller():
    rows = generate_questions(300, 3, level="metric-prefix")
    # Whole amounts times a power of ten of at least 10: every answer is a whole number above its amount.
    assert all(r.answer == int(r.answer) and r.answer >= 10 for r in rows)
