"""Cron expressions: parsing, and the next fire time in a time zone.

An expression has five fields separated by spaces::

    minute  hour  day-of-month  month  day-of-week
    0-59    0-23  1-31          1-12   0-7 (0 and 7 are Sunday)

Each field is a comma-separated list of items. An item is ``*`` (every value), a value, a
range ``a-b``, or one of these followed by a step ``/n``. So ``*/15`` is every 15th value
from the lowest, ``1-30/5`` is 1, 6, ..., 26, and ``5/15`` is ``5-59/15`` (from 5 to the
highest value). Months also take the names ``jan`` to ``dec`` and weekdays ``sun`` to
``sat``, in any case. The macros ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily``
(``@midnight``) and ``@hourly`` stand for their usual five fields.

When both day fields are restricted, a day that matches either one fires: ``0 0 1 * mon``
fires on the 1st of each month and on every Monday. A day field that starts with ``*``
(``*`` or ``*/2``) counts as unrestricted, as in Vixie cron and cronie, whose parsers test the
field's first character. So ``0 0 */2 * mon`` fires on Mondays with an odd day of the month.

Fire times are wall-clock times in a time zone (:func:`resolve_zone`). Where daylight-saving
time changes the clock, :func:`next_fire_time` fires each wall-clock time at most once:

- A time that the clock skips (02:30 when clocks jump from 02:00 to 03:00) fires at the
  moment of the jump, and several skipped times fire there once together.
- A time that the clock shows twice (01:30 when clocks go back from 02:00 to 01:00) fires at
  its first occurrence only.
"""

from __future__ import annotations

import bisect
import calendar
import dataclasses
import datetime
import functools
import math
import os
from typing import Dict, FrozenSet, Optional, Tuple, Union

from .errors import InvalidScheduleError

try:
    import zoneinfo
except ImportError:  # pragma: no cover - Python 3.9+ always has it; a stripped build may not
    zoneinfo = None

UTC = datetime.timezone.utc

_ONE_MINUTE = datetime.timedelta(minutes=1)
_ONE_HOUR = datetime.timedelta(hours=1)
_ONE_DAY = datetime.timedelta(days=1)

# Every day-of-month, month and weekday combination recurs within one 400-year cycle of the
# Gregorian calendar, so a search that finds nothing in 400 years never will.
_SEARCH_YEARS = 400

_MONTH_NAMES = {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name}
_WEEKDAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_MONTH_LABELS = {number: name for number, name in enumerate(calendar.month_name) if name}
# The maximum number of days in each month, with February of a leap year.
_MAX_MONTH_DAYS = {month: calendar.monthrange(2000, month)[1] for month in range(1, 13)}

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_EXAMPLE = "such as '*/15 * * * *' or '0 6 * * mon-fri'"


@dataclasses.dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: Dict[str, int]
    # The highest value that ``*`` covers; day-of-week stops at 6 because 7 is Sunday again.
    star_high: int


_FIELDS = (
    _FieldSpec("minute", 0, 59, {}, 59),
    _FieldSpec("hour", 0, 23, {}, 23),
    _FieldSpec("day-of-month", 1, 31, {}, 31),
    _FieldSpec("month", 1, 12, _MONTH_NAMES, 12),
    _FieldSpec("day-of-week", 0, 7, _WEEKDAY_NAMES, 6),
)


