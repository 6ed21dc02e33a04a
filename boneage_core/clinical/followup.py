"""Follow-up of one child: the studies of one pseudonymous key, oldest first, with the bone-age gain per
year of chronological age between consecutive studies, and flags when bone age goes backwards or gains
implausibly fast.

Thresholds (months): a fall of more than ``BACKWARDS_MONTHS`` (about one reading's error) is
``bone_age_decreased``; a gain of more than ``FAST_RATE`` bone-age years per year over at least
``MIN_INTERVAL_MONTHS``, or of more than ``FAST_SHORT_MONTHS`` within a shorter interval, is
``implausibly_fast`` (normal maturation gains about one year a year, up to about two in puberty).
Studies without a chronological age are ordered by their date and get no rate.

    rows = follow_up([Study("a", 98.0, 102.5, when_a), Study("b", 122.0, 131.0, when_b)])
    rows[1].rate, rows[1].flags      # 1.18 bone-age years per year, ()
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

BACKWARDS_MONTHS = 6.0
FAST_RATE = 2.5
MIN_INTERVAL_MONTHS = 3.0
FAST_SHORT_MONTHS = 12.0


@dataclass(frozen=True)
class Study:
    key: str
    chronological_age_months: float | None
    bone_age_months: float
    when: dt.datetime | None = None


@dataclass(frozen=True)
class FollowUpRow:
    study: Study
    #: Since the previous study (None for the first).
    bone_age_gain_months: float | None
    interval_months: float | None
    #: Bone-age years gained per year of chronological age (None without both ages or a zero interval).
    rate: float | None
    flags: tuple[str, ...]


def follow_up(studies: list[Study]) -> list[FollowUpRow]:
    """The studies oldest first (by chronological age, else by date), each compared with the previous."""
    far = dt.datetime.max.replace(tzinfo=dt.UTC)

    def order(s: Study):
        when = s.when if s.when is None or s.when.tzinfo else s.when.replace(tzinfo=dt.UTC)
        return (s.chronological_age_months is None, s.chronological_age_months or 0.0, when or far)

    ordered = sorted(studies, key=order)
    rows: list[FollowUpRow] = []
    for prev, cur in zip([None, *ordered], ordered, strict=False):
        if prev is None:
            rows.append(FollowUpRow(cur, None, None, None, ()))
            continue
        gain = cur.bone_age_months - prev.bone_age_months
        interval = None
        if cur.chronological_age_months is not None and prev.chronological_age_months is not None:
            interval = cur.chronological_age_months - prev.chronological_age_months
        rate = gain / interval if interval else None
        flags = []
        if gain < -BACKWARDS_MONTHS:
            flags.append("bone_age_decreased")
        if interval is not None and (
            (interval >= MIN_INTERVAL_MONTHS and rate is not None and rate > FAST_RATE)
            or (interval < MIN_INTERVAL_MONTHS and gain > FAST_SHORT_MONTHS)
        ):
            flags.append("implausibly_fast")
        rows.append(FollowUpRow(cur, gain, interval, rate, tuple(flags)))
    return rows
