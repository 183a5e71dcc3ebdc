"""The JSON documents of the dashboard's endpoints, built from query parameters.

``/api/stats``, ``/api/tasks``, ``/api/tasks/ID`` and ``/api/workers`` return exactly what
``litequeue stats``, ``list``, ``show`` and ``workers`` print with ``--json``, because both
call the same functions of :mod:`litequeue.inspection` and :meth:`Task.to_dict`. Parameters
are checked with the command line's argument types, so their error messages match too.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Callable, Dict, List, Optional

from .. import inspection
from ..cli_common import count_type, status_type, task_id_type
from ..errors import TaskNotFoundError, TaskStateError
from ..queue import Queue

#: How many running tasks and latest failures ``/api/overview`` lists.
RUNNING_SHOWN = 20
FAILURES_SHOWN = 10
#: The default and largest time span of ``/api/throughput``, in minutes.
DEFAULT_THROUGHPUT_MINUTES = 15
MAX_THROUGHPUT_MINUTES = 24 * 60

#: Query parameters as urllib.parse.parse_qs returns them: each name with the list of its values.
Query = Dict[str, List[str]]


class ApiError(Exception):
    """Raised when a request cannot be served. ``status`` is the HTTP status of the response,
    and ``headers`` contains extra response headers (such as Allow)."""

    def __init__(self, status: int, message: str, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class Api:
    """Builds the documents of every endpoint from one shared :class:`Queue`.

    Every read runs in one short read transaction of the queue's connection, whose lock lets
    one thread use it at a time, so request threads can share it.

    Args:
        queue: The open queue to read and, with ``actions_allowed``, to change.
        lease_s: Heartbeat age after which a supervisor or worker process counts as dead.
        actions_allowed: Whether cancel and requeue are served.
        clock: Returns the current Unix time; tests pass their own.
    """

    def __init__(self, queue: Queue, *, lease_s: float, actions_allowed: bool,
                 clock: Callable[[], float] = time.time):
        self.queue = queue
        self.lease_s = lease_s
        self.actions_allowed = actions_allowed
        self.clock = clock
        # Queue.requeue wakes idle workers through a FIFO descriptor that the queue opens on
        # first use and keeps. Two threads that open it at once would leak one descriptor.
        self._action_lock = threading.Lock()

    # --- the documents of the command line ---------------------------------------------------

    def stats(self, query: Query) -> dict:
        """Return the document of ``litequeue stats --json``."""
        _check_names(query, ())
        return inspection.stats_document(self.queue.database, now=self.clock(), lease_s=self.lease_s)

    def tasks(self, query: Query) -> List[dict]:
        """Return the document of ``litequeue list --json`` with the same filters."""
        _check_names(query, ("status", "queue", "task", "limit"))
        status = _parse(query, "status", status_type)
        limit = _parse(query, "limit", count_type)
        return inspection.list_task_summaries(
            self.queue.database, status=status, queue=_value(query, "queue"), task=_value(query, "task"),
            limit=100 if limit is None else (limit or None),
        )

    def task(self, task_id_text: str, query: Query) -> dict:
        """Return the document of ``litequeue show ID --json``."""
        _check_names(query, ())
        task_id = _parse_task_id(task_id_text)
        try:
            return self.queue.get(task_id).to_dict()
        except TaskNotFoundError as exc:
            raise ApiError(404, str(exc)) from None

    def workers(self, query: Query) -> List[dict]:
        """Return the document of ``litequeue workers --json``."""
        _check_names(query, ())
        return inspection.live_workers(self.queue.database, now=self.clock(), lease_s=self.lease_s)

    # --- the dashboard's own documents ---------------------------------------------------------

    def throughput(self, query: Query) -> dict:
        """Return the tasks completed and failed per minute (:func:`inspection.throughput`)."""
        _check_names(query, ("minutes",))
        minutes = _parse(query, "minutes", _minutes_type)
        return inspection.throughput(self.queue.database, now=self.clock(),
                                     minutes=DEFAULT_THROUGHPUT_MINUTES if minutes is None else minutes)

    def overview(self, query: Query) -> dict:
        """Return everything the page shows, in one request.

        That is the stats document (which lists the paused queues) plus ``running`` and
        ``failures`` (as ``litequeue top`` lists them), ``workers`` (the workers document),
        ``throughput`` (the throughput document) and ``actions_allowed``.
        """
        _check_names(query, ("minutes",))
        database = self.queue.database
        now = self.clock()
        document = {"database": database.path}
        document.update(inspection.top_snapshot(database, now=now, lease_s=self.lease_s,
                                                running_limit=RUNNING_SHOWN, failures_limit=FAILURES_SHOWN))
        document["workers"] = inspection.live_workers(database, now=now, lease_s=self.lease_s)
        document["throughput"] = self.throughput(query)
        document["actions_allowed"] = self.actions_allowed
        return document

    # --- actions -------------------------------------------------------------------------------

    def cancel(self, task_id_text: str, query: Query) -> dict:
        """Cancel a queued or running task through :meth:`Queue.cancel`."""
        _check_names(query, ())
        task_id = _parse_task_id(task_id_text)
        with self._action_lock:
            previous = _run_action(lambda: self.queue.cancel(task_id))
        return {"id": task_id, "previous_status": previous.value, "status": "cancelled"}

    def requeue(self, task_id_text: str, query: Query) -> dict:
        """Put a failed or cancelled task back to queued through :meth:`Queue.requeue`."""
        _check_names(query, ())
        task_id = _parse_task_id(task_id_text)
        with self._action_lock:
            _run_action(lambda: self.queue.requeue(task_id))
        return {"id": task_id, "status": "queued"}


def _run_action(action: Callable):
    try:
        return action()
    except TaskNotFoundError as exc:
        raise ApiError(404, str(exc)) from None
    except TaskStateError as exc:
        raise ApiError(409, str(exc)) from None


# --- query parameters ------------------------------------------------------------------------

def _check_names(query: Query, allowed: tuple) -> None:
    # A misspelt filter would otherwise be ignored and return every task.
    for name, values in query.items():
        if name not in allowed:
            expected = f"use {', '.join(allowed)}" if allowed else "this endpoint takes none"
            raise ApiError(400, f"unknown query parameter {name!r}: {expected}")
        if len(values) > 1:
            raise ApiError(400, f"query parameter {name!r} is given {len(values)} times; give it once")


def _value(query: Query, name: str) -> Optional[str]:
    """Return the parameter's value, or None when it is missing or empty."""
    values = query.get(name)
    return values[0] if values and values[0] != "" else None


def _parse(query: Query, name: str, parse: Callable[[str], object]):
    text = _value(query, name)
    if text is None:
        return None
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        raise ApiError(400, f"query parameter {name!r}: {exc}") from None


def _parse_task_id(text: str) -> int:
    try:
        return task_id_type(text)
    except argparse.ArgumentTypeError as exc:
        raise ApiError(400, str(exc)) from None


def _minutes_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_THROUGHPUT_MINUTES:
        raise argparse.ArgumentTypeError(
            f"invalid number of minutes {text!r}: use an integer from 1 to {MAX_THROUGHPUT_MINUTES}")
    return value
