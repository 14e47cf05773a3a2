"""Kubernetes resource quantities ("100m", "1Gi", "1e3") as exact fractions.

Parsing follows apimachinery's `resource.ParseQuantity` (same grammar, errors, nano rounding and
int64 cap); `str()` gives Go's canonical form, which is what the API server returns on reads.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import total_ordering
from typing import Any

FORMAT_REGEX = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
ERR_FORMAT = f"quantities must match the regular expression '{FORMAT_REGEX}'"
ERR_NUMERIC = "unable to parse numeric part of quantity"
ERR_SUFFIX = "unable to parse quantity's suffix"

DECIMAL_SI = "DecimalSI"
BINARY_SI = "BinarySI"
DECIMAL_EXPONENT = "DecimalExponent"

_DEC_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12,
                 "P": 15, "E": 18}
_DEC_BY_EXP = {e: s for s, e in _DEC_SUFFIXES.items()}
_BIN_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_BIN_BY_EXP = {e: s for s, e in _BIN_SUFFIXES.items()}
_SUFFIX_CHARS = set("eEinumkKMGTP")
_DIGITS = set("0123456789")
_NANO = Fraction(1, 10**9)
_EXPONENT = re.compile(r"^[+-]?[0-9]+$")
_MAX = Fraction(2**63 - 1)  # Go caps quantities at the int64 maximum


class QuantityError(ValueError):
    """The string is not a Kubernetes quantity; `str(err)` is Go's error text."""


@total_ordering
@dataclass(frozen=True)
class Quantity:
    """An exact quantity plus the format its canonical string is printed in."""

    value: Fraction
    format: str = DECIMAL_SI

    def __str__(self) -> str:
        return _canonical_cached(self.value, self.format)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Quantity):
            return self.value == other.value
        return NotImplemented

    def __lt__(self, other: Quantity) -> bool:
        return self.value < other.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __add__(self, other: Quantity) -> Quantity:
        return Quantity(self.value + other.value, self.format)

    def __sub__(self, other: Quantity) -> Quantity:
        return Quantity(self.value - other.value, self.format)

    def is_zero(self) -> bool:
        return self.value == 0

    def milli_value(self) -> int:
        """Value in thousandths, rounded up like Go's `MilliValue()` (used for CPU)."""
        return _ceil(self.value * 1000)

    def int_value(self) -> int:
        """Value rounded up to an integer, like Go's `Value()` (used for memory/pods)."""
        return _ceil(self.value)

    def round_up(self, scale: int) -> Quantity:
        """Round away from zero to a multiple of 10**scale (Go's `RoundUp`)."""
        return Quantity(_round_away(self.value, Fraction(10) ** scale), self.format)


def parse_quantity(raw: Any) -> Quantity:
    """Parse a quantity as JSON carries it: a string, or a bare number."""
    if isinstance(raw, bool) or raw is None:
        raise QuantityError(ERR_FORMAT)
    if isinstance(raw, (int, float)):
        raw = repr(raw) if isinstance(raw, float) else str(raw)
    if not isinstance(raw, str):
        raise QuantityError(ERR_FORMAT)
    return _parse_text(raw)


@functools.lru_cache(maxsize=4096)
def _parse_text(raw: str) -> Quantity:
    # Cached (Quantity is immutable): every pod repeats the same few quantities, and exact
    # Fraction arithmetic is the costliest step of admitting a pod.
    text = raw.strip()
    if not text:
        raise QuantityError(ERR_FORMAT)
    positive, num, denom, suffix = _split(text)
    base, exponent, fmt = _interpret(suffix)
    value = Fraction(int(num + denom), 10 ** len(denom)) if (num + denom).isdigit() else None
    if value is None:
        raise QuantityError(ERR_NUMERIC)
    value *= Fraction(base) ** exponent
    if value and (value / _NANO).denominator != 1:
        value = _round_away(value, _NANO)  # Go rounds tiny fractions up to 1n
    value = min(value, _MAX)
    if fmt == BINARY_SI and 0 < value < 1:
        fmt = DECIMAL_SI
    return Quantity(value if positive else -value, fmt)


def canonical(raw: Any) -> str:
    """The canonical string of a quantity (raises QuantityError when unparsable)."""
    return str(parse_quantity(raw))


def _split(text: str) -> tuple[bool, str, str, str]:
    """parseQuantityString: sign, numerator digits, denominator digits, suffix."""
    pos, end = 0, len(text)
    positive = True
    if text[0] in "+-":
        positive = text[0] == "+"
        pos = 1
    while pos < end and text[pos] == "0":
        pos += 1
    start = pos
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    num = text[start:pos] or "0"
    denom = ""
    if pos < end and text[pos] == ".":
        pos += 1
        start = pos
        while pos < end and text[pos] in _DIGITS:
            pos += 1
        denom = text[start:pos]
    suffix_start = pos
    while pos < end and text[pos] in _SUFFIX_CHARS:
        pos += 1
    if pos < end and text[pos] in "+-":
        pos += 1
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    if pos < end:
        raise QuantityError(ERR_FORMAT)
    return positive, num, denom, text[suffix_start:]


def _interpret(suffix: str) -> tuple[int, int, str]:
    if suffix in _DEC_SUFFIXES:
        return 10, _DEC_SUFFIXES[suffix], DECIMAL_SI
    if suffix in _BIN_SUFFIXES:
        return 2, _BIN_SUFFIXES[suffix], BINARY_SI
    if len(suffix) > 1 and suffix[0] in "eE" and _EXPONENT.match(suffix[1:]):
        return 10, int(suffix[1:]), DECIMAL_EXPONENT
    raise QuantityError(ERR_SUFFIX)


def _ceil(value: Fraction) -> int:
    return -((-value.numerator) // value.denominator)


def _round_away(value: Fraction, step: Fraction) -> Fraction:
    units = value / step
    if units.denominator == 1:
        return value
    whole = units.numerator // units.denominator  # floor
    return (whole + (1 if value > 0 else 0)) * step


@functools.lru_cache(maxsize=4096)
def _canonical_cached(value: Fraction, fmt: str) -> str:
    return _canonical(value, fmt)


def _canonical(value: Fraction, fmt: str) -> str:
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mag = abs(value)
    if fmt == BINARY_SI and mag >= 1024 and mag.denominator == 1:
        mantissa, exp = mag.numerator, 0
        while mantissa % 1024 == 0 and exp < 6:
            mantissa //= 1024
            exp += 1
        return f"{sign}{mantissa}{_BIN_BY_EXP.get(exp * 10, '')}"
    # Decimal forms: integer mantissa, exponent a multiple of 3 (Go's AsCanonicalBytes).
    exp = 18
    while exp > -9 and (mag / Fraction(10) ** exp).denominator != 1:
        exp -= 3
    mantissa = mag / Fraction(10) ** exp
    number = f"{sign}{mantissa.numerator // mantissa.denominator}"
    if fmt == DECIMAL_EXPONENT:
        return number + (f"e{exp}" if exp else "")
    return number + _DEC_BY_EXP[exp]
