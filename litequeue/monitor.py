"""Recording failures that the worker process cannot record itself: orphans, timeouts, exits.

Each function takes the queue to act on (a :class:`~litequeue.Queue`, a database path, or None
for the default database). Each write is fenced on the task still being in progress and,
from a supervisor, on the owner and attempt it saw. So a task is never recorded twice, and
``on_failure`` or ``on_retry`` fires once, in the process that recorded it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Iterable, List, Optional, Union

from . import liveness, signals, sql, storage
from .connection import Database
from .status import TaskStatus
from .storage import Claim, RetryPolicy
from .validation import format_seconds

logger = logging.getLogger(__name__)

# A worker on another host (or in a PID namespace this one cannot see) is presumed dead once
# its heartbeat is older than this.
DEFAULT_LEASE_S = 30.0

ORPHAN_MESSAGE = "Task failed: worker process (PID {pid}) no longer running"
TIMEOUT_MESSAGE = "Task timed out after {seconds} seconds"
EXIT_MESSAGE = "Worker subprocess exited with code {code}"

QueueLike = Union["Queue", Database, str, os.PathLike, None]  # noqa: F821


def _database(queue: QueueLike) -> Database:
    if isinstance(queue, Database):
        return queue
    database = getattr(queue, "database", None)
    if isinstance(database, Database):
        return database
    return _cached_database(None if queue is None else os.fspath(queue))


_databases: dict = {}


def _cached_database(path: Optional[str]) -> Database:
    key = (os.getpid(), os.path.abspath(path) if path else None)
    database = _databases.get(key)
    if database is None or database._conn is None:
        database = Database(path)
        _databases[key] = database
    return database


def record_failure(
    db: Database,
    task_id: int,
    error: str,
    *,
    expected: Optional[Claim] = None,
    retry_policy: RetryPolicy = RetryPolicy(),
    now: Optional[float] = None,
) -> Optional[TaskStatus]:
    """Fail (or retry) a task in progress and fire the observers once.

    Returns the new status, or None when the task was no longer in progress under the
    expected owner. Such a late write changes nothing and is logged.
    """
    now = time.time() if now is None else now

    def write(db: Database) -> Optional[TaskStatus]:
        claim = storage.claim_of_in(db, task_id)
        if claim is None or (expected is not None and claim != expected):
            return None
        max_retries = storage.max_retries_in(db, task_id)
        return storage.fail_or_retry_in(db, claim, error, None, now, retry_policy, max_retries)

    status = db.write("record_failure", write)
    if status is None:
        logger.info("task %s was no longer in progress under that owner; not recording: %s", task_id, error)
        return None
    task = storage.get_task(db, task_id)
    if status == TaskStatus.QUEUED:
        logger.warning("task %s (%s) failed and will retry at attempt %d: %s",
                       task_id, task.task, task.attempts + 1, error)
        signals.on_retry.send(task=task, error=error)
    else:
        logger.warning("task %s (%s) failed: %s", task_id, task.task, error)
        signals.on_failure.send(task=task, error=error)
    return status


def handle_subprocess_exit(task_id: int, exit_code: int, queue: QueueLike = None, *,
                           expected: Optional[Claim] = None,
                           retry_policy: RetryPolicy = RetryPolicy()) -> Optional[TaskStatus]:
    """Record that the worker process running ``task_id`` exited with ``exit_code``.

    A negative code means the process was killed by that signal (-9 for SIGKILL).
    """
    message = EXIT_MESSAGE.format(code=exit_code)
    return record_failure(_database(queue), task_id, message, expected=expected, retry_policy=retry_policy)


def handle_task_timeout(task_id: int, timeout_seconds: float, queue: QueueLike = None, *,
                        expected: Optional[Claim] = None,
                        retry_policy: RetryPolicy = RetryPolicy()) -> Optional[TaskStatus]:
    """Record that ``task_id`` ran past its timeout of ``timeout_seconds``."""
    message = TIMEOUT_MESSAGE.format(seconds=format_seconds(timeout_seconds))
    return record_failure(_database(queue), task_id, message, expected=expected, retry_policy=retry_policy)


def owner_is_alive(db: Database, task: storage.ProgressTask, *, now: float, lease_s: float,
                   local_host_id: Optional[str] = None) -> bool:
    """Return whether the recorded owner of a task in progress is still running.

    On this host, the PID and its start token decide. Elsewhere, or when no start token can
    be read, the owner's heartbeat decides (and with no heartbeat row, the task's last change).
    """
    local_host_id = liveness.host_id() if local_host_id is None else local_host_id
    if task.host_id == local_host_id:
        verdict = liveness.same_host_owner_alive(task.pid, task.start_token)
        if verdict is not None:
            return verdict
    row = db.execute("get_worker_heartbeat", sql.GET_WORKER_HEARTBEAT, (task.host_id, task.pid)).fetchone()
    last_seen = row[0] if row is not None else task.modified
    return last_seen >= now - lease_s


def detect_orphaned_tasks(
    queue: QueueLike = None,
    *,
    exclude: Iterable[tuple] = (),
    lease_s: float = DEFAULT_LEASE_S,
    retry_policy: RetryPolicy = RetryPolicy(),
    local_host_id: Optional[str] = None,
) -> List[int]:
    """Find tasks in progress whose worker process is gone, record them, and return their ids.

    ``exclude`` contains (host_id, pid) pairs of owners whose exits the caller records itself,
    such as a supervisor's own worker processes. ``local_host_id`` defaults to this
    process's host identity; an owner with another identity is judged by its heartbeat.
    """
    db = _database(queue)
    excluded = set(exclude)
    local_host_id = liveness.host_id() if local_host_id is None else local_host_id
    recovered = []
    for task in db.read(storage.list_progress):
        if (task.host_id, task.pid) in excluded:
            continue
        if owner_is_alive(db, task, now=time.time(), lease_s=lease_s, local_host_id=local_host_id):
            continue
        if _supervisor_will_record(db, task, local_host_id):
            continue
        if _recover_orphan(db, task, lease_s, local_host_id, retry_policy):
            recovered.append(task.task_id)
    return recovered


def _supervisor_will_record(db: Database, task: storage.ProgressTask, local_host_id: str) -> bool:
    """Return whether the dead owner's own supervisor is alive on this host.

    That supervisor records the exit with its exit code, which is more precise than the
    orphan message, so another supervisor leaves the task to it.
    """
    if task.host_id != local_host_id:
        return False
    row = db.execute("get_supervisor_of_worker", sql.GET_SUPERVISOR_OF_WORKER, (task.host_id, task.pid)).fetchone()
    if row is None:
        return False
    supervisor_pid, start_token = row
    return liveness.same_host_owner_alive(supervisor_pid, start_token) is True


def _recover_orphan(db: Database, seen: storage.ProgressTask, lease_s: float,
                    local_host_id: str, retry_policy: RetryPolicy) -> bool:
    message = ORPHAN_MESSAGE.format(pid=seen.pid)
    expected = Claim(seen.task_id, seen.pid, seen.host_id, seen.attempts)
    now = time.time()

    def write(db: Database) -> Optional[TaskStatus]:
        # Decide again inside the write transaction, so two supervisors never both recover it.
        claim = storage.claim_of_in(db, seen.task_id)
        if claim != expected:
            return None
        if owner_is_alive(db, seen, now=now, lease_s=lease_s, local_host_id=local_host_id):
            return None
        max_retries = storage.max_retries_in(db, seen.task_id)
        return storage.fail_or_retry_in(db, claim, message, None, now, retry_policy, max_retries)

    status = db.write("recover_orphan", write)
    if status is None:
        return False
    task = storage.get_task(db, seen.task_id)
    logger.warning("orphan recovered: task %s (%s) owned by dead worker process PID %s; now %s",
                   task.id, task.task, seen.pid, status.value)
    if status == TaskStatus.QUEUED:
        signals.on_retry.send(task=task, error=message)
    else:
        signals.on_failure.send(task=task, error=message)
    return True
