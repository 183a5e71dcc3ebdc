"""The command line: ``python -m litequeue`` and the ``litequeue`` script."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
from typing import Callable, Dict, List, Optional

from . import cli_ops, retention
from .cli_common import (
    EXIT_DATABASE_ERROR, EXIT_INVALID_STATE, EXIT_NOT_FOUND, EXIT_OK, EXIT_UNSUPPORTED_PLATFORM, EXIT_USAGE,
    ArgumentParser, UserError, add_command, db_argument, duration_type, existing_queue, report_error,
)
from .cli_format import format_task, to_json
from .execution import DEFAULT_MAX_LOG_BYTES, DEFAULT_MAX_OUTPUT_BYTES
from .config import WorkerConfig, default_task_timeout_s
from .connection import default_path, describe_error
from .errors import (
    DatabaseError, InvalidArgsError, LitequeueError, TaskNotFoundError, TaskStateError,
    UnsupportedPlatformError,
)
from .monitor import DEFAULT_LEASE_S
from .queue import Queue
from .supervisor import Supervisor
from .validation import allowed_patterns
from .version import __version__
from .worker_process import LOG_FORMAT

EPILOG = f"""examples:
  litequeue worker --db jobs.db --concurrency 4 --import myapp.receivers
  litequeue enqueue myapp.tasks.resize --args '{{"path": "a.png"}}' --db jobs.db
  litequeue show 42 --json --db jobs.db
  litequeue list --status failed --db jobs.db
  litequeue top --db jobs.db

exit codes:
  {EXIT_OK}  success
  {EXIT_USAGE}  invalid arguments or input (a bad option value, filter or duration)
  {EXIT_DATABASE_ERROR}  the database file is missing, unreadable or unusable
  {EXIT_UNSUPPORTED_PLATFORM}  the worker cannot run on this platform
  {EXIT_NOT_FOUND}  no task has the given id
  {EXIT_INVALID_STATE}  the task's status does not allow the request (cancel a finished task,
     requeue a queued one)
