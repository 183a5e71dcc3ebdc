"""The operations commands: list, cancel, requeue, stats, workers, detect-orphans, purge, top,
pause, resume and schedules."""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys
import time
from typing import Callable, Dict, List

from . import inspection, monitor, retention, top
from .cli_common import (
    EXIT_INVALID_STATE, EXIT_NOT_FOUND, EXIT_OK, UserError, add_command, count_type, db_argument,
    duration_type, existing_queue, lease_argument, positive_seconds_type, purge_status_type, report_error,
    status_type, task_id_type,
)
from .cli_common import port_type
from .cli_format import format_schedules
from . import schedule
from .validation import check_queue_name
from .cli_format import format_bytes, format_stats, format_task_list, format_time, format_workers, to_json
from .errors import TaskNotFoundError, TaskStateError
from .queue import Queue
from .status import TaskStatus


def add_parsers(commands) -> None:
    """Add the parser of every operations command to the ``commands`` subparsers."""
    for add in (_add_list, _add_cancel, _add_requeue, _add_stats, _add_workers, _add_detect_orphans,
                _add_purge, _add_top, _add_pause, _add_resume, _add_schedules):
        add(commands)
    _add_dashboard(commands)


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
                   "and the number of live supervisors and worker processes. Paused queues are marked "
                   "'(paused)'.")
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


def _add_pause(commands) -> None:
    parser = add_command(commands, "pause", "stop workers from claiming the tasks of queues", [
        "litequeue pause reports --db jobs.db", "litequeue pause reports emails --db jobs.db",
    ], description="Pause queues: their queued tasks stay queued and no worker claims them until "
                   "'litequeue resume'. Tasks already running finish normally, and tasks can still be "
                   "enqueued. A queue can be paused before it has any task.")
    parser.add_argument("queues", nargs="+", metavar="QUEUE", help="name of a queue to pause")
    db_argument(parser)


def _add_resume(commands) -> None:
    parser = add_command(commands, "resume", "let workers claim the tasks of paused queues again", [
        "litequeue resume reports --db jobs.db", "litequeue resume reports emails --db jobs.db",
    ], description="Resume paused queues: workers claim their queued tasks again, and idle workers "
                   "on this host are woken at once. Resuming a queue that is not paused changes nothing.")
    parser.add_argument("queues", nargs="+", metavar="QUEUE", help="name of a queue to resume")
    db_argument(parser)


def _add_schedules(commands) -> None:
    parser = add_command(commands, "schedules", "print periodic schedules with their last and next run", [
        "litequeue schedules --import myapp.schedules --db jobs.db",
        "litequeue schedules --import myapp.schedules --json --db jobs.db",
    ], description="Import the modules that register periodic schedules (those the worker gets with "
                   "--import) and print each schedule: name, task, queue, timing, missed-run policy, "
                   "the last run a supervisor enqueued, and when the next run is due.")
    parser.add_argument("--import", action="append", dest="imports", required=True, metavar="MODULE",
                        help="module that registers schedules with litequeue.schedule; repeatable")
    db_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON array")


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
        stats = inspection.stats_document(queue.database, now=time.time(), lease_s=args.lease_s)
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


def run_pause(args: argparse.Namespace) -> int:
    names = [check_queue_name(name) for name in dict.fromkeys(args.queues)]
    with existing_queue(args.db) as queue:
        paused_before = set(queue.paused_queues())
        for name in names:
            queue.pause(name)
            if name in paused_before:
                print(f"queue {name} was already paused")
            else:
                print(f"queue {name} paused; its queued tasks wait until 'litequeue resume {shlex.quote(name)}'")
    return EXIT_OK


def run_resume(args: argparse.Namespace) -> int:
    names = [check_queue_name(name) for name in dict.fromkeys(args.queues)]
    with existing_queue(args.db) as queue:
        paused_before = set(queue.paused_queues())
        for name in names:
            queue.resume(name)
            if name in paused_before:
                print(f"queue {name} resumed; workers claim its queued tasks again")
            else:
                print(f"queue {name} was not paused")
    return EXIT_OK


