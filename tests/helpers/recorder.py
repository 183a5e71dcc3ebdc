"""Imported by test supervisors (--import recorder): appends every observer event to the
JSON-lines file named by LITEQUEUE_TEST_EVENTS, with the process that fired it."""

import json
import os

from litequeue import signals

_PATH = os.environ.get("LITEQUEUE_TEST_EVENTS")


def _record(event: str):
    def receiver(task, error=None, item=None):
        line = json.dumps({"event": event, "task_id": task.id, "pid": os.getpid(),
                           "status": task.status.value, "error": error, "item": item})
        # One short O_APPEND write per event keeps lines whole across processes.
        fd = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    receiver.__name__ = f"record_{event}"
    return receiver


if _PATH:
    for _name in ("before_job", "on_success", "on_failure", "on_retry", "before_loop", "after_loop"):
        getattr(signals, _name).connect(_record(_name))