"""


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: ...)" unless the help already names the default or it is None."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS, False) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="litequeue", description="A task queue stored in one SQLite file.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"litequeue {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_worker(commands)
    _add_enqueue(commands)
    _add_show(commands)
    cli_ops.add_parsers(commands)
    return parser


def _add_worker(commands) -> None:
    parser = commands.add_parser(
        "worker", help="run a supervisor and its worker processes",
        formatter_class=_DefaultsFormatter,
        description="Run worker processes that claim and run tasks until SIGTERM or Ctrl-C. The "
                    "first signal lets running tasks finish within --grace-s; a second one stops at once. "
                    f"Exit codes: {EXIT_OK} stopped cleanly, {EXIT_USAGE} invalid options, "
                    f"{EXIT_DATABASE_ERROR} database unusable, {EXIT_UNSUPPORTED_PLATFORM} unsupported platform.",
    )
    db_argument(parser)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1, metavar="N",
                        help="number of worker processes")
    parser.add_argument("--queue", action="append", dest="queues", metavar="NAME",
                        help="queue to serve, repeatable, in priority order (default: default)")
    parser.add_argument("--timeout-s", type=float, default=None, metavar="S",
                        help="default task timeout in seconds; 0 disables (default: $LITEQUEUE_TASK_TIMEOUT, else 3600)")
    parser.add_argument("--grace-s", type=float, default=30.0, metavar="S",
                        help="seconds running tasks get to finish after the first SIGTERM or SIGINT")
    parser.add_argument("--abort-grace-s", type=float, default=2.0, metavar="S",
                        help="seconds a timed-out or cancelled task gets to stop before SIGKILL")
    parser.add_argument("--import", action="append", dest="imports", default=[], metavar="MODULE",
                        help="module to import in the supervisor and every worker process (observers, schedules), repeatable")
    parser.add_argument("--allow", action="append", default=None, metavar="PATTERN",
                        help="shell-style pattern of task paths allowed to run, repeatable "
                             "(default: $LITEQUEUE_ALLOWED_TASKS, else all)")
    parser.add_argument("--max-tasks-per-child", type=int, default=0, metavar="N",
                        help="replace a worker process after N tasks; 0 keeps it")
    parser.add_argument("--poll-interval-s", type=float, default=1.0, metavar="S",
                        help="maximum idle wait before checking for tasks again")
    parser.add_argument("--orphan-check-interval-s", type=float, default=5.0, metavar="S",
                        help="seconds between orphan checks")
    parser.add_argument("--heartbeat-interval-s", type=float, default=5.0, metavar="S",
                        help="seconds between heartbeats written to the workers table")
    parser.add_argument("--lease-s", type=float, default=DEFAULT_LEASE_S, metavar="S",
                        help="heartbeat age after which a worker on another host counts as dead")
    parser.add_argument("--retry-delay-s", type=float, default=1.0, metavar="S",
                        help="delay before the first retry; it doubles each attempt")
    parser.add_argument("--retry-max-delay-s", type=float, default=3600.0, metavar="S",
                        help="maximum delay between retries")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop as after a first SIGTERM when the process that started this worker exits "
                             "(used by litequeue.Worker)")
    parser.add_argument("--max-output-bytes", type=int, default=DEFAULT_MAX_OUTPUT_BYTES, metavar="N",
                        help="largest output a generator task may yield; past it the task fails")
    parser.add_argument("--max-log-bytes", type=int, default=DEFAULT_MAX_LOG_BYTES, metavar="N",
                        help="largest captured stdout and stderr kept per task; the rest is dropped")
    parser.add_argument("--write-retry-s", type=float, default=30.0, metavar="S",
                        help="seconds a worker process keeps retrying the write that records a finished "
                             "task before it exits and leaves the task to its supervisor")
    parser.add_argument("--retention", type=duration_type, metavar="DURATION",
                        default=retention.format_duration(retention.DEFAULT_RETENTION_S),
                        help="how long finished tasks are kept before the supervisor deletes them, such as "
                             "30s, 15m, 12h or 7d; 0 keeps them forever")
    parser.add_argument("--start-method", choices=["fork", "forkserver", "spawn"], default=None,
                        help="multiprocessing start method (default: Python's default for this platform)")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL",
                        help="FULL survives power loss; NORMAL is faster but may lose the latest commits then")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging level")


def _add_enqueue(commands) -> None:
    parser = commands.add_parser("enqueue", help="store a task and print its id",
                                 formatter_class=_DefaultsFormatter)
    parser.add_argument("task", metavar="TASK", help="dotted path of the task function")
    db_argument(parser)
    parser.add_argument("--args", default="{}", metavar="JSON", help="keyword arguments as a JSON object")
    parser.add_argument("--queue", default="default", help="queue name")
    parser.add_argument("--priority", type=int, default=0, help="higher runs first")
    parser.add_argument("--delay-s", type=float, default=0.0, metavar="S", help="seconds before it may run")
    parser.add_argument("--timeout-s", type=float, default=None, metavar="S",
                        help="timeout in seconds; 0 disables (default: the worker's)")
    parser.add_argument("--max-retries", type=int, default=0, metavar="N", help="retries after a failure")


def _add_show(commands) -> None:
    parser = add_command(commands, "show", "print every field of a task", [
        "litequeue show 42 --db jobs.db", "litequeue show 42 --json --db jobs.db | jq .error",
    ], description="Print every field of one task, with its error (and traceback), output and log in full.")
    parser.add_argument("task_id", type=int, metavar="ID")
    db_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


# --- commands ------------------------------------------------------------------------------

def run_worker(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)
    config = WorkerConfig(
        db_path=os.path.abspath(args.db or default_path()),
        queues=tuple(args.queues or ("default",)),
        concurrency=args.concurrency,
        synchronous=args.synchronous,
        timeout_s=default_task_timeout_s() if args.timeout_s is None else args.timeout_s,
        grace_s=args.grace_s,
        abort_grace_s=args.abort_grace_s,
        imports=tuple(args.imports),
        allow=_allow_list(args.allow),
        allow_setting="--allow" if args.allow else "LITEQUEUE_ALLOWED_TASKS",
        max_tasks_per_child=args.max_tasks_per_child,
        poll_interval_s=args.poll_interval_s,
        orphan_check_interval_s=args.orphan_check_interval_s,
        heartbeat_interval_s=args.heartbeat_interval_s,
        lease_s=args.lease_s,
        retry_base_s=args.retry_delay_s,
        retry_max_s=args.retry_max_delay_s,
        start_method=args.start_method,
        terminal_write_deadline_s=args.write_retry_s,
        max_output_bytes=args.max_output_bytes,
        exit_with_parent=args.exit_with_parent,
        max_log_bytes=args.max_log_bytes,
        retention_s=args.retention,
        log_level=logging.getLevelName(args.log_level),
    )
    return Supervisor(config).run()


def _allow_list(patterns: Optional[List[str]]):
    values = allowed_patterns(patterns)
    return tuple(values) if values is not None else None


def run_enqueue(args: argparse.Namespace) -> int:
    try:
        task_args = json.loads(args.args)
    except json.JSONDecodeError as exc:
        raise UserError(f"invalid --args {args.args!r}: not JSON ({exc}); pass a JSON object such as '{{\"x\": 1}}'")
    if not isinstance(task_args, dict):
        raise UserError(f"invalid --args {args.args!r}: pass a JSON object of keyword arguments")
    queue = Queue(args.db)
    try:
        task_id = queue.enqueue(args.task, task_args, queue=args.queue, priority=args.priority,
                                delay_s=args.delay_s, timeout_s=args.timeout_s, max_retries=args.max_retries)
    finally:
        queue.close()
    print(task_id)
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    queue = existing_queue(args.db)
    try:
        task = queue.get(args.task_id)
    finally:
        queue.close()
    print(to_json(task.to_dict()) if args.json else format_task(task))
    return EXIT_OK


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "worker": run_worker, "enqueue": run_enqueue, "show": run_show, **cli_ops.COMMANDS,
}


def _import_from_working_directory() -> None:
    # ``python -m litequeue`` puts the working directory first on sys.path, but the installed
    # ``litequeue`` script does not. Both must find the tasks and --import modules of the
    # project they run in. Worker processes inherit sys.path under every start method.
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _import_from_working_directory()
    if args.command != "worker":
        # Library warnings (such as an orphan being recovered) would repeat what the command
        # prints, so only errors reach stderr.
        logging.basicConfig(level=logging.ERROR, format="litequeue: %(levelname)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        return report_error(str(exc), exc.exit_code)
    except TaskNotFoundError as exc:
        return report_error(str(exc), EXIT_NOT_FOUND)
    except TaskStateError as exc:
        return report_error(str(exc), EXIT_INVALID_STATE)
    except DatabaseError as exc:
        return report_error(str(exc), EXIT_DATABASE_ERROR)
    except UnsupportedPlatformError as exc:
        return report_error(str(exc), EXIT_UNSUPPORTED_PLATFORM)
    except (LitequeueError, InvalidArgsError) as exc:
        return report_error(str(exc), EXIT_USAGE)
    except sqlite3.Error as exc:
        return report_error(describe_error(os.path.abspath(args.db or default_path()), exc), EXIT_DATABASE_ERROR)
