"""Pieces shared by the command-line modules: exit codes, errors, options and argument types."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import Optional, Sequence

from . import retention
from .connection import default_path
from .errors import InvalidOptionError
from .monitor import DEFAULT_LEASE_S
from .queue import Queue
from .status import TaskStatus
from .supervisor import EXIT_DATABASE_ERROR, EXIT_OK, EXIT_UNSUPPORTED_PLATFORM

# EXIT_OK, EXIT_DATABASE_ERROR and EXIT_UNSUPPORTED_PLATFORM are the supervisor's, reused here.
#: Invalid arguments or input (also what argparse uses).
EXIT_USAGE = 2
#: No task has the given id.
EXIT_NOT_FOUND = 5
#: The task is not in a state that allows the request (for example cancelling a finished task).
EXIT_INVALID_STATE = 6


class UserError(Exception):
    """An error caused by the command's input, printed as one line."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser that reports invalid arguments in one line, like every other error.

    Subcommand parsers inherit this class, because add_subparsers uses the parent's class.
    """

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def add_command(commands, name: str, summary: str, examples: Sequence[str],
                description: str) -> argparse.ArgumentParser:
    """Add a subcommand parser whose help ends with an epilog of ``examples``."""
    # The raw formatter keeps the epilog's lines, so the description is wrapped here.
    return commands.add_parser(
        name, help=summary, description=textwrap.fill(description, width=79),
        epilog="examples:\n" + "".join(f"  {example}\n" for example in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=None, metavar="PATH",
                        help="database file (default: $LITEQUEUE_DB, else ./litequeue.db)")


def lease_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lease-s", type=float, default=DEFAULT_LEASE_S, metavar="S",
                        help="heartbeat age in seconds after which a supervisor or worker process counts "
                             "as dead; use the worker's --lease-s (default: %(default)g)")


def existing_queue(path: Optional[str]) -> Queue:
    """Open the queue at ``path`` (None: the default database), or raise UserError when the file
    does not exist, so that a command that inspects a queue never creates an empty one."""
    path = path or default_path()
    if not os.path.exists(path):
        raise UserError(f"database {os.path.abspath(path)} not found; pass --db or set LITEQUEUE_DB",
                        EXIT_DATABASE_ERROR)
    return Queue(path)


def report_error(message: str, code: int) -> int:
    """Print ``message`` as one error line on stderr and return ``code``."""
    print(f"litequeue: error: {message}", file=sys.stderr)
    return code


# --- argument types: each raises ArgumentTypeError, which argparse prints as one line ---------

def status_type(text: str) -> str:
    try:
        return TaskStatus(text).value
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid status {text!r}: use one of {', '.join(status.value for status in TaskStatus)}"
        ) from None


def purge_status_type(text: str) -> str:
    try:
        return retention.check_purgeable([text])[0]
    except InvalidOptionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration_type(text: str) -> float:
    try:
        return retention.parse_duration(text)
    except InvalidOptionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def task_id_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid task id {text!r}: use a positive integer")
    return value


def count_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: use an integer >= 0")
    return value


def positive_seconds_type(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}: use a number > 0")
    return value


def port_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: use an integer from 0 to 65535 (0 picks a free port)")
    return value
