"""Task state transitions: one function per verb, each one write transaction or part of one.

Functions whose name ends in ``_in`` run inside a transaction that the caller opened with
:meth:`Database.write`, so several of them can share one commit.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sqlite3
import time
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

from . import sql
from .connection import Database
from .errors import DatabaseError, TaskNotFoundError, TaskStateError
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
     error, unique_key, waiting_on) = row
    return Task(
        id=task_id, queue=queue, task=task, args=json.loads(args), status=TaskStatus(status),
        priority=priority, run_at=run_at, created=created, modified=modified, started=started,
        finished=finished, attempts=attempts, max_retries=max_retries, timeout_s=timeout_s,
        worker_pid=worker_pid, worker_host=worker_host, result=_decode_result(result),
        output=output, log=log or "", error=error, unique_key=unique_key, waiting_on=waiting_on,
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

class NewTask(NamedTuple):
    """A validated task, ready to insert."""

    queue: str
    task: str
    args_json: str
    priority: int
    run_at: float
    max_retries: int
    timeout_s: Optional[float]
    unique_key: Optional[str] = None
    after: Tuple[int, ...] = ()


def insert_tasks_in(db, tasks: Iterable[NewTask], now: float) -> List[int]:
    """Insert tasks and return their ids. ``db`` is a Database, or any object with the same
    ``execute(name, statement, parameters)`` (for a caller's own connection).

    A task whose unique key belongs to a queued or running task is not inserted; that task's
    id is returned instead. A task that depends on a failed or cancelled task is stored as
    cancelled. Raises TaskNotFoundError (and the caller rolls back) for an unknown dependency.
    """
    ids = []
    for new in tasks:
        status, waiting_on, error = _dependency_state_in(db, new.after)
        cursor = db.execute("insert_task", sql.INSERT_TASK, insert_parameters(new, now, status, waiting_on, error))
        if cursor.rowcount == 0:
            ids.append(db.execute("get_active_by_unique_key", sql.GET_ACTIVE_BY_UNIQUE_KEY,
                                  (new.unique_key,)).fetchone()[0])
            continue
        task_id = cursor.lastrowid
        for depends_on in new.after:
            db.execute("insert_dependency", sql.INSERT_DEPENDENCY, (depends_on, task_id))
        ids.append(task_id)
    return ids


def insert_plain_tasks_in(db: Database, tasks: Sequence[NewTask], now: float) -> List[int]:
    """Insert tasks without unique keys or dependencies with one executemany, and return
    their ids. Inside one write transaction, AUTOINCREMENT hands out consecutive ids."""
    before = db.execute("get_task_sequence", sql.GET_TASK_SEQUENCE).fetchone()
    first = (before[0] if before else 0) + 1
    db.conn.executemany(sql.INSERT_TASK, [insert_parameters(new, now) for new in tasks])
    last = db.execute("get_task_sequence", sql.GET_TASK_SEQUENCE).fetchone()[0]
    if last - first + 1 != len(tasks):
        raise DatabaseError(f"inserted ids {first}..{last} do not match {len(tasks)} tasks in {db.path}")
    return list(range(first, last + 1))


def insert_parameters(new: NewTask, now: float, status: str = "queued", waiting_on: int = 0,
                      error: Optional[str] = None) -> tuple:
    """Return the parameters of sql.INSERT_TASK for ``new``."""
    return (
        new.queue, new.task, new.args_json, status, new.priority, new.run_at, now, now,
        new.max_retries, new.timeout_s, new.unique_key, waiting_on, error,
        now if status == "cancelled" else None,
    )


def is_plain(new: NewTask) -> bool:
    """Return whether ``new`` can be inserted by one autocommit statement (no unique key,
    no dependencies), which needs no transaction around it."""
    return new.unique_key is None and not new.after


def _dependency_state_in(db, after: Sequence[int]) -> Tuple[str, int, Optional[str]]:
    """Return the (status, waiting_on, error) a new task starts with, given its dependencies."""
    waiting_on = 0
    for depends_on in after:
        row = db.execute("get_status", sql.GET_STATUS, (depends_on,)).fetchone()
        if row is None:
            raise TaskNotFoundError(
                f"task {depends_on} not found: a task cannot depend on it (after=[...] must name existing tasks)")
        if row[0] in ("failed", "cancelled"):
            return "cancelled", 0, f"Cancelled: task {depends_on}, which this task depends on, ended {row[0]}"
        if row[0] != "completed":
            waiting_on += 1
    return "queued", waiting_on, None


def settle_dependents_in(db: Database, task_id: int, status: str, now: float) -> List[int]:
    """Release (completed) or cancel (failed, cancelled) the tasks waiting for ``task_id``.

    Cancelling cascades to the tasks that waited for those, and returns every id cancelled.
    """
    if status == "completed":
        db.execute("release_dependents", sql.RELEASE_DEPENDENTS, (now, task_id))
        return []
    cancelled = []
    pending = [(task_id, status)]
    while pending:
        ended_id, ended_status = pending.pop()
        rows = db.execute("cancel_dependents", sql.CANCEL_DEPENDENTS,
                          (now, now, ended_id, ended_status, ended_id)).fetchall()
        for (dependent_id,) in rows:
            cancelled.append(dependent_id)
            pending.append((dependent_id, "cancelled"))
    return cancelled


def dependencies_of(db: Database, task_id: int) -> List[int]:
    return [row[0] for row in db.execute("list_dependencies", sql.LIST_DEPENDENCIES, (task_id,)).fetchall()]


# --- paused queues ---------------------------------------------------------------------------

def pause_queue(db: Database, queue: str, now: float) -> None:
    db.write("pause_queue", lambda d: d.execute("pause_queue", sql.PAUSE_QUEUE, (queue, now)))


def resume_queue(db: Database, queue: str) -> None:
    db.write("resume_queue", lambda d: d.execute("resume_queue", sql.RESUME_QUEUE, (queue,)))


def paused_queues(db: Database) -> List[str]:
    return [row[0] for row in db.execute("list_paused_queues", sql.LIST_PAUSED_QUEUES).fetchall()]


# --- claim and outcome ---------------------------------------------------------------------

def claim_in(db: Database, owner: Owner, queues: Sequence[str], now: float) -> Optional[Task]:
    """Claim the next eligible task of the first queue (in ``queues`` order) that has one."""
    for queue in queues:
        row = db.execute("claim_task", sql.CLAIM_TASK, {
            "pid": owner.pid, "host": owner.host, "host_id": owner.host_id,
            "start_token": owner.start_token, "now": now, "queue": queue,
        }).fetchone()
        if row is not None:
            return task_from_row(row)
    return None


def has_eligible_task(db: Database, queues: Sequence[str], now: float) -> bool:
    """Return whether a claim could succeed now, without taking the write lock."""
    return any(
        db.execute("has_eligible_task", sql.HAS_ELIGIBLE_TASK, {"queue": queue, "now": now}).fetchone()
        for queue in queues
    )


def next_run_at(db: Database, queues: Sequence[str]) -> Optional[float]:
    """Return the earliest run_at of a queued task in ``queues``, or None when there is none."""
    times = [db.execute("next_run_at", sql.NEXT_RUN_AT, {"queue": queue}).fetchone()[0] for queue in queues]
    times = [value for value in times if value is not None]
    return min(times) if times else None


def complete_in(db: Database, claim: Claim, result_json: str, log: str, now: float) -> bool:
    cursor = db.execute("complete_task", sql.COMPLETE_TASK, (result_json, log, now, now, *claim.fence()))
    if cursor.rowcount != 1:
        return False
    settle_dependents_in(db, claim.task_id, "completed", now)
    return True


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
    if cursor.rowcount != 1:
        return None
    settle_dependents_in(db, claim.task_id, "failed", now)
    return TaskStatus.FAILED


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
    """A task in progress, as read by an orphan check."""

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

    A running task is marked cancelled here. Its supervisor reads that and terminates it.
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
            settle_dependents_in(db, task_id, "cancelled", now)
        elif status == TaskStatus.PROGRESS:
            db.execute("cancel_running", sql.CANCEL_RUNNING, (now, now, task_id))
            settle_dependents_in(db, task_id, "cancelled", now)
        else:
            raise TaskStateError(
                f"task {task_id} is already {status.value} and cannot be cancelled; "
                "only queued or running tasks can"
            )
        return status

    return db.write("cancel", write)


# --- requeue that keeps the previous attempt -----------------------------------------------

PREVIOUS_ATTEMPT_START = "--- previous attempt, requeued at "
PREVIOUS_ATTEMPT_END = "--- end of previous attempt ---"

def requeue_keeping_history(db: Database, task_id: int, now: Optional[float] = None) -> None:
    """Put a failed or cancelled task back to queued, keeping its previous attempt in ``log``.

    The old error, output and log move into a "previous attempt" section of ``log`` before
    ``error``, ``result`` and ``output`` are cleared, all in one transaction.

    Raises TaskNotFoundError, or TaskStateError when the task is not failed or cancelled.
    """
    now = time.time() if now is None else now
    db.write("requeue", lambda db: requeue_keeping_history_in(db, task_id, now))


def requeue_failed_keeping_history(db: Database, task_ids: Sequence[int], now: Optional[float] = None,
                                   batch_size: int = 100) -> List[int]:
    """Requeue those of ``task_ids`` that are still failed, ``batch_size`` per transaction.

    A task that changed status or vanished since its id was read is skipped. Returns the ids
    that were requeued.
    """
    now = time.time() if now is None else now

    def write(db: Database, batch: Sequence[int]) -> List[int]:
        requeued = []
        for task_id in batch:
            try:
                requeue_keeping_history_in(db, task_id, now, statuses=("failed",))
            except (TaskNotFoundError, TaskStateError):
                continue  # raised before any write for this task
            requeued.append(task_id)
        return requeued

    requeued: List[int] = []
    for start in range(0, len(task_ids), batch_size):
        batch = task_ids[start:start + batch_size]
        requeued.extend(db.write("requeue_failed", lambda db: write(db, batch)))
    return requeued


def requeue_keeping_history_in(db: Database, task_id: int, now: float,
                               statuses: Sequence[str] = ("failed", "cancelled")) -> None:
    row = db.execute("get_task_history", sql.GET_TASK_HISTORY, (task_id,)).fetchone()
    if row is None:
        raise TaskNotFoundError(f"task {task_id} not found in {db.path}")
    status, attempts, started, finished, error, log = row
    if status not in statuses:
        raise TaskStateError(
            f"task {task_id} is {status} and cannot be requeued; only {' or '.join(statuses)} "
            "tasks can (cancel a queued or running task first)"
        )

    # The worker process that runs the task next keeps this section at the start of the log
    # it writes (see execution.run_task), so later attempts do not erase it.
    history = format_previous_attempt(
        status=status, attempts=attempts, started=started, finished=finished, error=error,
        output=read_output(db, task_id), log=log or "", requeued=now,
    )
    db.execute("set_requeued_log", sql.SET_REQUEUED_LOG, (history, task_id))
    db.execute("delete_output", sql.DELETE_OUTPUT, (task_id,))
    try:
        db.execute("requeue_task", sql.REQUEUE_TASK, (now, now, task_id))
    except sqlite3.IntegrityError as exc:
        raise TaskStateError(
            f"task {task_id} cannot be requeued: another task with its unique key is queued or "
            "running; wait for that one to finish"
        ) from exc


def format_previous_attempt(*, status: str, attempts: int, started: Optional[float],
                            finished: Optional[float], error: Optional[str], output: str,
                            log: str, requeued: float) -> str:
    """Format a finished attempt as the text block that a requeue stores in ``log``.

    Times are printed in UTC, because the log may be read on another host.
    """
    lines = [
        f"{PREVIOUS_ATTEMPT_START}{_utc(requeued)} ---",
        f"status: {status} after {attempts} attempt(s); started {_utc(started)}, "
        f"finished {_utc(finished)}",
    ]
    for name, text in (("error", error), ("output", output), ("log", log)):
        if text:
            lines.append(f"{name}:")
            lines.extend("  " + line for line in text.rstrip("\n").splitlines())
        else:
            lines.append(f"{name}: (none)")
    lines.append(PREVIOUS_ATTEMPT_END)
    return "\n".join(lines) + "\n"


def previous_attempt_section(log: Optional[str]) -> str:
    """Return the "previous attempt" section that a requeue put at the start of ``log``, or "".

    Every line inside a section is indented, so the first unindented end line closes it, even
    when the section contains sections of earlier requeues.
    """
    if not log or not log.startswith(PREVIOUS_ATTEMPT_START):
        return ""
    end = log.find("\n" + PREVIOUS_ATTEMPT_END + "\n")
    if end < 0:
        return ""
    return log[:end + len(PREVIOUS_ATTEMPT_END) + 2]


def _utc(value: Optional[float]) -> str:
    if value is None:
        return "-"
    milliseconds = int(value % 1 * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(value)) + f".{milliseconds:03d}Z"
