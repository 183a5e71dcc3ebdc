"""Task state transitions: one function per verb, each one write transaction or part of one.

Functions whose name ends in ``_in`` run inside a transaction that the caller opened with
:meth:`Database.write`, so several of them can share one commit.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from typing import Iterable, List, Optional, Sequence

from . import sql
from .connection import Database
from .errors import TaskNotFoundError, TaskStateError
from .status import Task, TaskStatus


@dataclasses.dataclass(frozen=True)
class Owner:
    """The process that claims tasks: its PID, host name, host identity and start token."""

    pid: int
    host: str
    host_id: str
    start_token: str


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claimed attempt of a task. Every later write about it is fenced on these fields."""

    task_id: int
    pid: int
    host_id: str
    attempts: int

    def fence(self) -> tuple:
        return (self.task_id, self.pid, self.host_id, self.attempts)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off between attempts: base_s * 2**(attempt - 1), capped at max_s,
    times a random factor from 1.0 to 1.25 so that failed tasks do not retry in lockstep."""

    base_s: float = 1.0
    max_s: float = 3600.0

    def delay_s(self, attempts: int) -> float:
        delay = min(self.max_s, self.base_s * (2 ** max(0, attempts - 1)))
        return delay * random.uniform(1.0, 1.25)


# --- reading -------------------------------------------------------------------------------

def task_from_row(row: Sequence, output: str = "") -> Task:
    (task_id, queue, task, args, status, priority, run_at, created, modified, started,
     finished, attempts, max_retries, timeout_s, worker_pid, worker_host, result, log,
     error) = row
    return Task(
        id=task_id, queue=queue, task=task, args=json.loads(args), status=TaskStatus(status),
        priority=priority, run_at=run_at, created=created, modified=modified, started=started,
        finished=finished, attempts=attempts, max_retries=max_retries, timeout_s=timeout_s,
        worker_pid=worker_pid, worker_host=worker_host, result=_decode_result(result),
        output=output, log=log or "", error=error,
    )


def _decode_result(text: Optional[str]):
    if text is None:
        return None
    return json.loads(text)


def read_output(db: Database, task_id: int) -> str:
    rows = db.execute("get_output", sql.GET_OUTPUT, (task_id,)).fetchall()
    return "".join(row[0] for row in rows)


def get_task(db: Database, task_id: int) -> Task:
    """Return the task with ``task_id`` or raise TaskNotFoundError."""
    def read(db: Database) -> Task:
        row = db.execute("get_task", sql.GET_TASK, (task_id,)).fetchone()
        if row is None:
            raise TaskNotFoundError(f"task {task_id} not found in {db.path}")
        return task_from_row(row, read_output(db, task_id))

    return db.read(read)


def list_tasks(db: Database, *, status=None, queue=None, task=None, limit: int = 100) -> List[Task]:
    def read(db: Database) -> List[Task]:
        rows = db.execute("list_tasks", sql.LIST_TASKS, {
            "status": None if status is None else TaskStatus(status).value,
            "queue": queue, "task": task, "limit": limit,
        }).fetchall()
        return [task_from_row(row, read_output(db, row[0])) for row in rows]

    return db.read(read)


def count_by_status(db: Database) -> dict:
    counts = {status.value: 0 for status in TaskStatus}
    for status, count in db.execute("count_by_status", sql.COUNT_BY_STATUS).fetchall():
        counts[status] = count
    return counts


# --- enqueue -------------------------------------------------------------------------------

def insert_tasks_in(db: Database, rows: Iterable[tuple], now: float) -> List[int]:
    """Insert tasks given as (queue, task, args_json, priority, run_at, max_retries, timeout_s)."""
    ids = []
    for queue, task, args_json, priority, run_at, max_retries, timeout_s in rows:
        cursor = db.execute("insert_task", sql.INSERT_TASK, (
            queue, task, args_json, priority, run_at, now, now, max_retries, timeout_s,
        ))
        ids.append(cursor.lastrowid)
    return ids


# --- claim and outcome ---------------------------------------------------------------------

def claim_in(db: Database, owner: Owner, queues: Sequence[str], now: float) -> Optional[Task]:
    """Claim the next eligible task of the first queue (in ``queues`` order) that has one."""
    for queue in queues:
        row = db.execute("claim_task", sql.CLAIM_TASK, (
            owner.pid, owner.host, owner.host_id, owner.start_token, now, now, queue, now,
        )).fetchone()
        if row is not None:
            return task_from_row(row)
    return None


def has_eligible_task(db: Database, queues: Sequence[str], now: float) -> bool:
    """Return whether a claim could succeed now, without taking the write lock."""
    return any(
        db.execute("has_eligible_task", sql.HAS_ELIGIBLE_TASK, (queue, now)).fetchone()
        for queue in queues
    )


def next_run_at(db: Database, queues: Sequence[str]) -> Optional[float]:
    """Return the earliest run_at of a queued task in ``queues``, or None when there is none."""
    times = [db.execute("next_run_at", sql.NEXT_RUN_AT, (queue,)).fetchone()[0] for queue in queues]
    times = [value for value in times if value is not None]
    return min(times) if times else None


def complete_in(db: Database, claim: Claim, result_json: str, log: str, now: float) -> bool:
    cursor = db.execute("complete_task", sql.COMPLETE_TASK, (result_json, log, now, now, *claim.fence()))
    return cursor.rowcount == 1


def fail_or_retry_in(
    db: Database, claim: Claim, error: str, log: Optional[str], now: float,
    retry_policy: RetryPolicy, max_retries: int,
) -> Optional[TaskStatus]:
    """Record a failed attempt: back to queued with a delay while retries are left, else failed.

    Returns the new status, or None when the fence matched no row (a newer state won).
    """
    if claim.attempts <= max_retries:
        run_at = now + retry_policy.delay_s(claim.attempts)
        cursor = db.execute("retry_task", sql.RETRY_TASK_OWNED, (error, log, run_at, now, *claim.fence()))
        return TaskStatus.QUEUED if cursor.rowcount == 1 else None
    cursor = db.execute("fail_task", sql.FAIL_TASK_OWNED, (error, log, now, now, *claim.fence()))
    return TaskStatus.FAILED if cursor.rowcount == 1 else None


def release_in(db: Database, claim: Claim, now: float) -> bool:
    """Put a claimed task back to queued without spending its attempt."""
    return db.execute("release_task", sql.RELEASE_TASK_OWNED, (now, *claim.fence())).rowcount == 1


def append_output_in(db: Database, claim: Claim, chunk: str) -> bool:
    """Append ``chunk`` to the task's output if the claim still holds."""
    if not still_owned_in(db, claim):
        return False
    db.execute("append_output", sql.APPEND_OUTPUT, (claim.task_id, chunk, claim.task_id))
    return True


