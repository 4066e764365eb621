"""Unit conversion with exact factors (length, mass, volume, time, speed, area, data, temperature).

Factors are the legal definitions (1 in = 2.54 cm, 1 lb = 0.45359237 kg, 1 US gal = 3.785411784 L)
kept as Fractions, so conversions are exact until the final rounding for display.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from agentmesh.agent.tools.arith import strip_thousands

F = Fraction


@dataclass(frozen=True)
class Unit:
    symbol: str
    dimension: str
    factor: Fraction  # to the dimension's base unit
    offset: Fraction = Fraction(0)  # affine units (temperature): base = value * factor + offset


def _d(text: str) -> Fraction:
    return Fraction(Decimal(text))


_UNITS: list[tuple[Unit, tuple[str, ...]]] = [
    # length, base metre
    (Unit("m", "length", F(1)), ("m", "meter", "meters", "metre", "metres")),
    (Unit("km", "length", F(1000)), ("km", "kilometer", "kilometers", "kilometre", "kilometres")),
    (Unit("cm", "length", F(1, 100)), ("cm", "centimeter", "centimeters", "centimetre", "centimetres")),
    (Unit("mm", "length", F(1, 1000)), ("mm", "millimeter", "millimeters", "millimetre", "millimetres")),
    (Unit("in", "length", _d("0.0254")), ("in", "inch", "inches", '"')),
    (Unit("ft", "length", _d("0.3048")), ("ft", "foot", "feet", "'")),
    (Unit("yd", "length", _d("0.9144")), ("yd", "yard", "yards")),
    (Unit("mi", "length", _d("1609.344")), ("mi", "mile", "miles")),
    (Unit("nmi", "length", F(1852)), ("nmi", "nautical mile", "nautical miles")),
    # mass, base kilogram
    (Unit("kg", "mass", F(1)), ("kg", "kilogram", "kilograms", "kilo", "kilos")),
    (Unit("g", "mass", F(1, 1000)), ("g", "gram", "grams")),
    (Unit("mg", "mass", F(1, 1_000_000)), ("mg", "milligram", "milligrams")),
    (Unit("t", "mass", F(1000)), ("t", "tonne", "tonnes", "metric ton", "metric tons")),
    (Unit("lb", "mass", _d("0.45359237")), ("lb", "lbs", "pound", "pounds")),
    (Unit("oz", "mass", _d("0.45359237") / 16), ("oz", "ounce", "ounces")),
    (Unit("st", "mass", _d("0.45359237") * 14), ("st", "stone", "stones")),
    # volume, base litre
    (Unit("l", "volume", F(1)), ("l", "liter", "liters", "litre", "litres")),
    (Unit("ml", "volume", F(1, 1000)), ("ml", "milliliter", "milliliters", "millilitre", "millilitres")),
    (
        Unit("m3", "volume", F(1000)),
        ("m3", "m^3", "cubic meter", "cubic meters", "cubic metre", "cubic metres"),
    ),
    (Unit("gal", "volume", _d("3.785411784")), ("gal", "gallon", "gallons", "us gallon", "us gallons")),
    (Unit("qt", "volume", _d("3.785411784") / 4), ("qt", "quart", "quarts")),
    (Unit("pt", "volume", _d("3.785411784") / 8), ("pt", "pint", "pints")),
    (Unit("cup", "volume", _d("3.785411784") / 16), ("cup", "cups")),
    (Unit("fl oz", "volume", _d("3.785411784") / 128), ("fl oz", "fluid ounce", "fluid ounces")),
    # time, base second
    (Unit("s", "time", F(1)), ("s", "sec", "secs", "second", "seconds")),
    (Unit("ms", "time", F(1, 1000)), ("ms", "millisecond", "milliseconds")),
    (Unit("min", "time", F(60)), ("min", "mins", "minute", "minutes")),
    (Unit("h", "time", F(3600)), ("h", "hr", "hrs", "hour", "hours")),
    (Unit("day", "time", F(86400)), ("d", "day", "days")),
    (Unit("week", "time", F(604800)), ("wk", "week", "weeks")),
    # speed, base m/s
    (Unit("m/s", "speed", F(1)), ("m/s", "mps", "meters per second", "metres per second")),
    (
        Unit("km/h", "speed", F(1000, 3600)),
        ("km/h", "kmh", "kph", "kilometers per hour", "kilometres per hour"),
    ),
    (Unit("mph", "speed", _d("1609.344") / 3600), ("mph", "miles per hour")),
    (Unit("kn", "speed", F(1852, 3600)), ("kn", "kt", "knot", "knots")),
    # area, base square metre
    (
        Unit("m2", "area", F(1)),
        ("m2", "m^2", "square meter", "square meters", "square metre", "square metres"),
    ),
    (Unit("km2", "area", F(1_000_000)), ("km2", "km^2", "square kilometer", "square kilometers")),
    (Unit("ha", "area", F(10_000)), ("ha", "hectare", "hectares")),
    (Unit("acre", "area", _d("4046.8564224")), ("acre", "acres")),
    (Unit("ft2", "area", _d("0.09290304")), ("ft2", "ft^2", "sq ft", "square foot", "square feet")),
    # data, base byte
    (Unit("B", "data", F(1)), ("b", "byte", "bytes")),
    (Unit("KB", "data", F(1000)), ("kb", "kilobyte", "kilobytes")),
    (Unit("MB", "data", F(10**6)), ("mb", "megabyte", "megabytes")),
    (Unit("GB", "data", F(10**9)), ("gb", "gigabyte", "gigabytes")),
    (Unit("TB", "data", F(10**12)), ("tb", "terabyte", "terabytes")),
    (Unit("KiB", "data", F(1024)), ("kib", "kibibyte", "kibibytes")),
    (Unit("MiB", "data", F(1024**2)), ("mib", "mebibyte", "mebibytes")),
    (Unit("GiB", "data", F(1024**3)), ("gib", "gibibyte", "gibibytes")),
    # temperature, base kelvin
    (Unit("K", "temperature", F(1)), ("k", "kelvin", "kelvins")),
    (
        Unit("°C", "temperature", F(1), _d("273.15")),
        ("c", "°c", "celsius", "degrees celsius", "degree celsius", "centigrade"),
    ),
    (
        Unit("°F", "temperature", F(5, 9), _d("273.15") - F(32) * F(5, 9)),
        ("f", "°f", "fahrenheit", "degrees fahrenheit", "degree fahrenheit"),
    ),
]

ALIASES: dict[str, Unit] = {alias: unit for unit, aliases in _UNITS for alias in aliases}


class UnitError(ValueError):
    pass


def find_unit(name: str) -> Unit:
    key = re.sub(r"\s+", " ", name.strip().lower()).removeprefix("degrees ").removeprefix("degree ")
    unit = ALIASES.get(key) or ALIASES.get(f"degrees {key}") or ALIASES.get(key.rstrip("."))
    if unit is None:
        raise UnitError(f"unknown unit {name.strip()!r}")
    return unit


def convert(value: Fraction, source: Unit, target: Unit) -> Fraction:
    if source.dimension != target.dimension:
        raise UnitError(
            f"cannot convert {source.dimension} ({source.symbol}) to {target.dimension} ({target.symbol})"
        )
    base = value * source.factor + source.offset
    return (base - target.offset) / target.factor


_VALUE = r"[-+]?\d+(?:[.,]\d+)?(?:e[-+]?\d+)?"
_TARGET = r"(?P<dst>[a-z°\"'/ ^0-9]+?)\s*[?.!]*\s*$"  # the unit asked for, ending the request
_QUERY = re.compile(
    rf"(?<![\d.,])(?P<value>{_VALUE})\s*(?P<src>[^\d]+?)\s+(?:to|in|into|as)\s+{_TARGET}", re.IGNORECASE
)
_REFERRED = re.compile(
    rf"\b(?:convert|change|turn|express)\s+(?:it|that|this)\s+(?:to|into|in)\s+{_TARGET}", re.IGNORECASE
)
_QUANTITY = re.compile(rf"(?<![\d.,])(?P<value>{_VALUE})\s*(?P<unit>[^\s\d]+(?:\s+[a-z]+)?)", re.I)


def parse_query(text: str) -> tuple[Fraction, Unit, Unit]:
    """``"convert 5 km to miles"`` -> (5, km, mi). UnitError when it is not such a request."""
    # "10,000 s" is ten thousand seconds; "convert 12 from kg to lb"
    cleaned = re.sub(r"(?<=\d)\s+from\s+", " ", strip_thousands(text.strip()))
    cleaned = re.sub(
        r"^(please\s+)?(convert|change|express|what is|what's|how many|how much"
        r"|how (?:long|far|heavy|hot|cold|big|fast) (?:is|are)(?=\s+[-+]?\d))\s+",
        "",
        cleaned,
        flags=re.I,
    )
    referred = _REFERRED.search(cleaned)
    if referred:  # "... which is about 5,570 km. Convert that to miles."
        before = cleaned[: referred.start()]
        quantities = [(m, unit) for m in _QUANTITY.finditer(before) if (unit := _unit_at(m["unit"]))]
        # "5 ft 10 in", "3 kg of apples and 2 kg of pears", or a question in between: which one?
        if len(quantities) != 1 or "?" in before[quantities[0][0].end() :]:
            raise UnitError("expected one quantity before 'convert that'")
        quantity, unit = quantities[0]
        return _number(quantity["value"]), unit, find_unit(referred["dst"])
    # "how many miles is 5 km" -> "5 km to miles"
    inverted = re.match(r"^(?P<dst>[a-z°/ ]+?)\s+(?:is|are|in)\s+(?P<rest>[-+]?\d.*?)[?.!]*$", cleaned, re.I)
    if inverted and not re.match(r"^[-+]?\d", cleaned):
        cleaned = f"{inverted.group('rest')} to {inverted.group('dst')}"
    match = _QUERY.search(cleaned)
    if not match:
        raise UnitError("expected a request like 'convert 5 km to miles'")
    return _number(match.group("value")), find_unit(match.group("src")), find_unit(match.group("dst"))


def _number(text: str) -> Fraction:
    return Fraction(Decimal(text.replace(",", ".")))  # "1,5": a decimal comma


def _unit_at(words: str) -> Unit | None:
    """The unit a quantity's next one or two words name ("5 km." -> km, "5 square feet" -> ft²),
    or None ("2 friends")."""
    first, *rest = words.split()
    for name in ([f"{first} {rest[0]}"] if rest else []) + [first.rstrip(".,;:!?")]:
        with contextlib.suppress(UnitError):
            return find_unit(name)
    return None


def format_quantity(value: Fraction, unit: Unit, *, digits: int = 10) -> str:
    number = Decimal(value.numerator) / Decimal(value.denominator)
    text = format(number, f".{digits}g")
    if "e" in text or "E" in text:
        text = format(number.normalize(), "f") if abs(number) < Decimal(10) ** 15 else text
    if "." in text and "e" not in text.lower():
        text = text.rstrip("0").rstrip(".")
    return f"{text} {unit.symbol}"
