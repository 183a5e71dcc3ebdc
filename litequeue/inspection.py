"""Read-only queries behind the operations commands: task lists, statistics and live workers.

Each function reads inside one short read transaction (:meth:`Database.read`), so the numbers
it returns agree with each other. Results are dicts and lists of JSON values, so the command
line can print them as text or as JSON unchanged.
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional

from . import liveness, sql
from .connection import Database
from .status import TaskStatus

_SUMMARY_FIELDS = [name.strip() for name in sql.TASK_SUMMARY_COLUMNS.split(",")]


def list_task_summaries(db: Database, *, status: Optional[str] = None, queue: Optional[str] = None,
                        task: Optional[str] = None, limit: Optional[int] = 100) -> List[dict]:
    """Return up to ``limit`` tasks (None: all), newest first, without output and log.

    Each task is a dict with the fields of :meth:`Task.to_dict` except ``output`` and ``log``.
    """
    parameters = {
        "status": None if status is None else TaskStatus(status).value,
        "queue": queue, "task": task, "limit": -1 if limit is None else limit,
    }

    def read(db: Database) -> List[dict]:
        rows = db.execute("list_task_summaries", sql.LIST_TASK_SUMMARIES, parameters).fetchall()
        return [_summary_from_row(row) for row in rows]

    return db.read(read)


def _summary_from_row(row) -> dict:
    record = dict(zip(_SUMMARY_FIELDS, row))
    record["args"] = json.loads(record["args"])
    record["result"] = None if record["result"] is None else json.loads(record["result"])
    return record


def queue_stats(db: Database, *, now: float, lease_s: float) -> dict:
    """Return counts per queue and status, queue ages, recent throughput and live workers.

    The result has these keys, with times in seconds:

    - ``counts``: tasks per status over all queues, all five statuses included.
    - ``queues``: for each queue name, its ``counts``, ``oldest_queued_age_s`` (the age of
      its oldest queued task since it was enqueued, or None) and ``paused``. A paused queue
      without tasks is listed too.
    - ``paused_queues``: the names of the paused queues.
    - ``oldest_queued_age_s``: the same over all queues.
    - ``finished_last_minute`` and ``finished_last_hour``: tasks that completed and failed.
    - ``live_supervisors`` and ``live_worker_processes``: the processes that
      :func:`live_workers` returns, by role.
    """
    return db.read(lambda db: _stats_in(db, now, lease_s))


def _stats_in(db: Database, now: float, lease_s: float) -> dict:
    stats = {"time": now, "lease_s": lease_s}
    stats.update(_counts_in(db, now))
    stats.update(_paused_in(db, stats["queues"]))
    stats.update(_throughput_in(db, now))
    stats.update(_live_worker_counts_in(db, now, lease_s))
    return stats


def _zero_counts() -> Dict[str, int]:
    return {status.value: 0 for status in TaskStatus}


def _counts_in(db: Database, now: float) -> dict:
    totals = _zero_counts()
    queues: Dict[str, dict] = {}
    for queue, status, count in db.execute("count_by_queue_and_status", sql.COUNT_BY_QUEUE_AND_STATUS):
        entry = queues.setdefault(queue, {"counts": _zero_counts(), "oldest_queued_age_s": None})
        entry["counts"][status] = count
        totals[status] += count

    oldest_created = None
    for queue, created in db.execute("oldest_queued_by_queue", sql.OLDEST_QUEUED_BY_QUEUE):
        queues[queue]["oldest_queued_age_s"] = max(0.0, now - created)
        oldest_created = created if oldest_created is None else min(oldest_created, created)

    return {
        "counts": totals,
        "queues": dict(sorted(queues.items())),
        "oldest_queued_age_s": None if oldest_created is None else max(0.0, now - oldest_created),
    }


def _throughput_in(db: Database, now: float) -> dict:
    last_minute = {"completed": 0, "failed": 0}
    last_hour = {"completed": 0, "failed": 0}
    cursor = db.execute("count_finished_since", sql.COUNT_FINISHED_SINCE,
                        {"minute_ago": now - 60, "hour_ago": now - 3600})
    for status, in_hour, in_minute in cursor:
        last_hour[status] = in_hour
        last_minute[status] = in_minute
    return {"finished_last_minute": last_minute, "finished_last_hour": last_hour}


def _live_worker_counts_in(db: Database, now: float, lease_s: float) -> dict:
    roles = [worker["role"] for worker in _live_workers_in(db, now, lease_s)]
    return {"live_supervisors": roles.count("supervisor"), "live_worker_processes": roles.count("worker")}


def live_workers(db: Database, *, now: float, lease_s: float) -> List[dict]:
    """Return the supervisors and worker processes that are alive.

    A row of the workers table counts when its heartbeat is at most ``lease_s`` old, except
    that a process on this host whose PID is gone, reused or a zombie is left out at once.

    Each entry contains ``host``, ``host_id``, ``pid``, ``role`` ("supervisor" or "worker"),
    ``supervisor_pid``, ``queues`` (a list), ``started``, ``heartbeat``, ``heartbeat_age_s``
    and ``tasks``: the tasks in progress that it owns, each with ``id``, ``queue``, ``task``,
    ``started`` and ``elapsed_s`` (normally at most one).
    """
    return db.read(lambda db: _live_workers_in(db, now, lease_s))


def _live_workers_in(db: Database, now: float, lease_s: float) -> List[dict]:
    rows = db.execute("list_live_workers_with_tasks", sql.LIST_LIVE_WORKERS_WITH_TASKS, (now - lease_s,))
    workers: Dict[tuple, dict] = {}
    start_tokens: Dict[tuple, str] = {}
    for (host, host_id, pid, start_token, role, supervisor_pid, queues, started, heartbeat,
         task_id, task_queue, task_path, task_started) in rows:
        worker = workers.get((host_id, pid))
        if worker is None:
            start_tokens[(host_id, pid)] = start_token
            worker = workers[(host_id, pid)] = {
                "host": host, "host_id": host_id, "pid": pid, "role": role,
                "supervisor_pid": supervisor_pid, "queues": queues.split(",") if queues else [],
                "started": started, "heartbeat": heartbeat,
                "heartbeat_age_s": max(0.0, now - heartbeat), "tasks": [],
            }
        if task_id is not None:
            worker["tasks"].append({
                "id": task_id, "queue": task_queue, "task": task_path, "started": task_started,
                "elapsed_s": None if task_started is None else max(0.0, now - task_started),
            })

    # On this host, a PID that is gone or reused proves the process dead before its lease ends.
    local_host_id = liveness.host_id()
    alive = []
    for (host_id, pid), worker in workers.items():
        if host_id == local_host_id and liveness.same_host_owner_alive(pid, start_tokens[(host_id, pid)]) is False:
            continue
        alive.append(worker)
    return alive


def top_snapshot(db: Database, *, now: float, lease_s: float, running_limit: int,
                 failures_limit: int) -> dict:
    """Return what ``litequeue top`` shows: :func:`queue_stats` plus ``running`` (the oldest
    tasks in progress first, with ``elapsed_s``) and ``failures`` (the latest failed tasks)."""
    def read(db: Database) -> dict:
        snapshot = _stats_in(db, now, lease_s)
        snapshot["running"] = [
            {"id": task_id, "queue": queue, "task": task, "started": started, "attempts": attempts,
             "worker_pid": pid, "worker_host": host,
             "elapsed_s": None if started is None else max(0.0, now - started)}
            for task_id, queue, task, started, attempts, pid, host
            in db.execute("list_running_tasks", sql.LIST_RUNNING_TASKS, (running_limit,))
        ]
        snapshot["failures"] = [
            {"id": task_id, "queue": queue, "task": task, "finished": finished, "error": error}
            for task_id, queue, task, finished, error
            in db.execute("list_latest_failures", sql.LIST_LATEST_FAILURES, (failures_limit,))
        ]
        return snapshot

    return db.read(read)


def failed_task_ids(db: Database, *, queue: Optional[str] = None, task: Optional[str] = None) -> List[int]:
    """Return the ids of failed tasks, oldest first, optionally only of one queue or task path."""
    def read(db: Database) -> List[int]:
        rows = db.execute("list_failed_ids", sql.LIST_FAILED_IDS, {"queue": queue, "task": task}).fetchall()
        return [row[0] for row in rows]

    return db.read(read)


# --- documents shared by the command line and the dashboard -----------------------------------

def stats_document(db: Database, *, now: float, lease_s: float) -> dict:
    """Return what ``litequeue stats --json`` prints: ``database`` (the file's absolute path)
    followed by the keys of :func:`queue_stats`."""
    return {"database": db.path, **queue_stats(db, now=now, lease_s=lease_s)}


def throughput(db: Database, *, now: float, minutes: int, bucket_s: float = 60.0) -> dict:
    """Return the tasks completed and failed per ``bucket_s`` seconds over the last ``minutes``
    minutes, by finish time.

    The result has ``time`` (``now``), ``minutes``, ``bucket_s`` and ``buckets``: a list,
    oldest first, whose last entry ends at ``now``. Each bucket has ``start``, ``end``,
    ``completed`` and ``failed``, and counts the tasks with ``start < finished <= end``. A task
    that finished after ``now`` (a clock that runs ahead on another host) counts in the last one.
    """
    count = max(1, round(minutes * 60 / bucket_s))
    parameters = {"now": now, "bucket_s": bucket_s, "since": now - count * bucket_s}
    rows = db.read(lambda db: db.execute("count_finished_per_bucket", sql.COUNT_FINISHED_PER_BUCKET,
                                         parameters).fetchall())

    # Row index 0 is the oldest bucket; the query numbers them backwards from now.
    buckets = [
        {"start": now - (count - index) * bucket_s, "end": now - (count - 1 - index) * bucket_s,
         "completed": 0, "failed": 0}
        for index in range(count)
    ]
    for status, age_in_buckets, tasks in rows:
        # Rounding in ``now - finished`` can put a task just after ``since`` one bucket too far.
        buckets[count - 1 - min(age_in_buckets, count - 1)][status] += tasks
    return {"time": now, "minutes": minutes, "bucket_s": bucket_s, "buckets": buckets}


# --- paused queues -----------------------------------------------------------------------------

def _paused_in(db: Database, queues: Dict[str, dict]) -> dict:
    """Mark each entry of ``queues`` as paused or not, adding the paused queues that have no task."""
    paused = [row[0] for row in db.execute("list_paused_queues", sql.LIST_PAUSED_QUEUES)]
    for name in paused:
        queues.setdefault(name, {"counts": _zero_counts(), "oldest_queued_age_s": None})
    for name, entry in queues.items():
        entry["paused"] = name in paused
    return {"queues": dict(sorted(queues.items())), "paused_queues": paused}