def output_size(db: Database, task_id: int) -> int:
    return db.execute("output_size", sql.OUTPUT_SIZE, (task_id,)).fetchone()[0]


def still_owned_in(db: Database, claim: Claim) -> bool:
    row = db.execute("get_task_state", sql.GET_TASK_STATE, (claim.task_id,)).fetchone()
    if row is None:
        return False
    status, pid, _host, host_id, _start, attempts = row[:6]
    return (status, pid, host_id, attempts) == ("progress", claim.pid, claim.host_id, claim.attempts)


# --- failures recorded from outside the worker process ---------------------------------------

@dataclasses.dataclass(frozen=True)
class ProgressTask:
    """A task in progress as an orphan check sees it."""

    task_id: int
    pid: int
    host_id: str
    start_token: str
    attempts: int
    modified: float


def list_progress(db: Database) -> List[ProgressTask]:
    rows = db.execute("list_progress_tasks", sql.LIST_PROGRESS_TASKS).fetchall()
    return [ProgressTask(*row) for row in rows]


def progress_of_owner_in(db: Database, host_id: str, pid: int) -> List[Claim]:
    rows = db.execute("list_progress_of_owner", sql.LIST_PROGRESS_OF_OWNER, (host_id, pid)).fetchall()
    return [Claim(task_id, pid, host_id, attempts) for task_id, attempts in rows]


def claim_of_in(db: Database, task_id: int) -> Optional[Claim]:
    """Return the current claim of a task in progress, or None when it is not in progress."""
    row = db.execute("get_task_state", sql.GET_TASK_STATE, (task_id,)).fetchone()
    if row is None:
        raise TaskNotFoundError(f"task {task_id} not found in {db.path}")
    status, pid, _host, host_id, _start, attempts = row[:6]
    if status != "progress":
        return None
    return Claim(task_id, pid, host_id, attempts)


def max_retries_in(db: Database, task_id: int) -> int:
    row = db.execute("get_task_state", sql.GET_TASK_STATE, (task_id,)).fetchone()
    return row[6] if row else 0


def delete_stale_workers_in(db: Database, older_than: float) -> int:
    """Delete worker rows whose heartbeat is older than ``older_than`` and that own no task
    in progress, so that removing bookkeeping never hides an orphan."""
    return db.execute("delete_stale_workers", sql.DELETE_STALE_WORKERS, (older_than,)).rowcount


# --- cancel and requeue --------------------------------------------------------------------

def cancel(db: Database, task_id: int, now: Optional[float] = None) -> TaskStatus:
    """Cancel a queued or running task and return the status it had.

    A running task is marked cancelled here; its supervisor sees that and terminates it.
    Raises TaskNotFoundError or TaskStateError (for a task that already finished).
    """
    now = time.time() if now is None else now

    def write(db: Database) -> TaskStatus:
        row = db.execute("get_task_state", sql.GET_TASK_STATE, (task_id,)).fetchone()
        if row is None:
            raise TaskNotFoundError(f"task {task_id} not found in {db.path}")
        status = TaskStatus(row[0])
        if status == TaskStatus.QUEUED:
            db.execute("cancel_queued", sql.CANCEL_QUEUED, (now, now, task_id))
        elif status == TaskStatus.PROGRESS:
            db.execute("cancel_running", sql.CANCEL_RUNNING, (now, now, task_id))
        else:
            raise TaskStateError(
                f"task {task_id} is already {status.value} and cannot be cancelled; "
                "only queued or running tasks can"
            )
        return status

    return db.write("cancel", write)


def requeue(db: Database, task_id: int, now: Optional[float] = None) -> None:
    """Put a failed or cancelled task back to queued, to run as soon as a worker is free."""
    now = time.time() if now is None else now

    def write(db: Database) -> None:
        row = db.execute("get_task_state", sql.GET_TASK_STATE, (task_id,)).fetchone()
        if row is None:
            raise TaskNotFoundError(f"task {task_id} not found in {db.path}")
        if row[0] not in ("failed", "cancelled"):
            raise TaskStateError(
                f"task {task_id} is {row[0]} and cannot be requeued; only failed or cancelled "
                "tasks can (cancel a queued or running task first)"
            )
        db.execute("delete_output", sql.DELETE_OUTPUT, (task_id,))
        db.execute("requeue_task", sql.REQUEUE_TASK, (now, now, task_id))

    db.write("requeue", write)
