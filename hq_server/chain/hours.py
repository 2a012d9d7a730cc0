"""A store's opening hours (营业时间) as data: weekly spans and dated exceptions.

The weekly part is exactly the ``opening_hours`` of a terminal's configuration
(:mod:`protocol.terminal_config`: ``{"mon": ["06:00-22:00"], ...}``), so a store's hours
feed its terminals' config unchanged (:func:`terminal_hours`). Holidays are dates with
their own spans (an empty list: closed that day), which HQ keeps for reports and the
dashboard; terminals learn them as the config of the day.

Validation is whole-or-nothing: :class:`HoursError` names the first problem.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from protocol.terminal_config import DAYS, ConfigError, parse_config

_SPAN = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
MAX_HOLIDAYS = 400
MAX_SPANS = 8


class HoursError(ValueError):
    """Opening hours that cannot be stored, with the reason in words."""


def _minutes(span: str, where: str) -> tuple[int, int]:
    m = _SPAN.match(span) if isinstance(span, str) else None
    if m is None:
        raise HoursError(f"{where}: {str(span)[:40]!r} is not 'HH:MM-HH:MM'")
    a = int(m.group(1)) * 60 + int(m.group(2))
    b = int(m.group(3)) * 60 + int(m.group(4))
    if not a < b <= 1440:
        raise HoursError(f"{where}: {span!r} ends before it starts")
    return a, b


def _spans(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, list) or len(raw) > MAX_SPANS:
        raise HoursError(f"{where} must be a list of at most {MAX_SPANS} 'HH:MM-HH:MM'")
    parsed = sorted(_minutes(s, where) for s in raw)
    for (_, end), (start, _) in zip(parsed, parsed[1:], strict=False):
        if start < end:
            raise HoursError(f"{where}: spans overlap")
    return [s for s in raw]


def parse_hours(raw: Any) -> dict[str, Any]:
    """The canonical opening hours of ``raw`` (weekdays in order, holidays by date).

    ``{"mon": [...], ..., "holidays": {"2026-10-01": [], "2026-12-24": ["10:00-16:00"]}}``;
    a weekday left out is closed, no weekday at all means always open (as terminals read it).
    """
    if not isinstance(raw, dict):
        raise HoursError("opening hours must be an object of weekdays and holidays")
    out: dict[str, Any] = {}
    for key in raw:
        if key not in DAYS and key != "holidays":
            raise HoursError(f"opening hours: unknown day {str(key)[:20]!r} "
                             f"(one of {', '.join(DAYS)} or holidays)")
    for day in DAYS:
        if day in raw:
            out[day] = _spans(raw[day], day)
    holidays = raw.get("holidays", {})
    if not isinstance(holidays, dict) or len(holidays) > MAX_HOLIDAYS:
        raise HoursError(f"holidays must map at most {MAX_HOLIDAYS} dates (YYYY-MM-DD) "
                         "to spans")
    if holidays:
        days: dict[str, list[str]] = {}
        for date in sorted(holidays):
            try:
                if not isinstance(date, str) or len(date) != 10:
                    raise ValueError
                dt.date.fromisoformat(date)
            except ValueError:
                raise HoursError(f"holidays: {str(date)[:20]!r} is not a date "
                                 "(YYYY-MM-DD)") from None
            days[date] = _spans(holidays[date], f"holidays.{date}")
        out["holidays"] = days
    try:  # the terminals' own reader must accept what we will send them
        parse_config({"version": 1, "opening_hours": terminal_hours(out)})
    except ConfigError as exc:
        raise HoursError(str(exc)) from None
    return out


def terminal_hours(hours: dict[str, Any]) -> dict[str, list[str]]:
    """The weekly part, as a terminal config's ``opening_hours``."""
    return {day: list(hours[day]) for day in DAYS if day in hours}


def is_open(hours: dict[str, Any], local: dt.datetime) -> bool:
    """Whether a store with ``hours`` is open at ``local`` (the store's local time)."""
    minute = local.hour * 60 + local.minute
    holiday = hours.get("holidays", {}).get(local.date().isoformat())
    if holiday is not None:
        spans = holiday
    elif not any(day in hours for day in DAYS):
        return True
    else:
        spans = hours.get(DAYS[local.weekday()], [])
    return any(a <= minute < b for a, b in (_minutes(s, "") for s in spans))
