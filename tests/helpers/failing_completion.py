"""Imported with --import failing_completion: the statement that records a completed task
raises sqlite3.OperationalError in worker processes.

LITEQUEUE_TEST_FAULT=once fails the first completion only; "always" fails every completion
in the first worker process that records one. LITEQUEUE_TEST_FAULT_MESSAGE sets the error.
"""

import os
import sqlite3

from litequeue import connection

_MODE = os.environ.get("LITEQUEUE_TEST_FAULT", "once")
_MESSAGE = os.environ.get("LITEQUEUE_TEST_FAULT_MESSAGE", "database is locked")
_CLAIM_FILE = os.environ.get("LITEQUEUE_TEST_FAULT_CLAIM")
_state = {"failed": 0, "owner": None}


def _owns_fault() -> bool:
    """The first process to create the claim file is the one whose completions fail."""
    if _state["owner"] is None:
        try:
            fd = os.open(_CLAIM_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            _state["owner"] = True
        except FileExistsError:
            _state["owner"] = False
    return _state["owner"]


def _fail_completion(name: str) -> None:
    if name != "complete_task" or not _owns_fault():
        return
    if _MODE == "once" and _state["failed"]:
        return
    _state["failed"] += 1
    raise sqlite3.OperationalError(_MESSAGE)


connection.statement_hook = _fail_completion
