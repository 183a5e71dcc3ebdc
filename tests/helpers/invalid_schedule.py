"""A module whose schedule can never fire, for the test of how `litequeue schedules` reports it."""

from litequeue import schedule

schedule.cron("sample_tasks.noop", "0 0 30 2 *")
