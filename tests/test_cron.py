"""Cron expressions: parsing, errors, next fire times, and daylight-saving changes."""

import datetime

import pytest

from litequeue import cron
from litequeue.cron import UTC, CronExpression, next_fire_time, resolve_zone
from litequeue.errors import InvalidOptionError, InvalidScheduleError

try:
    import zoneinfo

    BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
    NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
except Exception:  # no zoneinfo module or no time zone database on this system
    BERLIN = NEW_YORK = None

needs_zones = pytest.mark.skipif(BERLIN is None, reason="no time zone database for zoneinfo")


def utc(text: str) -> float:
    """The Unix time of an ISO time without offset, read as UTC."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def next_utc(expression: str, after: str) -> str:
    moment = next_fire_time(CronExpression(expression), utc(after), UTC)
    return datetime.datetime.fromtimestamp(moment, UTC).replace(tzinfo=None).isoformat(timespec="minutes")


# (expression, after, expected next fire time), all in UTC.
NEXT_FIRE_TIMES = [
    ("* * * * *", "2024-01-01T00:00:30", "2024-01-01T00:01"),
    ("* * * * *", "2024-01-01T00:01:00", "2024-01-01T00:02"),
    ("*/15 * * * *", "2024-01-31T23:50", "2024-02-01T00:00"),
    ("1-30/5 * * * *", "2024-01-01T00:27", "2024-01-01T01:01"),
    ("5/15 * * * *", "2024-01-01T00:50", "2024-01-01T01:05"),
    ("0,30 9-17/4 * * *", "2024-01-01T09:30", "2024-01-01T13:00"),
    ("59 23 31 12 *", "2024-12-31T23:59", "2025-12-31T23:59"),
    ("0 0 1 1 *", "2024-12-31T23:59", "2025-01-01T00:00"),
    # Month ends: a 31st skips the months without one.
    ("0 0 31 * *", "2024-02-01T00:00", "2024-03-31T00:00"),
    ("0 0 31 * *", "2024-03-31T00:00", "2024-05-31T00:00"),
    ("0 0 30 * *", "2024-01-30T00:00", "2024-03-30T00:00"),
    # Leap years: February 29th exists in 2024 and 2028, not in 2100.
    ("0 0 29 2 *", "2023-03-01T00:00", "2024-02-29T00:00"),
    ("0 0 29 2 *", "2024-02-29T00:00", "2028-02-29T00:00"),
    ("0 0 29 2 *", "2097-01-01T00:00", "2104-02-29T00:00"),
    ("0 0 28-31 2 *", "2023-02-28T00:00", "2024-02-28T00:00"),
    # Day-of-month and day-of-week both restricted: a day matching either fires.
    ("0 0 1 * mon", "2024-01-02T00:00", "2024-01-08T00:00"),
    ("0 0 1 * mon", "2024-01-29T00:00", "2024-02-01T00:00"),
    ("0 0 13 * fri", "2024-09-01T00:00", "2024-09-06T00:00"),
    ("0 0 13 * fri", "2024-09-06T00:00", "2024-09-13T00:00"),
    # Only one restricted, or one starting with '*': both must match.
    ("0 0 */2 * mon", "2024-01-01T00:00", "2024-01-15T00:00"),
    ("0 0 1 * */7", "2024-01-01T00:00", "2024-09-01T00:00"),
    ("0 0 29 2 */7", "2024-03-01T00:00", "2032-02-29T00:00"),
    # February 30th never occurs, but with OR the Mondays of February still fire.
    ("0 0 30 2 mon", "2024-01-01T00:00", "2024-02-05T00:00"),
    # Weekday names, ranges, and Sunday as 0 or 7.
    ("0 6 * * mon-fri", "2024-01-05T06:00", "2024-01-08T06:00"),
    ("0 9 * * fri-sun", "2024-01-01T00:00", "2024-01-05T09:00"),
    ("0 9 * * fri-sun", "2024-01-06T09:00", "2024-01-07T09:00"),
    ("0 9 * * fri-sun", "2024-01-07T09:00", "2024-01-12T09:00"),
    ("0 0 * * 0", "2024-01-01T00:00", "2024-01-07T00:00"),
    ("0 0 * * 7", "2024-01-01T00:00", "2024-01-07T00:00"),
    ("0 0 * * 5-7", "2024-01-06T00:00", "2024-01-07T00:00"),
    ("0 0 * * SAT,Sun", "2024-01-01T00:00", "2024-01-06T00:00"),
    # Month names.
    ("30 4 1,15 jan,jul *", "2024-01-15T04:30", "2024-07-01T04:30"),
    ("0 0 1 JAN-MAR *", "2024-03-01T00:00", "2025-01-01T00:00"),
    # Macros.
    ("@hourly", "2024-01-01T10:15", "2024-01-01T11:00"),
    ("@daily", "2024-01-01T10:15", "2024-01-02T00:00"),
    ("@midnight", "2024-01-01T10:15", "2024-01-02T00:00"),
    ("@weekly", "2024-01-01T10:15", "2024-01-07T00:00"),
    ("@monthly", "2024-01-31T10:15", "2024-02-01T00:00"),
    ("@yearly", "2024-06-01T00:00", "2025-01-01T00:00"),
    ("@annually", "2024-06-01T00:00", "2025-01-01T00:00"),
]


@pytest.mark.parametrize("expression,after,expected", NEXT_FIRE_TIMES, ids=[" | ".join(c[:2]) for c in NEXT_FIRE_TIMES])
def test_next_fire_time(expression, after, expected):
    assert next_utc(expression, after) == expected


# (expression, a fragment of the error message)
BAD_EXPRESSIONS = [
    ("", "it has 0 field(s), not 5"),
    ("* * * *", "it has 4 field(s), not 5; write minute hour day-of-month month day-of-week"),
    ("* * * * * *", "it has 6 field(s), not 5"),
    ("60 * * * *", "minute item '60' is out of range 0-59"),
    ("* 24 * * *", "hour item '24' is out of range 0-23"),
    ("* * 0 * *", "day-of-month item '0' is out of range 1-31"),
    ("* * 32 * *", "day-of-month item '32' is out of range 1-31"),
    ("* * * 13 *", "month item '13' is out of range 1-12"),
    ("* * * * 8", "day-of-week item '8' is out of range 0-7"),
    ("*/0 * * * *", "minute item '*/0' has step '0'; use a whole number >= 1 after '/'"),
    ("*/x * * * *", "minute item '*/x' has step 'x'"),
    ("*/ * * * *", "minute item '*/' has step ''"),
    ("5-1 * * * *", "minute item '5-1' runs backwards; write the range from low to high, or as two items"),
    ("* * * foo *", "month item 'foo' is not a value, range or step; use numbers 1-12, or a name jan-dec"),
    ("* * * * funday", "day-of-week item 'funday' is not a value, range or step; use numbers 0-7, or a name sun-sat"),
    ("-5 * * * *", "minute item '-5' is not a value"),
    ("1-2-3 * * * *", "minute item '1-2-3' is not a value"),
    ("\u00b2 * * * *", "minute item '\u00b2' is not a value"),
    ("1,,2 * * * *", "minute has an empty item; remove the extra comma"),
    ("@reboot", "unknown macro; use one of @yearly"),
    ("0 0 30 2 *", "it never fires, because day-of-month 30 does not occur in February"),
    ("0 0 30,31 2 *", "day-of-month 30, 31 does not occur in February"),
    ("0 0 31 4,6,9,11 *", "does not occur in April, June, September or November"),
    ("0 0 30 2 */2", "it never fires"),
]


@pytest.mark.parametrize("expression,fragment", BAD_EXPRESSIONS, ids=[case[0] or "empty" for case in BAD_EXPRESSIONS])
def test_bad_expression_names_the_problem(expression, fragment):
    with pytest.raises(InvalidScheduleError) as caught:
        CronExpression(expression)
    message = str(caught.value)
    assert message.startswith(f"invalid cron expression {' '.join(expression.split())!r}: ")
    assert fragment in message


def test_expression_must_be_a_string():
    with pytest.raises(InvalidScheduleError, match="pass a string of five fields"):
        CronExpression(5)


def test_schedule_error_is_an_option_error():
    assert issubclass(InvalidScheduleError, InvalidOptionError)


def test_expression_whitespace_normalised():
    expression = CronExpression("  0   6 *\t* mon-fri ")
    assert str(expression) == "0 6 * * mon-fri"
    assert expression == CronExpression("0 6 * * mon-fri")


def test_fields_parsed_to_values():
    expression = CronExpression("*/20 1-3 1,15 */6 fri-sun")
    assert expression.minutes == (0, 20, 40)
    assert expression.hours == (1, 2, 3)
    assert expression.days == {1, 15}
    assert expression.months == (1, 7)
    assert expression.weekdays == {5, 6, 0}
    assert expression.day_or is True
    assert CronExpression("0 0 */2 * mon").day_or is False


def test_next_after_ignores_seconds():
    expression = CronExpression("*/5 * * * *")
    after = datetime.datetime(2024, 1, 1, 10, 4, 59, 999999)
    assert expression.next_after(after) == datetime.datetime(2024, 1, 1, 10, 5)


def test_far_fire_time_found_by_jumps():
    # February 29th on a Sunday: 2032 after 2024, through years without one.
    expression = CronExpression("0 0 29 2 */7")
    start = datetime.datetime(2024, 3, 1)
    found = [start]
    for _ in range(3):
        found.append(expression.next_after(found[-1]))
    assert [moment.year for moment in found[1:]] == [2032, 2060, 2088]


# --- time zones and daylight-saving changes ----------------------------------------------------

def local(zone, text: str) -> float:
    """The Unix time of an ISO time with offset; the zone only checks that the offset is right."""
    moment = datetime.datetime.fromisoformat(text)
    assert moment.utcoffset() == moment.astimezone(zone).utcoffset(), f"{text} has the wrong offset for {zone}"
    return moment.timestamp()


def next_local(expression: str, zone, after: str) -> str:
    moment = next_fire_time(CronExpression(expression), local(zone, after), zone)
    return datetime.datetime.fromtimestamp(moment, zone).isoformat(timespec="minutes")


# Berlin: clocks jump from 02:00 to 03:00 on 2024-03-31 and go back from 03:00 to 02:00 on
# 2024-10-27. New York: from 02:00 to 03:00 on 2024-03-10, from 02:00 to 01:00 on 2024-11-03.
DST_CASES = [
    # A skipped time fires once, at the moment of the jump, then at its time the next day.
    ("Europe/Berlin", "30 2 * * *", "2024-03-30T12:00+01:00", "2024-03-31T03:00+02:00"),
    ("Europe/Berlin", "30 2 * * *", "2024-03-31T03:00+02:00", "2024-04-01T02:30+02:00"),
    # Several skipped times fire there together, once.
    ("Europe/Berlin", "*/15 2 * * *", "2024-03-31T01:50+01:00", "2024-03-31T03:00+02:00"),
    ("Europe/Berlin", "*/15 2 * * *", "2024-03-31T03:00+02:00", "2024-04-01T02:00+02:00"),
    # A time just after the jump exists and fires normally.
    ("Europe/Berlin", "0 3 * * *", "2024-03-31T01:00+01:00", "2024-03-31T03:00+02:00"),
    # A daily time outside the change stays at its wall-clock time: 23 hours apart here.
    ("Europe/Berlin", "0 6 * * *", "2024-03-30T06:00+01:00", "2024-03-31T06:00+02:00"),
    # A time shown twice fires at its first occurrence only.
    ("Europe/Berlin", "30 2 * * *", "2024-10-26T12:00+02:00", "2024-10-27T02:30+02:00"),
    ("Europe/Berlin", "30 2 * * *", "2024-10-27T02:30+02:00", "2024-10-28T02:30+01:00"),
    ("Europe/Berlin", "*/30 * * * *", "2024-10-27T02:30+02:00", "2024-10-27T03:00+01:00"),
    # Starting inside the second pass of the repeated hour, the next new wall time fires.
    ("Europe/Berlin", "*/30 * * * *", "2024-10-27T02:10+01:00", "2024-10-27T03:00+01:00"),
    ("Europe/Berlin", "0 * * * *", "2024-10-27T02:00+02:00", "2024-10-27T03:00+01:00"),
    ("America/New_York", "0 2 * * *", "2024-03-09T12:00-05:00", "2024-03-10T03:00-04:00"),
    ("America/New_York", "30 1 * * *", "2024-11-02T12:00-04:00", "2024-11-03T01:30-04:00"),
    ("America/New_York", "30 1 * * *", "2024-11-03T01:30-04:00", "2024-11-04T01:30-05:00"),
]


@needs_zones
@pytest.mark.parametrize("zone_name,expression,after,expected", DST_CASES,
                         ids=[" | ".join(case[:3]) for case in DST_CASES])
def test_next_fire_time_across_dst(zone_name, expression, after, expected):
    zone = zoneinfo.ZoneInfo(zone_name)
    assert next_local(expression, zone, after) == expected


@needs_zones
def test_hourly_runs_across_fall_back():
    # Each wall-clock hour fires once: 02:00 is not repeated, so two real hours pass to 03:00.
    zone = BERLIN
    expression = CronExpression("0 * * * *")
    moment = local(zone, "2024-10-27T00:30+02:00")
    fired = []
    for _ in range(4):
        moment = next_fire_time(expression, moment, zone)
        fired.append(datetime.datetime.fromtimestamp(moment, zone).isoformat(timespec="minutes"))
    assert fired == ["2024-10-27T01:00+02:00", "2024-10-27T02:00+02:00", "2024-10-27T03:00+01:00",
                     "2024-10-27T04:00+01:00"]


def test_utc_zone_by_default():
    expression = CronExpression("0 6 * * *")
    assert next_fire_time(expression, utc("2024-03-31T05:00")) == utc("2024-03-31T06:00")


def test_fixed_offset_zone():
    zone = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    moment = next_fire_time(CronExpression("0 6 * * *"), utc("2024-01-01T00:00"), zone)
    assert moment == utc("2024-01-01T00:30")


# --- resolve_zone ------------------------------------------------------------------------------

def test_resolve_zone_utc():
    assert resolve_zone(None) is UTC
    assert resolve_zone("UTC") is UTC
    assert resolve_zone("utc") is UTC


@needs_zones
def test_resolve_zone_names():
    assert resolve_zone("Europe/Berlin") == BERLIN
    assert resolve_zone(BERLIN) is BERLIN
    assert cron.zone_name(BERLIN) == "Europe/Berlin"
    assert cron.zone_name(UTC) == "UTC"


@needs_zones
def test_resolve_local_zone_from_tz(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    cron._local_zone.cache_clear()
    try:
        assert resolve_zone("local") == NEW_YORK
    finally:
        cron._local_zone.cache_clear()


@needs_zones
def test_unknown_local_tz_rejected(monkeypatch):
    monkeypatch.setenv("TZ", "Mars/Olympus_Mons")
    cron._local_zone.cache_clear()
    try:
        with pytest.raises(InvalidScheduleError, match="unknown local time zone TZ='Mars/Olympus_Mons'"):
            resolve_zone("local")
    finally:
        cron._local_zone.cache_clear()


@pytest.mark.parametrize("value,fragment", [
    ("Europe/Berln", "unknown time zone 'Europe/Berln': use an IANA name such as 'Europe/Berlin'"),
    ("../etc/passwd", "unknown time zone '../etc/passwd'"),
    (5, "invalid time zone 5: pass 'UTC', 'local', an IANA name"),
])
def test_bad_zone_rejected(value, fragment):
    with pytest.raises(InvalidScheduleError) as caught:
        resolve_zone(value)
    assert fragment in str(caught.value)


def test_pytz_style_zone_rejected():
    class PytzLike(datetime.tzinfo):
        def localize(self, moment):
            return moment

    with pytest.raises(InvalidScheduleError, match="is a pytz zone"):
        resolve_zone(PytzLike())