@dataclasses.dataclass(frozen=True)
class CronExpression:
    """A parsed cron expression; see the module docstring for the syntax.

    Args:
        expression: Five fields, or a macro such as ``@daily``.

    Raises:
        InvalidScheduleError: The expression is malformed, has a value out of range, or can
            never fire (``0 0 30 2 *``: February has no 30th). The message names the field
            and the item.
    """

    expression: str
    minutes: Tuple[int, ...] = dataclasses.field(init=False, repr=False, compare=False)
    hours: Tuple[int, ...] = dataclasses.field(init=False, repr=False, compare=False)
    days: FrozenSet[int] = dataclasses.field(init=False, repr=False, compare=False)
    months: Tuple[int, ...] = dataclasses.field(init=False, repr=False, compare=False)
    weekdays: FrozenSet[int] = dataclasses.field(init=False, repr=False, compare=False)
    # True when both day fields are restricted, so that a day matching either one fires.
    day_or: bool = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.expression, str):
            raise InvalidScheduleError(
                f"invalid cron expression {self.expression!r}: pass a string of five fields, {_EXAMPLE}")
        text = " ".join(self.expression.split())
        object.__setattr__(self, "expression", text)
        fields = _MACROS.get(text.lower(), text).split()
        if text.startswith("@") and text.lower() not in _MACROS:
            raise InvalidScheduleError(
                f"invalid cron expression {text!r}: unknown macro; use one of {', '.join(_MACROS)} "
                "or five fields")
        if len(fields) != 5:
            raise InvalidScheduleError(
                f"invalid cron expression {text!r}: it has {len(fields)} field(s), not 5; write "
                f"minute hour day-of-month month day-of-week, {_EXAMPLE}")

        values = [_parse_field(text, field, spec) for field, spec in zip(fields, _FIELDS)]
        object.__setattr__(self, "minutes", tuple(sorted(values[0])))
        object.__setattr__(self, "hours", tuple(sorted(values[1])))
        object.__setattr__(self, "days", frozenset(values[2]))
        object.__setattr__(self, "months", tuple(sorted(values[3])))
        # 7 is Sunday, like 0; date.isoweekday() % 7 numbers the days the same way.
        object.__setattr__(self, "weekdays", frozenset(value % 7 for value in values[4]))
        object.__setattr__(self, "day_or", not fields[2].startswith("*") and not fields[4].startswith("*"))
        self._check_fires()

    def _check_fires(self) -> None:
        # With the day-of-week unrestricted, or combined by AND, the day-of-month alone decides
        # whether a date exists. With OR, every week has a matching day.
        if self.day_or:
            return
        if any(day <= _MAX_MONTH_DAYS[month] for month in self.months for day in self.days):
            return
        months = _join_or([_MONTH_LABELS[month] for month in self.months])
        days = ", ".join(str(day) for day in sorted(self.days))
        raise InvalidScheduleError(
            f"invalid cron expression {self.expression!r}: it never fires, because day-of-month "
            f"{days} does not occur in {months}; pick days that exist in those months")

    def matches_day(self, day: datetime.date) -> bool:
        """Return whether the day fields select ``day`` (month not checked)."""
        in_days = day.day in self.days
        in_weekdays = day.isoweekday() % 7 in self.weekdays
        if self.day_or:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def next_after(self, moment: datetime.datetime) -> datetime.datetime:
        """Return the first wall-clock minute after ``moment`` that the expression selects.

        ``moment`` and the result are naive datetimes on the same wall clock. Each step jumps
        to the next allowed month, day, hour or minute, so the cost does not grow with the
        distance to the result.
        """
        candidate = moment.replace(second=0, microsecond=0) + _ONE_MINUTE
        last_year = min(datetime.MAXYEAR - 1, candidate.year + _SEARCH_YEARS)
        while candidate.year <= last_year:
            if candidate.month not in self.months:
                candidate = self._next_month_start(candidate)
                continue
            day = self._next_day_in_month(candidate)
            if day is None:
                candidate = _first_of_next_month(candidate)
                continue
            if day != candidate.day:
                candidate = candidate.replace(day=day, hour=0, minute=0)
            hour = _next_value(self.hours, candidate.hour)
            if hour is None:
                candidate = candidate.replace(hour=0, minute=0) + _ONE_DAY
                continue
            if hour != candidate.hour:
                candidate = candidate.replace(hour=hour, minute=0)
            minute = _next_value(self.minutes, candidate.minute)
            if minute is None:
                candidate = candidate.replace(minute=0) + _ONE_HOUR
                continue
            return candidate.replace(minute=minute)
        # _check_fires rejects expressions that never fire, so only a start close to
        # datetime.MAXYEAR gets here.
        raise InvalidScheduleError(
            f"cron expression {self.expression!r} has no fire time between {moment:%Y-%m-%d} "
            f"and the year {last_year}")

    def _next_month_start(self, moment: datetime.datetime) -> datetime.datetime:
        month = _next_value(self.months, moment.month)
        if month is None:
            return moment.replace(year=moment.year + 1, month=self.months[0], day=1, hour=0, minute=0)
        return moment.replace(month=month, day=1, hour=0, minute=0)

    def _next_day_in_month(self, moment: datetime.datetime) -> Optional[int]:
        last_day = calendar.monthrange(moment.year, moment.month)[1]
        for day in range(moment.day, last_day + 1):
            if self.matches_day(datetime.date(moment.year, moment.month, day)):
                return day
        return None

    def __str__(self) -> str:
        return self.expression


