"""Built-in unit-conversion questions in the homework format, deterministic for a seed.

Every question converts an amount between two units of one category by a pure ratio (no offsets, so no
temperatures). Each unit is stored as its size in the category's base unit; the answer is
amount * size(from) / size(to), rounded to 6 significant digits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from trainers.data import QA, write_qa
from trainers.models import cache_dir

BUILTIN_VERSION = "builtin-v1"
TRAIN_ROWS, TRAIN_SEED = 1000, 0
VALID_ROWS, VALID_SEED = 200, 1
SIGNIFICANT_DIGITS = 6
# Answers outside this range are redrawn: below it the grader's 3-decimal rounding erases the value,
# above it the numbers stop looking like homework.
ANSWER_RANGE = (0.05, 1e8)


@dataclass(frozen=True)
class Unit:
    """A unit's spellings (singular, plural, abbreviation...) and its size in the category's base unit."""

    names: tuple[str, ...]
    size: float


def _u(size: float, *names: str) -> Unit:
    return Unit(names=names, size=size)


# Exact definitions where one exists (inch = 2.54 cm, pound = 0.45359237 kg, US gallon = 231 in³ ...).
CATEGORIES: dict[str, tuple[Unit, ...]] = {
    "length": (  # metre
        _u(1e-3, "millimeter", "millimeters", "mm"),
        _u(1e-2, "centimeter", "centimeters", "cm"),
        _u(1.0, "meter", "meters", "m"),
        _u(1e3, "kilometer", "kilometers", "km"),
        _u(0.0254, "inch", "inches", "in"),
        _u(0.3048, "foot", "feet", "ft"),
        _u(0.9144, "yard", "yards", "yd"),
        _u(1609.344, "mile", "miles", "mi"),
        _u(1852.0, "nautical mile", "nautical miles"),
    ),
    "mass": (  # kilogram
        _u(1e-6, "milligram", "milligrams", "mg"),
        _u(1e-3, "gram", "grams", "g"),
        _u(1.0, "kilogram", "kilograms", "kg"),
        _u(1e3, "metric ton", "metric tons", "tonne"),
        _u(0.028349523125, "ounce", "ounces", "oz"),
        _u(0.45359237, "pound", "pounds", "lb"),
        _u(6.35029318, "stone", "stones"),
    ),
    "time": (  # second
        _u(1e-3, "millisecond", "milliseconds", "ms"),
        _u(1.0, "second", "seconds", "s"),
        _u(60.0, "minute", "minutes", "min"),
        _u(3600.0, "hour", "hours", "h"),
        _u(86400.0, "day", "days"),
        _u(604800.0, "week", "weeks"),
        _u(1209600.0, "fortnight", "fortnights"),
    ),
    "volume": (  # litre
        _u(1e-3, "milliliter", "milliliters", "mL"),
        _u(1.0, "liter", "liters", "L"),
        _u(1e3, "cubic meter", "cubic meters", "m^3"),
        _u(3.785411784, "gallon", "gallons", "gal"),
        _u(0.946352946, "quart", "quarts", "qt"),
        _u(0.473176473, "pint", "pints", "pt"),
        _u(0.2365882365, "cup", "cups"),
        _u(0.0295735295625, "fluid ounce", "fluid ounces", "fl oz"),
        _u(0.01478676478125, "tablespoon", "tablespoons", "tbsp"),
        _u(0.00492892159375, "teaspoon", "teaspoons", "tsp"),
    ),
    "speed": (  # metre per second
        _u(1.0, "meter per second", "meters per second", "m/s"),
        _u(1 / 3.6, "kilometer per hour", "kilometers per hour", "km/h"),
        _u(0.44704, "mile per hour", "miles per hour", "mph"),
        _u(1852 / 3600, "knot", "knots"),
        _u(0.3048, "foot per second", "feet per second", "ft/s"),
    ),
    "data": (  # byte; KB/MB/GB are decimal (1000), KiB/MiB/GiB binary (1024)
        _u(0.125, "bit", "bits"),
        _u(1.0, "byte", "bytes", "B"),
        _u(125.0, "kilobit", "kilobits", "kbit"),
        _u(125e3, "megabit", "megabits", "Mbit"),
        _u(1e3, "kilobyte", "kilobytes", "KB"),
        _u(1e6, "megabyte", "megabytes", "MB"),
        _u(1e9, "gigabyte", "gigabytes", "GB"),
        _u(1e12, "terabyte", "terabytes", "TB"),
        _u(1024.0, "kibibyte", "kibibytes", "KiB"),
        _u(1024.0**2, "mebibyte", "mebibytes", "MiB"),
        _u(1024.0**3, "gibibyte", "gibibytes", "GiB"),
    ),
    "area": (  # square metre
        _u(1e-4, "square centimeter", "square centimeters", "cm^2"),
        _u(1.0, "square meter", "square meters", "m^2"),
        _u(1e4, "hectare", "hectares", "ha"),
        _u(1e6, "square kilometer", "square kilometers", "km^2"),
        _u(0.00064516, "square inch", "square inches"),
        _u(0.09290304, "square foot", "square feet", "sq ft"),
        _u(0.83612736, "square yard", "square yards"),
        _u(4046.8564224, "acre", "acres"),
        _u(2589988.110336, "square mile", "square miles"),
    ),
    "energy": (  # joule
        _u(1.0, "joule", "joules", "J"),
        _u(1e3, "kilojoule", "kilojoules", "kJ"),
        _u(4.184, "calorie", "calories", "cal"),
        _u(4184.0, "kilocalorie", "kilocalories", "kcal"),
        _u(3600.0, "watt-hour", "watt-hours", "Wh"),
        _u(3.6e6, "kilowatt-hour", "kilowatt-hours", "kWh"),
    ),
    "pressure": (  # pascal
        _u(1.0, "pascal", "pascals", "Pa"),
        _u(1e3, "kilopascal", "kilopascals", "kPa"),
        _u(1e5, "bar", "bars"),
        _u(101325.0, "atmosphere", "atmospheres", "atm"),
        _u(6894.757293168361, "pound per square inch", "psi"),
    ),
}

PHRASINGS: tuple[str, ...] = (
    "How many {to} are there per {n} {src}?",
    "Convert {n} {src} to {to}.",
    "What is {n} {src} in {to}?",
    "{n} {src} equals how many {to}?",
    "How many {to} are in {n} {src}?",
    "Express {n} {src} in {to}.",
    "If you have {n} {src}, how many {to} is that?",
    "What is the equivalent of {n} {src} in {to}?",
)


def _unit_index() -> dict[str, tuple[str, Unit]]:
    index: dict[str, tuple[str, Unit]] = {}
    for category, units in CATEGORIES.items():
        for unit in units:
            for name in unit.names:
                if name in index:
                    raise ValueError(f"unit name '{name}' is used twice")  # a question must name one unit
                index[name] = (category, unit)
    return index


UNITS_BY_NAME = _unit_index()


def convert(amount: float, from_unit: str, to_unit: str) -> float:
    """`amount` of one unit expressed in another of the same category, by any spelling, 6 significant digits."""
    (src_category, src), (dst_category, dst) = UNITS_BY_NAME[from_unit], UNITS_BY_NAME[to_unit]
    if src_category != dst_category:
        raise ValueError(f"cannot convert {src_category} ({from_unit}) to {dst_category} ({to_unit})")
    return round_significant(amount * src.size / dst.size)


def round_significant(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """Round to `digits` significant digits (6000.0004 -> 6000.0, 0.000123456789 -> 0.000123457)."""
    return float(f"{value:.{digits}g}")


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


def generate_questions(n: int, seed: int, *, exclude: set[str] | frozenset[str] = frozenset()) -> list[QA]:
    """`n` distinct conversion questions with answers, the same list for the same seed; none in `exclude`."""
    rng = random.Random(seed)
    seen = set(exclude)
    rows: list[QA] = []
    while len(rows) < n:
        row = _one_question(rng)
        if row.question not in seen:
            seen.add(row.question)
            rows.append(row)
    return rows


def builtin_data() -> tuple[Path, Path]:
    """Paths of the built-in train.json (1000 rows) and valid.json (200 rows, no question shared), written once."""
    folder = cache_dir() / "data" / BUILTIN_VERSION
    train_path, valid_path = folder / "train.json", folder / "valid.json"
    if train_path.is_file() and valid_path.is_file():
        return train_path, valid_path
    train = generate_questions(TRAIN_ROWS, TRAIN_SEED)
    valid = generate_questions(VALID_ROWS, VALID_SEED, exclude={row.question for row in train})
    # valid.json is written last, so a crash in between leaves no pair that looks complete.
    write_qa(train_path, train)
    write_qa(valid_path, valid)
    return train_path, valid_path
