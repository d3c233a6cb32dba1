"""Local dates and business days of a destination country.

Public holidays come from the `holidays` library (maintained per country and subdivision, not a
hand-written list); weekends are Saturday and Sunday unless a destination says otherwise; dates
are taken in the destination's IANA time zone (zoneinfo). docs/semantics.md "Business days and
local dates" defines the figures built on these.
"""
from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays as _holidays

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class CalendarError(ValueError):
    """A country, subdivision or time zone the calendar cannot use."""


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_date(t: float, tz: str) -> dt.date:
    """The date at epoch `t` in time zone `tz`."""
    return dt.datetime.fromtimestamp(t, zone(tz)).date()


@lru_cache(maxsize=64)
def _country_holidays(country: str, subdiv: str | None):
    try:
        return _holidays.country_holidays(country, subdiv=subdiv)
    except NotImplementedError:
        raise CalendarError(f"the holidays library has no calendar for {country!r}"
                            + (f" subdivision {subdiv!r}" if subdiv else "")) from None


def check(country: str, subdiv: str | None = None) -> None:
    """Raise CalendarError unless the holidays library knows this country (and subdivision)."""
    _country_holidays(country, subdiv)


def is_business_day(day: dt.date, country: str, subdiv: str | None = None,
                    weekend: tuple[int, ...] = (5, 6)) -> bool:
    """Not a weekend day (`weekend`: weekday numbers, Monday 0) and not a public holiday."""
    return day.weekday() not in weekend and day not in _country_holidays(country, subdiv)


def business_days_between(start: float, end: float, country: str, tz: str,
                          subdiv: str | None = None, weekend: tuple[int, ...] = (5, 6)) -> int:
    """Business days elapsed from epoch `start` to epoch `end`, by local date in `tz`: the
    business days d with start's date < d <= end's date. The day of arrival does not count (a
    parcel arriving on Friday and released on Monday took 1 business day, as it would on
    Tuesday if Monday were a holiday: 1); a release on a weekend or holiday counts as the
    business day before it, so the count never rises on a day customs is closed."""
    a, b = local_date(start, tz), local_date(end, tz)
    n, day = 0, a + dt.timedelta(days=1)
    one = dt.timedelta(days=1)
    while day <= b:
        n += is_business_day(day, country, subdiv, weekend)
        day += one
    return n


def nth_business_day(start: float, n: int, country: str, tz: str, subdiv: str | None = None,
                     weekend: tuple[int, ...] = (5, 6)) -> dt.date:
    """The n-th business day after epoch `start`'s local date in `tz` (a promise of n business
    days from an order placed then: delivered on or before that date is on time)."""
    day, one, left = local_date(start, tz), dt.timedelta(days=1), n
    while left > 0:
        day += one
        left -= is_business_day(day, country, subdiv, weekend)
    return day


def calendar_days_between(start: float, end: float, tz: str) -> int:
    """Whole local dates from `start`'s to `end`'s in `tz` (same day: 0)."""
    return (local_date(end, tz) - local_date(start, tz)).days
