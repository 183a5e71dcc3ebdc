"""A schedule that enqueues sample_tasks.noop every second, for the exactly-once tests."""

from litequeue import schedule

schedule.every("sample_tasks.noop", seconds=1, name="every-second")
