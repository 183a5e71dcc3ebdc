"""Task functions used by the tests. Worker processes import them from tests/helpers."""

import asyncio
import ctypes
import os
import signal
import sys
import time
from pathlib import Path


def add(a, b):
    return a + b


def square(x):
    return x * x


def noop():
    return None


def fail(message="boom"):
    raise ValueError(message)


def shout(text):
    print(f"stdout: {text}")
    print(f"stderr: {text}", file=sys.stderr)
    return text.upper()


def stream(count):
    for index in range(count):
        yield f"item {index}\n"


async def async_double(x):
    await asyncio.sleep(0.01)
    return x * 2


def return_set():
    return {1, 2, 3}


def sleep(seconds, marker=None):
    """Sleep, writing ``marker`` (a file path) first so that a test can tell the task started."""
    if marker:
        Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return seconds


def record_run(path, seconds=0.0):
    """Append this process's PID to ``path``, then sleep: counts how often a task ran."""
    with open(path, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return "done"


def swallow_everything(marker=None):
    """Loop forever, swallowing every exception, including the supervisor's abort."""
    if marker:
        Path(marker).write_text(str(os.getpid()))
    while True:
        try:
            time.sleep(0.05)
        except BaseException:
            pass


def block_signals_and_sleep(seconds, marker=None):
    """Block every catchable signal, then sleep in C code: only SIGKILL can stop it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP})
    if marker:
        Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)


def exit_hard(code):
    os._exit(code)


def exit_clean():
    sys.exit(0)


def segfault():
    ctypes.string_at(0)


def fail_until(path, failures):
    """Fail the first ``failures`` runs, then succeed; runs are counted in ``path``."""
    runs = Path(path)
    count = int(runs.read_text()) if runs.exists() else 0
    runs.write_text(str(count + 1))
    if count < failures:
        raise RuntimeError(f"failure {count + 1}")
    return count + 1


not_callable = 42


def length(text):
    return len(text)


def fail_and_stamp(path):
    """Append the current time to ``path``, then raise: records when each attempt started."""
    with open(path, "a") as handle:
        handle.write(f"{time.time()}\n")
    raise RuntimeError("always fails")
