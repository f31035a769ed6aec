"""Built-in unit-conversion questions in the homework format, deterministic for a seed, at two levels.

`homework`: like the course's data: any two units of one category (feet to metres, gallons to cups...)
by a pure ratio (no offsets, so no temperatures). `metric-prefix`: whole amounts from a larger metric
prefix of one unit to a smaller one (kilograms to grams, megabytes to kilobytes), which the 135M model
learns on a CPU (docs/benchmarks.md §9: 52.5% after one epoch of 1000 rows at rank 4; with both
directions mixed in it scored 33% after 480 rows, 7% on the decimal answers). Each unit is stored as its
size in the category's base unit; the answer is amount * size(from) / size(to), rounded to 6 significant
digits.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainers.data import QA, write_qa
from trainers.errors import RanksweepError
from trainers.models import cache_dir
from trainers.units import (  # noqa: F401  (re-exported: the generator's public names)
    CATEGORIES,
    PHRASINGS,
    PREFIXED,
    UNITS_BY_NAME,
    Unit,
    convert,
    round_significant,
)

BUILTIN_VERSION = "builtin-v1"
TRAIN_ROWS, TRAIN_SEED = 1000, 0
VALID_ROWS, VALID_SEED = 200, 1
# Answers outside this range are redrawn: below it the grader's 3-decimal rounding erases the value,
# above it the numbers stop looking like homework.
ANSWER_RANGE = (0.05, 1e8)


def _amount(rng: random.Random) -> float:
    """Mostly small whole numbers, some larger ones and some simple decimals, like the homework's data."""
    roll = rng.random()
    if roll < 0.5:
        return float(rng.randint(1, 10))
    if roll < 0.7:
        return float(rng.randint(11, 100))
    if roll < 0.8:
        return float(rng.randint(2, 20) * 50)
    if roll < 0.9:
        return rng.choice((0.25, 0.5, 0.75, 1.5, 2.5))
    return rng.randint(11, 199) / 10


def _amount_text(amount: float) -> str:
    return str(int(amount)) if amount.is_integer() else f"{amount:g}"


def _one_question(rng: random.Random) -> QA:
    while True:
        category = rng.choice(sorted(CATEGORIES))
        src, dst = rng.sample(CATEGORIES[category], 2)
        amount = _amount(rng)
        answer = convert(amount, src.names[0], dst.names[0])
        if ANSWER_RANGE[0] <= answer <= ANSWER_RANGE[1]:
            break
    phrasing = rng.choice(PHRASINGS)
    return QA(phrasing.format(n=_amount_text(amount), src=rng.choice(src.names), to=rng.choice(dst.names)), answer)


def _whole_amount(rng: random.Random) -> int:
    """Whole amounts only: the model then learns where the decimal point goes, not long multiplication."""
    roll = rng.random()
    if roll < 0.6:
        return rng.randint(1, 20)
    if roll < 0.9:
        return rng.randint(21, 99)
    return rng.randint(1, 20) * 50


def _prefix_question(rng: random.Random) -> QA:
    while True:
        category = rng.choice(sorted(PREFIXED))
        # From the larger unit to the smaller: the answer is the amount with zeros appended, a pattern the
        # 135M model learns in one CPU epoch; the other direction (decimal answers) it barely learned.
        dst, src = sorted(rng.sample(PREFIXED[category], 2), key=lambda unit: unit.size)
        amount = _whole_amount(rng)
        answer = round_significant(amount * src.size / dst.size)
        if ANSWER_RANGE[0] <= answer <= ANSWER_RANGE[1]:
            break
    singular, plural = src.names
    phrasing = rng.choice(PHRASINGS)
    return QA(phrasing.format(n=amount, src=singular if amount == 1 else plural, to=dst.names[1]), answer)


@dataclass(frozen=True)
class Level:
    """One difficulty of built-in data: how a question is drawn, and the cache folder of its files."""

    name: str
    folder: str  # changes whenever the generator's output changes, so stale files are never reused
    help: str
    draw: Callable[[random.Random], QA]


LEVELS: dict[str, Level] = {
    level.name: level
    for level in (
        Level("metric-prefix", "metric-prefix-v3",
              "whole amounts between metric prefixes of one unit ('Convert 46 liters to milliliters.' -> 46000); "
              "the embedded 135M model learns it in one CPU epoch", _prefix_question),
        Level("homework", BUILTIN_VERSION,
              "any two units of one category, like the course's data ('What is 3 feet in inches?', mph to km/h); "
              "the 360M model's level, the 135M model stays near 0%", _one_question),
    )
}
DEFAULT_LEVEL = "homework"


def level_named(name: str) -> Level:
    """The level called `name`; a RanksweepError naming the choices otherwise."""
    if name not in LEVELS:
        raise RanksweepError(f"Unknown level '{name}': choose one of {', '.join(LEVELS)}.")
    return LEVELS[name]


def generate_questions(
    n: int, seed: int, *, exclude: set[str] | frozenset[str] = frozenset(), level: str = DEFAULT_LEVEL
) -> list[QA]:
    """`n` distinct questions of a level with answers, the same list for the same seed; none in `exclude`."""
    draw = level_named(level).draw
    rng = random.Random(seed)
    seen = set(exclude)
    rows: list[QA] = []
    while len(rows) < n:
        row = draw(rng)
        if row.question not in seen:
            seen.add(row.question)
            rows.append(row)
    return rows


def builtin_data(level: str = DEFAULT_LEVEL) -> tuple[Path, Path]:
    """Paths of a level's built-in train.json (1000 rows) and valid.json (200 rows, none shared), written once."""
    folder = cache_dir() / "data" / level_named(level).folder
    train_path, valid_path = folder / "train.json", folder / "valid.json"
    if train_path.is_file() and valid_path.is_file():
        return train_path, valid_path
    train = generate_questions(TRAIN_ROWS, TRAIN_SEED, level=level)
    valid = generate_questions(VALID_ROWS, VALID_SEED, exclude={row.question for row in train}, level=level)
    # valid.json is written last, so a crash in between leaves no pair that looks complete.
    write_qa(train_path, train)
    write_qa(valid_path, valid)
    return train_path, valid_path