def run_schedules(args: argparse.Namespace) -> int:
    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UserError(f"cannot import --import {module!r}: {exc}; check the name and PYTHONPATH") from exc
    definitions = schedule.registered()
    with existing_queue(args.db) as queue:
        entries = schedule.list_states(queue.database, time.time(), definitions)
    if args.json:
        print(to_json(entries))
    elif not entries:
        print(f"no schedules registered by {', '.join(args.imports)}; register them with "
              "litequeue.schedule.every() or cron() when the module is imported")
    else:
        print(format_schedules(entries))
    return EXIT_OK


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "list": run_list, "cancel": run_cancel, "requeue": run_requeue, "stats": run_stats,
    "workers": run_workers, "detect-orphans": run_detect_orphans, "purge": run_purge, "top": run_top,
    "pause": run_pause, "resume": run_resume, "schedules": run_schedules,
}


# --- dashboard -------------------------------------------------------------------------------

def _add_dashboard(commands) -> None:
    parser = add_command(commands, "dashboard", "serve a live web page of the queue", [
        "litequeue dashboard --db jobs.db",
        "litequeue dashboard --db jobs.db --port 9000 --allow-actions",
        "curl -s http://127.0.0.1:8080/api/stats | jq .counts",
    ], description="Serve a web page that refreshes every second: tasks per status and queue, tasks "
                   "finished per minute, running tasks, the latest failures, live workers and paused "
                   "queues, and every field of a task. It also serves the JSON documents of stats, list, "
                   "show and workers at /api/stats, /api/tasks, /api/tasks/ID and /api/workers. It is "
                   "read-only unless --allow-actions. Ctrl-C or SIGTERM stops it with exit code 0.")
    db_argument(parser)
    lease_argument(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; any address other than a loopback one lets other "
                             "machines read every task (default: %(default)s)")
    parser.add_argument("--port", type=port_type, default=8080,
                        help="TCP port to listen on; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--allow-actions", action="store_true",
                        help="serve the cancel and requeue actions; each request needs the token printed at "
                             "start-up (or $LITEQUEUE_DASHBOARD_TOKEN) in the X-Litequeue-Token header")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="level of the log on stderr; DEBUG logs every request (default: %(default)s)")


def run_dashboard(args: argparse.Namespace) -> int:
    # Imported here, so that the other commands do not load http.server.
    from .dashboard import api, server
    from .worker_process import LOG_FORMAT

    logging.basicConfig(level=args.log_level, format=LOG_FORMAT, force=True)
    token, token_from_environment = server.resolve_token() if args.allow_actions else (None, False)
    with existing_queue(args.db) as queue:
        dashboard_api = api.Api(queue, lease_s=args.lease_s, actions_allowed=args.allow_actions)
        try:
            http_server = server.create_server(dashboard_api, args.host, args.port, token)
        except OSError as exc:
            raise UserError(f"cannot listen on {args.host} port {args.port}: {exc.strerror or exc}; "
                            "choose another --host or --port (0 picks a free port)") from exc

        url = f"http://{server.url_host(args.host)}:{http_server.server_address[1]}/"
        mode = "actions allowed" if args.allow_actions else "read-only"
        print(f"litequeue dashboard of {queue.path} at {url} ({mode}); Ctrl-C stops it", flush=True)
        if token_from_environment:
            print(f"actions need the token from {server.TOKEN_ENVIRONMENT_VARIABLE} in the "
                  f"{server.TOKEN_HEADER} header", flush=True)
        elif token is not None:
            print(f"actions need this token in the {server.TOKEN_HEADER} header: {token}\n"
                  f"or open {url}#token={token} to use them from the page", flush=True)
        server.serve(http_server)
    logging.getLogger(__name__).info("dashboard stopped")
    return EXIT_OK


COMMANDS["dashboard"] = run_dashboard
