"""Hourly schedules, one per missed-run policy, and a weekday cron schedule, for the tests of
missed runs and of `litequeue schedules`."""

from litequeue import schedule

schedule.every("sample_tasks.noop", seconds=3600, name="hourly-once", missed="once")
schedule.every("sample_tasks.noop", seconds=3600, name="hourly-skip", missed="skip", queue="reports")
schedule.cron("sample_tasks.add", "0 6 * * mon-fri", args={"a": 1, "b": 2}, priority=5, max_retries=2)
