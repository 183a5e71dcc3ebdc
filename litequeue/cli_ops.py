"""The operations commands: list, cancel, requeue, stats, workers, detect-orphans, purge, top."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from typing import Callable, Dict, List

from . import inspection, monitor, retention, top
from .cli_common import (
    EXIT_INVALID_STATE, EXIT_NOT_FOUND, EXIT_OK, UserError, add_command, count_type, db_argument,
    duration_type, existing_queue, lease_argument, positive_seconds_type, purge_status_type, report_error,
    status_type, task_id_type,
)
from .cli_format import format_bytes, format_stats, format_task_list, format_time, format_workers, to_json
from .errors import TaskNotFoundError, TaskStateError
from .queue import Queue
from .status import TaskStatus


def add_parsers(commands) -> None:
    """Add the parser of every operations command to the ``commands`` subparsers."""
    for add in (_add_list, _add_cancel, _add_requeue, _add_stats, _add_workers, _add_detect_orphans,
                _add_purge, _add_top):
        add(commands)


def _add_list(commands) -> None:
    parser = add_command(commands, "list", "print tasks, newest first", [
        "litequeue list --db jobs.db",
        "litequeue list --status failed --queue emails --limit 20 --db jobs.db",
        "litequeue list --task myapp.tasks.resize --json --db jobs.db",
    ], description="Print tasks newest first: id, queue, task, status, attempts, age since enqueue and "
                   "the first line of the error. --json prints every field except output and log.")
    db_argument(parser)
    parser.add_argument("--status", type=status_type, help="only tasks in this status: "
                        + ", ".join(status.value for status in TaskStatus))
    parser.add_argument("--queue", metavar="NAME", help="only tasks of this queue")
    parser.add_argument("--task", metavar="PATH", help="only tasks of this task function (dotted path)")
    parser.add_argument("--limit", type=count_type, default=100, metavar="N",
                        help="print at most N tasks; 0 prints all (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON array")


def _add_cancel(commands) -> None:
    parser = add_command(commands, "cancel", "cancel queued or running tasks", [
        "litequeue cancel 42 --db jobs.db", "litequeue cancel 42 43 44 --db jobs.db",
    ], description="Cancel tasks: a queued task never runs, and a running task is stopped by its "
                   "supervisor and recorded as cancelled. A finished task is left as it is. Every id is "
                   f"processed; the exit code is that of the first one that failed ({EXIT_NOT_FOUND}: not "
                   f"found, {EXIT_INVALID_STATE}: already finished).")
    parser.add_argument("task_ids", type=task_id_type, nargs="+", metavar="ID", help="id of a task to cancel")
    db_argument(parser)


def _add_requeue(commands) -> None:
    parser = add_command(commands, "requeue", "put failed or cancelled tasks back to queued", [
        "litequeue requeue 42 43 --db jobs.db",
        "litequeue requeue --failed --queue emails --db jobs.db",
        "litequeue requeue --failed --task myapp.tasks.resize --db jobs.db",
    ], description="Put failed or cancelled tasks back to queued with their attempts reset. Each task's "
                   "error, output and log move into a 'previous attempt' section of its log. Every id is "
                   f"processed; the exit code is that of the first one that failed ({EXIT_NOT_FOUND}: not "
                   f"found, {EXIT_INVALID_STATE}: not failed or cancelled).")
    parser.add_argument("task_ids", type=task_id_type, nargs="*", metavar="ID", help="id of a task to requeue")
    parser.add_argument("--failed", action="store_true", help="requeue every failed task (instead of ids)")
    parser.add_argument("--queue", metavar="NAME", help="with --failed: only tasks of this queue")
    parser.add_argument("--task", metavar="PATH", help="with --failed: only tasks of this task function")
    db_argument(parser)


def _add_stats(commands) -> None:
    parser = add_command(commands, "stats", "print counts, queue ages, throughput and live workers", [
        "litequeue stats --db jobs.db", "litequeue stats --json --db jobs.db | jq .counts.failed",
    ], description="Print the number of tasks per queue and status, the age of the oldest queued task "
                   "(since it was enqueued), the tasks completed and failed in the last minute and hour, "
                   "and the number of live supervisors and worker processes.")
    db_argument(parser)
    lease_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _add_workers(commands) -> None:
    parser = add_command(commands, "workers", "print live supervisors and worker processes", [
        "litequeue workers --db jobs.db", "litequeue workers --json --db jobs.db",
    ], description="Print every supervisor and worker process whose heartbeat in the workers table is "
                   "recent: host, PID, role, supervisor PID, queues, heartbeat age and the task it runs "
                   "with its elapsed time.")
    db_argument(parser)
    lease_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON array")


def _add_detect_orphans(commands) -> None:
    parser = add_command(commands, "detect-orphans", "recover running tasks whose worker process is gone", [
        "litequeue detect-orphans --db jobs.db",
        "litequeue detect-orphans --import myapp.receivers --db jobs.db",
    ], description="Run one orphan check, as every supervisor does periodically: a task in progress whose "
                   "worker process is no longer running is recorded as failed (or queued for a retry). "
                   "Observers fire in this process, so load them with --import.")
    db_argument(parser)
    lease_argument(parser)
    parser.add_argument("--import", action="append", dest="imports", default=[], metavar="MODULE",
                        help="module to import first, such as one that connects observers; repeatable")


def _add_purge(commands) -> None:
    default = retention.format_duration(retention.DEFAULT_RETENTION_S)
    parser = add_command(commands, "purge", "delete finished tasks older than a retention period", [
        "litequeue purge --db jobs.db",
        "litequeue purge --older-than 12h --status completed --db jobs.db",
        "litequeue purge --older-than 0 --vacuum --db jobs.db",
    ], description="Delete completed, failed and cancelled tasks (with their output) that finished longer "
                   "ago than --older-than. Queued and running tasks are never deleted. Supervisors do the "
                   f"same periodically, with their --retention ({default} by default).")
    db_argument(parser)
    parser.add_argument("--older-than", type=duration_type, default=default, metavar="DURATION",
                        help="delete tasks that finished longer ago than this, such as 30s, 15m, 12h or 7d "
                             "(default: %(default)s)")
    parser.add_argument("--status", action="append", dest="statuses", type=purge_status_type, metavar="STATUS",
                        help="only tasks in this status: completed, failed or cancelled; repeatable "
                             "(default: all three)")
    parser.add_argument("--vacuum", action="store_true",
                        help="then run VACUUM to return the freed space to the file system; it rewrites "
                             "the whole file and blocks writers meanwhile")


def _add_top(commands) -> None:
    parser = add_command(commands, "top", "show a live view of the queue in the terminal", [
        "litequeue top --db jobs.db", "litequeue top --once --db jobs.db",
    ], description="Redraw every --interval-s seconds: tasks per status, throughput, live workers, the "
                   "running tasks with their elapsed time and the latest failures. Ctrl-C quits.")
    db_argument(parser)
    lease_argument(parser)
    parser.add_argument("--interval-s", type=positive_seconds_type, default=1.0, metavar="S",
                        help="seconds between frames (default: %(default)g)")
    parser.add_argument("--once", action="store_true",
                        help="print one frame without escape sequences and exit; works without a terminal")


# --- commands --------------------------------------------------------------------------------

def run_list(args: argparse.Namespace) -> int:
    with existing_queue(args.db) as queue:
        records = inspection.list_task_summaries(queue.database, status=args.status, queue=args.queue,
                                                 task=args.task, limit=args.limit or None)
    print(to_json(records) if args.json else format_task_list(records, time.time()))
    return EXIT_OK


def run_cancel(args: argparse.Namespace) -> int:
    with existing_queue(args.db) as queue:
        return _for_each_id(args.task_ids, lambda task_id: _cancel_one(queue, task_id))


def _cancel_one(queue: Queue, task_id: int) -> str:
    previous = queue.cancel(task_id)
    if previous == TaskStatus.QUEUED:
        return f"task {task_id} cancelled; it was queued and will not run"
    return f"task {task_id} cancelled; it was running, so its supervisor stops its worker process"


def run_requeue(args: argparse.Namespace) -> int:
    if not args.failed and (args.queue or args.task):
        raise UserError("--queue and --task select failed tasks; use them together with --failed")
    if args.failed and args.task_ids:
        raise UserError("give task ids or --failed, not both")
    if not args.failed and not args.task_ids:
        raise UserError("give the ids of the tasks to requeue, or --failed to requeue every failed task")

    with existing_queue(args.db) as queue:
        if not args.failed:
            return _for_each_id(args.task_ids, lambda task_id: _requeue_one(queue, task_id))
        requeued = queue.requeue_failed(queue=args.queue, task=args.task)
    for task_id in requeued:
        print(f"task {task_id} requeued; its previous error and output are in its log")
    print(f"requeued {len(requeued)} failed task(s)")
    return EXIT_OK


def _requeue_one(queue: Queue, task_id: int) -> str:
    queue.requeue(task_id)
    return f"task {task_id} requeued; its previous error and output are in its log"


def _for_each_id(task_ids: List[int], action: Callable[[int], str]) -> int:
    """Run ``action`` once for each id, in order, and print the message it returns.

    A task that is not found or has the wrong status is reported on stderr, and the other ids
    still run. Returns the exit code of the first failure, or EXIT_OK.
    """
    exit_code = EXIT_OK
    for task_id in dict.fromkeys(task_ids):
        try:
            print(action(task_id))
        except (TaskNotFoundError, TaskStateError) as exc:
            code = EXIT_NOT_FOUND if isinstance(exc, TaskNotFoundError) else EXIT_INVALID_STATE
            report_error(str(exc), code)
            exit_code = exit_code or code
    return exit_code


def run_stats(args: argparse.Namespace) -> int:
    with existing_queue(args.db) as queue:
        stats = {"database": queue.path,
                 **inspection.queue_stats(queue.database, now=time.time(), lease_s=args.lease_s)}
    print(to_json(stats) if args.json else format_stats(stats))
    return EXIT_OK


def run_workers(args: argparse.Namespace) -> int:
    with existing_queue(args.db) as queue:
        workers = inspection.live_workers(queue.database, now=time.time(), lease_s=args.lease_s)
    print(to_json(workers) if args.json else format_workers(workers, args.lease_s))
    return EXIT_OK


def run_detect_orphans(args: argparse.Namespace) -> int:
    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UserError(f"cannot import --import {module!r}: {exc}; check the name and PYTHONPATH") from exc
    with existing_queue(args.db) as queue:
        recovered = [queue.get(task_id)
                     for task_id in monitor.detect_orphaned_tasks(queue.database, lease_s=args.lease_s)]
    for task in recovered:
        outcome = "queued for a retry" if task.status == TaskStatus.QUEUED else task.status.value
        print(f"task {task.id} ({task.task}) recovered, now {outcome}: {task.error}")
    if not recovered:
        print("no orphaned tasks found")
    return EXIT_OK


def run_purge(args: argparse.Namespace) -> int:
    statuses = retention.check_purgeable(args.statuses or retention.PURGEABLE_STATUSES)
    with existing_queue(args.db) as queue:
        result = retention.purge_finished(queue.database, args.older_than, statuses)
        print(f"deleted {result.deleted} task(s) in status {', '.join(statuses)} that finished before "
              f"{format_time(result.cutoff)}")
        if args.vacuum:
            size_before = retention.database_size(queue.database)
            busy = retention.vacuum(queue.database)[0]
            size_after = retention.database_size(queue.database)
            print(f"vacuumed {queue.path}: {format_bytes(size_before)} before, {format_bytes(size_after)} after"
                  + ("; readers kept part of the WAL, a later checkpoint truncates it" if busy else ""))
    return EXIT_OK


def run_top(args: argparse.Namespace) -> int:
    if not args.once and not sys.stdout.isatty():
        raise UserError("litequeue top needs a terminal for its live view; pass --once to print one frame")
    with existing_queue(args.db) as queue:
        return top.run(queue.database, once=args.once, interval_s=args.interval_s, lease_s=args.lease_s)


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "list": run_list, "cancel": run_cancel, "requeue": run_requeue, "stats": run_stats,
    "workers": run_workers, "detect-orphans": run_detect_orphans, "purge": run_purge, "top": run_top,
}
