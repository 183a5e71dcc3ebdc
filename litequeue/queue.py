"""The public API: :class:`Queue` for applications, and :func:`create_task`."""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any, Callable, Iterable, List, Optional, Union

from . import inspection, sql, storage, wakeup
from .connection import DEFAULT_BUSY_TIMEOUT_S, Database, describe_error, is_busy_error
from .errors import DatabaseError, LitequeueError, InvalidOptionError, PayloadTooLargeError, TaskWaitTimeout
from .status import Task, TaskStatus
from .validation import (
    DEFAULT_MAX_ARGS_BYTES, allowed_patterns, check_allowed, check_max_retries, check_priority,
    check_queue_name, check_seconds, check_task_ids, check_unique_key, encode_args, resolve_run_at,
    task_path_of,
)

_ENQUEUE_KEYWORDS = {"task", "args", "queue", "priority", "delay_s", "run_at", "timeout_s", "max_retries",
                     "unique_key", "after"}


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

    def _prepare(self, task: Union[str, Callable], args: Optional[dict] = None, queue: str = "default",
                 priority: int = 0, delay_s: float = 0, run_at: Any = None,
                 timeout_s: Optional[float] = None, max_retries: int = 0,
                 unique_key: Optional[str] = None, after: Iterable[int] = (), *,
                 now: float, max_args_bytes: Optional[int] = None) -> storage.NewTask:
        path = task_path_of(task)
        check_allowed(path, self.allowed_tasks)
        if max_args_bytes is None:
            max_args_bytes = self._max_args_bytes()
        return storage.NewTask(
            queue=check_queue_name(queue), task=path, args_json=encode_args(args, max_args_bytes),
            priority=check_priority(priority), run_at=resolve_run_at(now, delay_s, run_at),
            max_retries=check_max_retries(max_retries),
            timeout_s=check_seconds("timeout_s", timeout_s, allow_none=True),
            unique_key=check_unique_key(unique_key), after=check_task_ids("after", after),
        )

    def _max_args_bytes(self) -> int:
        # SQLite refuses strings longer than SQLITE_LIMIT_LENGTH; check it here for a clear error.
        return min(self.max_args_bytes, self.database.max_length - 1)

    def _insert(self, tasks: List[storage.NewTask], now: float,
                connection: Optional[sqlite3.Connection] = None) -> List[int]:
        try:
            if connection is not None:
                ids = storage.insert_tasks_in(_ForeignConnection(connection, self.path), tasks, now)
            elif len(tasks) == 1 and storage.is_plain(tasks[0]):
                ids = [self.database.write_statement("enqueue", sql.INSERT_TASK,
                                                     storage.insert_parameters(tasks[0], now)).lastrowid]
            elif all(storage.is_plain(new) for new in tasks):
                ids = self.database.write("enqueue", lambda db: storage.insert_plain_tasks_in(db, tasks, now))
            else:
                ids = self.database.write("enqueue", lambda db: storage.insert_tasks_in(db, tasks, now))
        except (sqlite3.DataError, sqlite3.OperationalError) as exc:
            if "too big" in str(exc).lower():
                raise PayloadTooLargeError(
                    f"args are larger than SQLite accepts in {self.path}: {exc}; store large data "
                    "in a file and pass its path"
                ) from exc
            if is_busy_error(exc):
                raise
            raise DatabaseError(f"enqueue failed: {describe_error(self.path, exc)}") from exc
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
        unique_key: Optional[str] = None,
        after: Iterable[int] = (),
        connection: Optional[sqlite3.Connection] = None,
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
            unique_key: While a queued or running task has this key, return its id instead of
                adding another task. The database enforces it, across processes too.
            after: Ids of tasks that must complete before this one may run. If one of them
                fails or is cancelled, this task is cancelled with a message naming it.
            connection: Your own sqlite3 connection to this same database file. The task is
                inserted inside your current transaction and exists only if you commit it.

        Raises:
            InvalidTaskError, InvalidArgsError, PayloadTooLargeError, InvalidOptionError,
            TaskNotAllowedError, TaskNotFoundError (an id in ``after``): The call is rejected
            and nothing is stored.
            DatabaseError: The database cannot be written; nothing is stored.
        """
        now = time.time()
        new = self._prepare(task, args, queue, priority, delay_s, run_at, timeout_s, max_retries,
                            unique_key, after, now=now)
        return self._insert([new], now, connection)[0]

    def notify(self) -> None:
        """Wake idle workers now, for example after committing your own transaction that
        enqueued tasks through ``connection=``. Without it they find the tasks at their next poll."""
        self._notifier.notify()

    def enqueue_many(self, calls: Iterable[Union[tuple, dict]]) -> List[int]:
        """Store many tasks in one transaction (all or none) and return their ids in order.

        Each call is a ``(task, args)`` pair or a dict of :meth:`enqueue` keyword arguments
        that includes ``task``.
        """
        now = time.time()
        max_args_bytes = self._max_args_bytes()
        rows = []
        for index, call in enumerate(calls):
            try:
                rows.append(self._prepare_call(index, call, now, max_args_bytes))
            except LitequeueError as exc:
                raise type(exc)(f"call #{index} of enqueue_many: {exc}") from exc
        if not rows:
            return []
        return self._insert(rows, now)

    def _prepare_call(self, index: int, call: Any, now: float, max_args_bytes: int) -> storage.NewTask:
        if isinstance(call, dict):
            unknown = set(call) - _ENQUEUE_KEYWORDS
            if unknown or "task" not in call:
                raise InvalidOptionError(
                    f"invalid call {call!r}: a dict needs 'task' and may use only {sorted(_ENQUEUE_KEYWORDS)}"
                )
            return self._prepare(now=now, max_args_bytes=max_args_bytes, **call)
        if isinstance(call, tuple) and len(call) == 2:
            return self._prepare(call[0], call[1], now=now, max_args_bytes=max_args_bytes)
        raise InvalidOptionError(f"invalid call {call!r}: use a (task, args) pair or a dict of enqueue arguments")

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
                    f"is a worker running for queue {task.queue!r} on {self.path}?"
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

        Its error, output and log move into a "previous attempt" section at the start of
        ``log``, which later attempts keep in front of their own captured output.

        Raises:
            TaskNotFoundError, TaskStateError (the task is queued, running or completed).
        """
        storage.requeue_keeping_history(self.database, _check_id(task_id))
        self._notifier.notify()

    def requeue_failed(self, *, queue: Optional[str] = None, task: Optional[str] = None) -> List[int]:
        """Requeue every failed task, optionally only of one queue or task path, as
        :meth:`requeue` does, and return their ids, oldest first."""
        ids = inspection.failed_task_ids(self.database, queue=queue, task=task)
        requeued = storage.requeue_failed_keeping_history(self.database, ids)
        if requeued:
            self._notifier.notify()
        return requeued

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

    def pause(self, queue: str) -> None:
        """Pause a queue: its queued tasks stay queued and no worker claims them until resumed.
        Tasks already running finish normally."""
        storage.pause_queue(self.database, check_queue_name(queue), time.time())

    def resume(self, queue: str) -> None:
        """Resume a paused queue; resuming one that is not paused does nothing."""
        storage.resume_queue(self.database, check_queue_name(queue))
        self._notifier.notify()

    def paused_queues(self) -> List[str]:
        """Return the names of the paused queues."""
        return storage.paused_queues(self.database)

    def dependencies(self, task_id: int) -> List[int]:
        """Return the ids of the tasks that ``task_id`` was enqueued to wait for."""
        return storage.dependencies_of(self.database, _check_id(task_id))

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


class _ForeignConnection:
    """Runs litequeue's named statements on a caller's own connection, inside its transaction."""

    def __init__(self, connection: sqlite3.Connection, expected_path: str):
        if not isinstance(connection, sqlite3.Connection):
            raise InvalidOptionError(f"invalid connection {connection!r}: pass a sqlite3.Connection")
        attached = connection.execute("PRAGMA database_list").fetchall()
        main_file = next((row[2] for row in attached if row[1] == "main"), "")
        if not main_file or not os.path.exists(main_file) or not os.path.samefile(main_file, expected_path):
            raise InvalidOptionError(
                f"connection is open on {main_file or 'an in-memory database'!r}, not on the queue's "
                f"database {expected_path}; open it on the same file"
            )
        self.connection = connection
        self.path = expected_path

    def execute(self, name: str, statement: str, parameters=()) -> sqlite3.Cursor:
        return self.connection.execute(statement, parameters)


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
