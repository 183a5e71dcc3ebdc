"""``litequeue top``: a live view of a queue in the terminal.

It redraws with plain ANSI escape sequences (cursor home, erase line, erase below, the
alternate screen and cursor visibility), which VT100-compatible terminals understand and SSH
passes through unchanged, so it needs neither curses nor a terminfo entry.
"""

from __future__ import annotations

import datetime
import shutil
import signal
import sqlite3
import sys
import textwrap
import time
from typing import List, TextIO

from . import inspection
from .cli_format import format_age, format_live_workers, format_table, shorten
from .connection import Database, is_busy_error
from .status import TaskStatus

# Below this size the view cannot show one running task and one failure, so it prints a
# short message instead of a frame.
MIN_COLUMNS = 60
MIN_LINES = 12
# The view lists at most this many of the latest failures. Running tasks get the lines left.
MAX_FAILURES_SHOWN = 5

ENTER_SCREEN = "\x1b[?1049h\x1b[?25l"  # alternate screen on, cursor hidden
LEAVE_SCREEN = "\x1b[?25h\x1b[?1049l"  # cursor shown, alternate screen off
HOME = "\x1b[H"
ERASE_LINE_END = "\x1b[K"
ERASE_BELOW = "\x1b[J"

# Lines of a frame besides the task rows: four header lines, a blank line and two headings
# for the running tasks, then a blank line and two headings for the failures.
_FIXED_LINES = 10


def run(db: Database, *, once: bool, interval_s: float, lease_s: float, stream: TextIO = sys.stdout) -> int:
    """Draw frames until Ctrl-C (or one frame with ``once``) and return exit code 0."""
    if once:
        columns, lines = shutil.get_terminal_size()
        stream.write("\n".join(render(db, columns, lines, lease_s, live=False)) + "\n")
        return 0

    # A shell that starts a command in the background may hand it SIGINT ignored, and Python
    # then keeps it ignored. Restoring the handler lets Ctrl-C always stop the live view.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stream.write(ENTER_SCREEN)
    try:
        while True:
            columns, lines = shutil.get_terminal_size()
            frame = render(db, columns, lines, lease_s, live=True)
            stream.write(HOME + (ERASE_LINE_END + "\n").join(frame) + ERASE_LINE_END + ERASE_BELOW)
            stream.flush()
            time.sleep(interval_s)
    except KeyboardInterrupt:
        return 0
    finally:
        stream.write(LEAVE_SCREEN)
        stream.flush()


def render(db: Database, columns: int, lines: int, lease_s: float, *, live: bool) -> List[str]:
    """Return the lines of one frame, each cut to the terminal width."""
    # In a live frame, a line that fills the last column leaves some terminals waiting to
    # wrap, and the erase that follows it would then remove its last character.
    width = columns - 1 if live else columns
    if columns < MIN_COLUMNS or lines < MIN_LINES:
        message = f"terminal {columns}x{lines} is too small for litequeue top; it needs {MIN_COLUMNS}x{MIN_LINES}"
        return textwrap.wrap(message, max(1, width))[:max(1, lines)]

    failure_rows = min(MAX_FAILURES_SHOWN, (lines - _FIXED_LINES) // 2)
    running_rows = lines - _FIXED_LINES - failure_rows
    now = time.time()
    try:
        snapshot = inspection.top_snapshot(db, now=now, lease_s=lease_s, running_limit=running_rows,
                                           failures_limit=failure_rows)
    except sqlite3.OperationalError as exc:
        if not is_busy_error(exc) or not live:
            raise
        return [f"database {db.path} is busy ({exc}); trying again"[:width]]

    frame = _header(db, snapshot, now, live) + [""]
    frame += _running(snapshot, running_rows) + [""]
    frame += _failures(snapshot, now)
    return [line[:width] for line in frame[:lines]]


def _header(db: Database, snapshot: dict, now: float, live: bool) -> List[str]:
    clock = datetime.datetime.fromtimestamp(now).strftime("%Y-%m-%d %H:%M:%S")
    counts = snapshot["counts"]
    minute, hour = snapshot["finished_last_minute"], snapshot["finished_last_hour"]
    per_second = (minute["completed"] + minute["failed"]) / 60
    return [
        # The path goes last: a long one is cut at the terminal width.
        ("litequeue top (Ctrl-C to quit)" if live else "litequeue top") + f"  {clock}  {db.path}",
        "  ".join(f"{status.value} {counts[status.value]}" for status in TaskStatus)
        + f"  oldest queued {format_age(snapshot['oldest_queued_age_s'])}",
        f"last minute: {minute['completed']} completed, {minute['failed']} failed ({per_second:.2f}/s)   "
        f"last hour: {hour['completed']} completed, {hour['failed']} failed",
        format_live_workers(snapshot),
    ]


def _running(snapshot: dict, row_count: int) -> List[str]:
    total = snapshot["counts"][TaskStatus.PROGRESS.value]
    title = f"RUNNING ({total})" if total <= row_count else f"RUNNING ({total}, the {row_count} oldest shown)"
    rows = [
        (task["id"], task["queue"], task["task"], format_age(task["elapsed_s"]), task["attempts"],
         f"PID {task['worker_pid']} on {task['worker_host']}")
        for task in snapshot["running"]
    ]
    return [title] + format_table(("ID", "QUEUE", "TASK", "ELAPSED", "ATTEMPT", "WORKER"), rows, right=(0, 3, 4))


def _failures(snapshot: dict, now: float) -> List[str]:
    rows = [
        (task["id"], task["queue"], task["task"],
         format_age(None if task["finished"] is None else now - task["finished"]) + " ago",
         shorten(task["error"], 80))
        for task in snapshot["failures"]
    ]
    return ["LATEST FAILURES"] + format_table(("ID", "QUEUE", "TASK", "FINISHED", "ERROR"), rows, right=(0, 3))
