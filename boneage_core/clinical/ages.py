"""Ages as readers type them: months, or years and months.

    parse_age("130")          -> 130.0     plain months
    parse_age("130.5 m")      -> 130.5
    parse_age("10y 6m")       -> 126.0     years and months ("10 y 6 m", "10 years 6 months", "10;6")
    parse_age("10y")          -> 120.0
    parse_age("10.5 y")       -> 126.0

A bare number is months (the unit of the whole tool). Anything else raises :class:`AgeFormatError`
with a message that says what is accepted. The other way round, :func:`format_years_months` shows
months as years and months (``125.6`` -> ``"10 y 6 m"``).
"""

from __future__ import annotations

import re

from ..errors import BoneAgeError

#: Plausible bone ages, months (0 to 20 years).
AGE_RANGE_MONTHS = (0.0, 240.0)

_NUM = r"(\d+(?:[.,]\d+)?)"
_YEARS_MONTHS = re.compile(
    rf"^\s*{_NUM}\s*(?:y|yr|yrs|year|years)\s*,?\s*(?:{_NUM}\s*(?:m|mo|mos|month|months)?)?\s*$", re.I
)
_MONTHS = re.compile(rf"^\s*{_NUM}\s*(?:m|mo|mos|month|months)?\s*$", re.I)
_SEMICOLON = re.compile(rf"^\s*(\d+)\s*[;:]\s*{_NUM}\s*$")


class AgeFormatError(BoneAgeError, ValueError):
    """An age that cannot be read or is outside 0-240 months."""


def _num(s: str) -> float:
    return float(s.replace(",", "."))


def parse_age(text: str | float | int) -> float:
    """Months from ``text`` (see the module docstring); checked to lie within 0-240 months."""
    if isinstance(text, (int, float)):
        months = float(text)
    else:
        t = (text or "").strip()
        if not t:
            raise AgeFormatError("Enter an age: months (e.g. 130) or years and months (e.g. 10y 6m).")
        if m := _MONTHS.match(t):
            months = _num(m.group(1))
        elif m := _YEARS_MONTHS.match(t):
            extra = _num(m.group(2)) if m.group(2) else 0.0
            if extra >= 12:
                raise AgeFormatError(f"{text!r}: the months part of years and months must be below 12.")
            months = _num(m.group(1)) * 12 + extra
        elif m := _SEMICOLON.match(t):
            extra = _num(m.group(2))
            if extra >= 12:
                raise AgeFormatError(f"{text!r}: the months part of years;months must be below 12.")
            months = int(m.group(1)) * 12 + extra
        else:
            raise AgeFormatError(
                f"Cannot read {text!r} as an age: write months (130) or years and months (10y 6m, 10;6)."
            )
    lo, hi = AGE_RANGE_MONTHS
    if not (lo <= months <= hi):  # also false for NaN
        raise AgeFormatError(f"A bone age must be between 0 and 240 months (0-20 years), got {months:g}.")
    return months


def format_years_months(months: float) -> str:
    """``125.6`` -> ``"10 y 6 m"`` (months rounded to the nearest whole month)."""
    total = int(round(months))
    sign = "-" if total < 0 else ""
    y, m = divmod(abs(total), 12)
    return f"{sign}{y} y {m} m"