def _join_or(words) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _next_value(values: Tuple[int, ...], current: int) -> Optional[int]:
    """Return the smallest of the sorted ``values`` that is >= ``current``, or None."""
    index = bisect.bisect_left(values, current)
    return values[index] if index < len(values) else None


def _first_of_next_month(moment: datetime.datetime) -> datetime.datetime:
    if moment.month == 12:
        return moment.replace(year=moment.year + 1, month=1, day=1, hour=0, minute=0)
    return moment.replace(month=moment.month + 1, day=1, hour=0, minute=0)


# --- parsing ----------------------------------------------------------------------------------

def _parse_field(expression: str, field: str, spec: _FieldSpec) -> FrozenSet[int]:
    values = set()
    for item in field.split(","):
        values.update(_parse_item(expression, item, spec))
    return frozenset(values)


def _parse_item(expression: str, item: str, spec: _FieldSpec) -> range:
    def invalid(reason: str) -> InvalidScheduleError:
        return InvalidScheduleError(f"invalid cron expression {expression!r}: {spec.name} item {item!r} {reason}")

    if not item:
        raise InvalidScheduleError(
            f"invalid cron expression {expression!r}: {spec.name} has an empty item; remove the extra comma")

    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not _is_number(step_text) or int(step_text) < 1:
            raise invalid(f"has step {step_text!r}; use a whole number >= 1 after '/'")
        step = int(step_text)

    if base == "*":
        low, high = spec.low, spec.star_high
    elif "-" in base:
        start_text, _, end_text = base.partition("-")
        low = _parse_value(start_text, spec, invalid)
        # "fri-sun" ends on Sunday written as 7, so that the range runs forwards.
        high = 7 if spec.name == "day-of-week" and end_text.lower() == "sun" else _parse_value(end_text, spec, invalid)
        if low > high:
            raise invalid(f"runs backwards; write the range from low to high, or as two items "
                          f"such as '{low}-{spec.high},{spec.low}-{high}'")
    else:
        low = _parse_value(base, spec, invalid)
        # "5/15" counts from 5 up to the highest value, as "5-59/15" would.
        high = spec.high if slash else low
    return range(low, high + 1, step)


def _is_number(text: str) -> bool:
    # str.isdigit alone accepts characters such as "²" that int() rejects.
    return text.isascii() and text.isdigit()


def _parse_value(text: str, spec: _FieldSpec, invalid) -> int:
    lowered = text.lower()
    if lowered in spec.names:
        return spec.names[lowered]
    if not _is_number(text):
        names = f", or a name {min(spec.names, key=spec.names.get)}-{max(spec.names, key=spec.names.get)}" \
            if spec.names else ""
        raise invalid(f"is not a value, range or step; use numbers {spec.low}-{spec.high}{names}, "
                      "'*', 'a-b' or '*/n'")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise invalid(f"is out of range {spec.low}-{spec.high}")
    return value


# --- time zones --------------------------------------------------------------------------------

ZoneArgument = Union[str, datetime.tzinfo, None]


