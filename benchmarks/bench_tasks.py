"""Task functions run by the benchmarks, importable by litequeue and huey worker processes.

The runner puts this directory on PYTHONPATH for every worker process it starts.
"""

import time


def noop():
    return None


def monotonic_stamp():
    """Return time.monotonic() at the moment the task function starts.

    On Linux and macOS the monotonic clock is system-wide, so the benchmark process can
    subtract its own monotonic reading taken when enqueue returned.
    """
    return time.monotonic()
