"""Deleting finished tasks after a retention period, so that the database file stops growing.

``litequeue purge`` runs :func:`purge_finished` on request, and every supervisor runs it
periodically with ``WorkerConfig.retention_s``. Only completed, failed and cancelled tasks
are deleted, together with their rows in ``task_output``; queued and running tasks never are.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from typing import Iterable, Optional, Sequence, Tuple

from . import sql
from .connection import Database
from .errors import InvalidOptionError
from .status import FINAL_STATUSES, TaskStatus

#: How long finished tasks are kept when nothing else is configured: 7 days.
DEFAULT_RETENTION_S = 7 * 24 * 3600.0

PURGEABLE_STATUSES: Tuple[str, ...] = tuple(
    status.value for status in TaskStatus if status in FINAL_STATUSES
)

# Tasks deleted per write transaction, so a large purge takes the write lock for one short
# transaction at a time. 500 ids also stay below the limit of 999 bound parameters per
# statement that SQLite versions before 3.32 have.
PURGE_BATCH_SIZE = 500

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Return the seconds in a duration such as ``30s``, ``15m``, ``12h``, ``7d`` or ``90``.

    A bare number counts as seconds.

    Raises:
        InvalidOptionError: ``text`` is not a non-negative number with an optional unit.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise InvalidOptionError(
            f"invalid duration {text!r}: use a number with an optional unit s, m, h or d, "
            "such as 30s, 15m, 12h or 7d"
        )
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds):
        raise InvalidOptionError(f"invalid duration {text!r}: it is too large")
    return seconds


def format_duration(seconds: float) -> str:
    """Format seconds in the largest unit that divides them evenly, the way parse_duration reads it."""
    for unit in ("d", "h", "m"):
        count = seconds / _UNIT_SECONDS[unit]
        if count >= 1 and count.is_integer():
            return f"{int(count)}{unit}"
    return f"{seconds:g}s"


def check_purgeable(statuses: Iterable[str]) -> Tuple[str, ...]:
    """Return ``statuses`` without duplicates, or raise InvalidOptionError for a status that
    is not completed, failed or cancelled."""
    checked = []
    for status in statuses:
        if status not in PURGEABLE_STATUSES:
            raise InvalidOptionError(
                f"invalid status {status!r} for a purge: only finished tasks are deleted, so use "
                f"{', '.join(PURGEABLE_STATUSES)}"
            )
        if status not in checked:
            checked.append(status)
    return tuple(checked)


@dataclasses.dataclass(frozen=True)
class PurgeResult:
    """The outcome of one purge: the number of tasks deleted, the finish time before which
    tasks were deleted (Unix seconds), and whether it stopped at its batch limit."""

    deleted: int
    cutoff: float
    more: bool


def purge_finished(
    db: Database,
    older_than_s: float,
    statuses: Sequence[str] = PURGEABLE_STATUSES,
    *,
    now: Optional[float] = None,
    max_batches: Optional[int] = None,
) -> PurgeResult:
    """Delete tasks in ``statuses`` that finished more than ``older_than_s`` seconds ago.

    Deletes in batches of PURGE_BATCH_SIZE, one write transaction each. With ``max_batches``,
    stops after that many batches and reports ``more=True`` when the last batch was full.

    Raises:
        InvalidOptionError: a status is not a finished one, or ``older_than_s`` is negative.
    """
    statuses = check_purgeable(statuses)
    if not older_than_s >= 0:
        raise InvalidOptionError(f"invalid age {older_than_s!r}: use a number of seconds >= 0")
    now = time.time() if now is None else now
    cutoff = now - older_than_s
    select = sql.SELECT_PURGEABLE_IDS.format(statuses=", ".join("?" * len(statuses)))

    deleted = 0
    batches = 0
    while True:
        count = db.write("purge", lambda db: _purge_batch_in(db, select, (*statuses, cutoff)))
        deleted += count
        batches += 1
        if count < PURGE_BATCH_SIZE:
            return PurgeResult(deleted, cutoff, more=False)
        if max_batches is not None and batches >= max_batches:
            return PurgeResult(deleted, cutoff, more=True)


def _purge_batch_in(db: Database, select: str, parameters: tuple) -> int:
    rows = db.execute("select_purgeable_ids", select, (*parameters, PURGE_BATCH_SIZE)).fetchall()
    if not rows:
        return 0
    ids = tuple(row[0] for row in rows)
    placeholders = ", ".join("?" * len(ids))
    db.execute("delete_output_of_tasks", sql.DELETE_OUTPUT_OF_TASKS.format(placeholders=placeholders), ids)
    db.execute("delete_dependencies_of_tasks",
               sql.DELETE_DEPENDENCIES_OF_TASKS.format(placeholders=placeholders), (*ids, *ids))
    cursor = db.execute("delete_finished_tasks", sql.DELETE_FINISHED_TASKS.format(placeholders=placeholders), ids)
    return cursor.rowcount


def database_size(db: Database) -> int:
    """Return the bytes that the database file and its WAL take on disk."""
    return sum(_file_size(db.path + suffix) for suffix in ("", "-wal"))


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def vacuum(db: Database) -> tuple:
    """Rebuild the database file to return the space of deleted rows to the file system, then
    checkpoint the WAL with TRUNCATE. Returns the checkpoint's (busy, log, done) row.

    VACUUM waits for the write lock like any write and rewrites the whole file, so it takes
    time and disk space in proportion to the database size.
    """
    # VACUUM cannot run inside a transaction, so Database.write does not fit. It still takes
    # the WAL-reset guard's file lock, because it writes every page through the WAL and must
    # not overlap another process's checkpoint.
    db._with_write_lock(lambda: db.execute("vacuum", sql.VACUUM))
    return db.checkpoint("TRUNCATE")
