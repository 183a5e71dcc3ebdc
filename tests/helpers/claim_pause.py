"""Imported with --import claim_pause: the first worker process to claim a task pauses right
after the claim commits, until the file named by LITEQUEUE_TEST_RELEASE exists (at most 30 s).
Before pausing it writes its PID to LITEQUEUE_TEST_PAUSED."""

import os
import time

from litequeue import connection

_PAUSED = os.environ.get("LITEQUEUE_TEST_PAUSED")
_RELEASE = os.environ.get("LITEQUEUE_TEST_RELEASE")


def _pause_after_claim(name: str) -> None:
    if name != "finish_and_claim" or not _PAUSED:
        return
    try:
        fd = os.open(_PAUSED, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # Only the first claim pauses.
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    deadline = time.monotonic() + 30
    while not os.path.exists(_RELEASE) and time.monotonic() < deadline:
        time.sleep(0.02)


connection.commit_hook = _pause_after_claim
