"""Units the built-in questions use: each unit's spellings and size in its category's base unit, the
question phrasings, and the exact conversion between two units of one category."""

from __future__ import annotations

from dataclasses import dataclass

SIGNIFICANT_DIGITS = 6


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


# The `metric-prefix` level: one unit per category under its common metric prefixes. Sizes are in the
# same base units as CATEGORIES, so a name both tables know has one size (tests check it).
PREFIXED: dict[str, tuple[Unit, ...]] = {
    "length": (  # metre
        _u(1e-3, "millimeter", "millimeters"),
        _u(1e-2, "centimeter", "centimeters"),
        _u(1.0, "meter", "meters"),
        _u(1e3, "kilometer", "kilometers"),
    ),
    "mass": (  # kilogram
        _u(1e-6, "milligram", "milligrams"),
        _u(1e-3, "gram", "grams"),
        _u(1.0, "kilogram", "kilograms"),
    ),
    "volume": (  # litre
        _u(1e-3, "milliliter", "milliliters"),
        _u(1.0, "liter", "liters"),
    ),
    "data": (  # byte, decimal prefixes
        _u(1.0, "byte", "bytes"),
        _u(1e3, "kilobyte", "kilobytes"),
        _u(1e6, "megabyte", "megabytes"),
        _u(1e9, "gigabyte", "gigabytes"),
    ),
    "time": (  # second
        _u(1e-6, "microsecond", "microseconds"),
        _u(1e-3, "millisecond", "milliseconds"),
        _u(1.0, "second", "seconds"),
    ),
}
