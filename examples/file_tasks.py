"""Task functions for examples/hash_files.py. Worker processes import this module by name."""

import hashlib
import os
import signal
import time


def hash_file(path):
    """Return the SHA-256, size in bytes and line count of one file."""
    digest = hashlib.sha256()
    size = 0
    lines = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
            size += len(block)
            lines += block.count(b"\n")
    return {"sha256": digest.hexdigest(), "bytes": size, "lines": lines}


def stall(seconds):
    """Sleep far longer than the task's timeout, to show a timeout being recorded."""
    time.sleep(seconds)


def crash():
    """Kill the worker process running this task, to show a crash being recorded."""
    os.kill(os.getpid(), signal.SIGKILL)