def resolve_zone(zone: ZoneArgument) -> datetime.tzinfo:
    """Return the time zone that ``zone`` names.

    Args:
        zone: One of these:

            - None or ``"UTC"``: UTC.
            - ``"local"``: the local zone of this host, from the ``TZ`` environment variable,
              else from ``/etc/localtime``.
            - An IANA name such as ``"Europe/Berlin"``.
            - A ``tzinfo``, such as ``zoneinfo.ZoneInfo(...)``.

    Raises:
        InvalidScheduleError: The name is unknown, or the local zone cannot be found.
    """
    if zone is None or (isinstance(zone, str) and zone.upper() == "UTC"):
        return UTC
    if isinstance(zone, datetime.tzinfo):
        if hasattr(zone, "localize"):
            raise InvalidScheduleError(
                f"time zone {zone!r} is a pytz zone, whose offsets are wrong without localize(); "
                "pass its name or zoneinfo.ZoneInfo(name) instead")
        return zone
    if not isinstance(zone, str):
        raise InvalidScheduleError(
            f"invalid time zone {zone!r}: pass 'UTC', 'local', an IANA name such as 'Europe/Berlin', "
            "or a tzinfo")
    if zone == "local":
        return _local_zone()
    return _named_zone(zone, f"time zone {zone!r}")


def _named_zone(name: str, label: str) -> datetime.tzinfo:
    if zoneinfo is None:
        raise InvalidScheduleError(f"{label} needs the zoneinfo module, which this Python lacks; use 'UTC'")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidScheduleError(
            f"unknown {label}: use an IANA name such as 'Europe/Berlin' or 'America/New_York', or "
            "'UTC'; where the system has no time zone database, install the tzdata package") from exc


# Cached, so that a schedule registered twice (a module imported again) gets an equal zone.
@functools.lru_cache(maxsize=None)
def _local_zone() -> datetime.tzinfo:
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        return _named_zone(name, f"local time zone TZ={name!r}")
    if zoneinfo is None:
        raise InvalidScheduleError("the local time zone needs the zoneinfo module, which this Python lacks")
    try:
        with open("/etc/localtime", "rb") as handle:
            return zoneinfo.ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError) as exc:
        raise InvalidScheduleError(
            f"cannot read the local time zone from /etc/localtime ({exc}) and TZ is not set; set TZ "
            "or pass a zone name such as timezone='Europe/Berlin'") from exc


def zone_name(zone: datetime.tzinfo) -> str:
    """Return a readable name for ``zone``: its IANA key, ``UTC``, or ``str(zone)``."""
    if zone is UTC:
        return "UTC"
    return getattr(zone, "key", None) or str(zone)


def next_fire_time(expression: CronExpression, after_s: float, zone: datetime.tzinfo = UTC) -> float:
    """Return the first fire time of ``expression`` after the Unix time ``after_s``.

    The expression selects wall-clock times in ``zone``. A time that daylight-saving time
    skips fires at the moment of the jump. A time that the clock shows twice fires at its
    first occurrence only.
    """
    wall = _wall_time(after_s, zone)
    # Each pass moves ``wall`` forward. Wall-clock time runs backwards only where the clock
    # is set back, so a pass maps to an instant at or before ``after_s`` only for fire times
    # in the repeated hour, at most once each.
    while True:
        wall = expression.next_after(wall)
        instant = _instant(wall, zone)
        if instant > after_s:
            return instant


def _wall_time(moment_s: float, zone: datetime.tzinfo) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(moment_s, zone).replace(tzinfo=None)


def _instant(wall: datetime.datetime, zone: datetime.tzinfo) -> float:
    """Return the Unix time at which the clock in ``zone`` shows ``wall``.

    For a time shown twice, fold=0 picks the first occurrence (PEP 495). For a time the
    clock skips, return the moment of the jump: the first second whose wall time is later.
    """
    first = wall.replace(tzinfo=zone, fold=0).timestamp()
    if _wall_time(first, zone) == wall:
        return first
    # In a gap, fold=0 and fold=1 apply the offsets from before and after the jump, which
    # land on either side of it.
    second = wall.replace(tzinfo=zone, fold=1).timestamp()
    before, after = math.floor(min(first, second)), math.ceil(max(first, second))
    while after - before > 1:
        middle = (before + after) // 2
        if _wall_time(middle, zone) >= wall:
            after = middle
        else:
            before = middle
    return float(after)
