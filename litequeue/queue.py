"""The public API: :class:`Queue` for applications, and :func:`create_task`."""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any, Callable, Iterable, List, Optional, Union

from . import storage, wakeup
from .connection import DEFAULT_BUSY_TIMEOUT_S, Database, is_busy_error
from .errors import DatabaseError, InvalidOptionError, PayloadTooLargeError, TaskWaitTimeout
from .status import Task, TaskStatus
from .validation import (
    DEFAULT_MAX_ARGS_BYTES, allowed_patterns, check_allowed, check_max_retries, check_priority,
    check_queue_name, check_seconds, encode_args, resolve_run_at, task_path_of,
)

_ENQUEUE_KEYWORDS = {"task", "args", "queue", "priority", "delay_s", "run_at", "timeout_s", "max_retries"}


class Queue:
    """A task queue stored in one SQLite file.

    Args:
        path: The database file. None uses LITEQUEUE_DB, else ``litequeue.db`` in the working
            directory. The file and its schema are created when missing.
        synchronous: "FULL" (default): an enqueue that returned survives power loss.
            "NORMAL": faster, survives a crash of the process but may lose the latest
            commits on power loss.
        busy_timeout_s: How long a write waits for another writer before retrying.
        max_args_bytes: The largest args accepted, in bytes of JSON.
        allowed_tasks: Shell-style patterns of task paths that may be enqueued. None reads
            LITEQUEUE_ALLOWED_TASKS; when that is unset too, every path is allowed.

    Raises:
        DatabaseError: The file cannot be created, opened or migrated.
        InvalidOptionError: An option is out of range.
    """

    def __init__(
        self,
        path: Union[str, os.PathLike, None] = None,
        *,
        synchronous: str = "FULL",
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        max_args_bytes: int = DEFAULT_MAX_ARGS_BYTES,
        allowed_tasks: Optional[Iterable[str]] = None,
    ):
        if isinstance(max_args_bytes, bool) or not isinstance(max_args_bytes, int) or max_args_bytes <= 0:
            raise InvalidOptionError(f"invalid max_args_bytes {max_args_bytes!r}: use a positive integer")
        self._options = {"synchronous": synchronous, "busy_timeout_s": busy_timeout_s}
        self._database = Database(path, **self._options)
        self.path = self._database.path
        self.max_args_bytes = max_args_bytes
        self.allowed_tasks = allowed_patterns(allowed_tasks)
        self._notifier = wakeup.Notifier(self.path)

    @property
    def database(self) -> Database:
        """This process's connection. After ``fork``, the child opens its own."""
        if self._database.pid != os.getpid():
            self._database.abandon()
            self._database = Database(self.path, **self._options)
            self._notifier = wakeup.Notifier(self.path)
        return self._database

    # --- enqueue -------------------------------------------------------------------------

    def _prepare(self, task: Union[str, Callable], args: Optional[dict], queue: str = "default",
                 priority: int = 0, delay_s: float = 0, run_at: Any = None,
                 timeout_s: Optional[float] = None, max_retries: int = 0, *, now: float) -> tuple:
        path = task_path_of(task)
        check_allowed(path, self.allowed_tasks)
        return (
            check_queue_name(queue), path, encode_args(args, self._max_args_bytes()),
            check_priority(priority), resolve_run_at(now, delay_s, run_at),
            check_max_retries(max_retries), check_seconds("timeout_s", timeout_s, allow_none=True),
        )

    def _max_args_bytes(self) -> int:
        # SQLite refuses strings longer than SQLITE_LIMIT_LENGTH; check it here for a clear error.
        conn = self.database.conn
        if hasattr(conn, "getlimit"):  # Python 3.11+
            return min(self.max_args_bytes, conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) - 1)
        return self.max_args_bytes

    def _insert(self, rows: List[tuple], now: float) -> List[int]:
        try:
            ids = self.database.write("enqueue", lambda db: storage.insert_tasks_in(db, rows, now))
        except (sqlite3.DataError, sqlite3.OperationalError) as exc:
            if "too big" in str(exc).lower():
                raise PayloadTooLargeError(
                    f"args are larger than SQLite accepts in {self.path}: {exc}; store large data "
                    "in a file and pass its path"
                ) from exc
            if is_busy_error(exc):
                raise
            raise DatabaseError(f"enqueue into {self.path} failed: {exc}") from exc
        self._notifier.notify()
        return ids

    def enqueue(
        self,
        task: Union[str, Callable],
        args: Optional[dict] = None,
        *,
        queue: str = "default",
        priority: int = 0,
        delay_s: float = 0,
        run_at: Any = None,
        timeout_s: Optional[float] = None,
        max_retries: int = 0,
    ) -> int:
        """Store one task and return its id.

        Args:
            task: A dotted path ("package.module.function") or a module-level function.
            args: Keyword arguments for the function, as a dict of JSON values.
            queue: The queue name; a worker serves the queues it is given.
            priority: Higher runs first among eligible tasks.
            delay_s: Seconds to wait before the task becomes eligible.
            run_at: When the task becomes eligible: an aware datetime or a Unix time.
            timeout_s: Seconds the task may run; None uses the worker's default, 0 disables.
            max_retries: Failed attempts that are retried with back-off before the task fails.

        Raises:
            InvalidTaskError, InvalidArgsError, PayloadTooLargeError, InvalidOptionError,
            TaskNotAllowedError: The call is rejected and nothing is stored.
            DatabaseError: The database cannot be written; nothing is stored.
        """
        now = time.time()
        row = self._prepare(task, args, queue, priority, delay_s, run_at, timeout_s, max_retries, now=now)
        return self._insert([row], now)[0]

    def enqueue_many(self, calls: Iterable[Union[tuple, dict]]) -> List[int]:
        """Store many tasks in one transaction (all or none) and return their ids in order.

        Each call is a ``(task, args)`` pair or a dict of :meth:`enqueue` keyword arguments
        that includes ``task``.
        """
        now = time.time()
        rows = []
        for index, call in enumerate(calls):
            if isinstance(call, dict):
                unknown = set(call) - _ENQUEUE_KEYWORDS
                if unknown or "task" not in call:
                    raise InvalidOptionError(
                        f"invalid call #{index} {call!r}: a dict needs 'task' and may use only "
                        f"{sorted(_ENQUEUE_KEYWORDS)}"
                    )
                rows.append(self._prepare(now=now, **call))
            elif isinstance(call, tuple) and len(call) == 2:
                rows.append(self._prepare(call[0], call[1], now=now))
            else:
                raise InvalidOptionError(
                    f"invalid call #{index} {call!r}: use a (task, args) pair or a dict of enqueue arguments"
                )
        if not rows:
            return []
        return self._insert(rows, now)

    # --- inspect and change ------------------------------------------------------------------

    def get(self, task_id: int) -> Task:
        """Return the task with ``task_id``. Raises TaskNotFoundError."""
        return storage.get_task(self.database, _check_id(task_id))

    def wait(self, task_id: int, timeout_s: float) -> Task:
        """Wait until the task is completed, failed or cancelled, and return it.

        Raises:
            TaskWaitTimeout (a TimeoutError): the task is still not final after ``timeout_s``.
            TaskNotFoundError: no task has this id.
        """
        timeout_s = check_seconds("timeout_s", timeout_s)
        deadline = time.monotonic() + timeout_s
        pause_s = 0.005
        while True:
            task = self.get(task_id)
            if task.is_final:
                return task
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TaskWaitTimeout(
                    f"task {task_id} is still {task.status.value} after waiting {timeout_s:g} s; "
                    "is a worker running for its queue?"
                )
            time.sleep(min(pause_s, remaining))
            pause_s = min(pause_s * 1.5, 0.2)

    def cancel(self, task_id: int) -> TaskStatus:
        """Cancel a queued or running task and return the status it had.

        A queued task never runs. A running task is marked cancelled at once and its
        supervisor terminates the worker process running it.

        Raises:
            TaskNotFoundError, TaskStateError (the task already finished).
        """
        return storage.cancel(self.database, _check_id(task_id))

    def requeue(self, task_id: int) -> None:
        """Put a failed or cancelled task back to queued, with its attempts reset.

        Raises:
            TaskNotFoundError, TaskStateError (the task is queued, running or completed).
        """
        storage.requeue(self.database, _check_id(task_id))
        self._notifier.notify()

    def list(self, status: Union[str, TaskStatus, None] = None, queue: Optional[str] = None,
             limit: int = 100, *, task: Optional[str] = None) -> List[Task]:
        """Return up to ``limit`` tasks, newest first, filtered by status, queue and task path."""
        if status is not None:
            try:
                status = TaskStatus(status)
            except ValueError:
                raise InvalidOptionError(
                    f"invalid status {status!r}: use one of {', '.join(s.value for s in TaskStatus)}"
                ) from None
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidOptionError(f"invalid limit {limit!r}: use an integer >= 0")
        return storage.list_tasks(self.database, status=status, queue=queue, task=task, limit=limit)

    def counts(self) -> dict:
        """Return the number of tasks in each status; all five statuses are keys."""
        return storage.count_by_status(self.database)

    def close(self) -> None:
        """Close this process's connection."""
        self._database.close()

    def __enter__(self) -> "Queue":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Queue({self.path!r})"


def _check_id(task_id: Any) -> int:
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise InvalidOptionError(f"invalid task id {task_id!r}: use an integer")
    return task_id


_default_queues: dict = {}


def create_task(task: Union[str, Callable], args: dict, *, db: Union[str, os.PathLike, None] = None) -> int:
    """Enqueue a task with django-simple-queue's signature and return its id.

    ``args`` must be a dict (a TypeError otherwise). ``db`` selects the database; None uses
    LITEQUEUE_DB, else ``litequeue.db`` in the working directory.
    """
    if not isinstance(args, dict):
        raise TypeError(f"args must be a dict of keyword arguments, not {type(args).__name__}: {args!r}")
    key = (os.getpid(), os.path.abspath(os.fspath(db)) if db is not None else None)
    queue = _default_queues.get(key)
    if queue is None:
        queue = _default_queues[key] = Queue(db)
    return queue.enqueue(task, args)
