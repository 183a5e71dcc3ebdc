"""The task a worker process runs, shared with its supervisor through shared memory.

A worker process publishes each task it starts, and when it goes idle, in a small shared
array. The supervisor reads it on every pass of its loop. A pipe message per task did this
before, and it cost the supervisor a third of a CPU core at 5,000 tasks/s on two cores. The
supervisor still times each task on its own monotonic clock, from the moment it first sees
the task here.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

# Slots of the shared array: a sequence number that is odd while the worker process writes,
# then the task id (0: idle), its attempt, and its timeout in microseconds (0: none).
_SEQUENCE, _TASK_ID, _ATTEMPTS, _TIMEOUT_US = range(4)
SLOTS = 4


@dataclasses.dataclass(frozen=True)
class RunningTask:
    """The task a worker process reports it runs."""

    sequence: int
    task_id: Optional[int]
    attempts: int
    timeout_s: float


def create(context):
    """Return a new shared array for one worker process (from a multiprocessing context)."""
    return context.RawArray("q", SLOTS)


def publish(state, task_id: Optional[int], attempts: int = 0, timeout_s: float = 0.0) -> None:
    """Record the task this worker process starts now, or None when it goes idle."""
    state[_SEQUENCE] += 1  # odd: a reader retries until the write below is complete
    state[_TASK_ID] = task_id or 0
    state[_ATTEMPTS] = attempts
    state[_TIMEOUT_US] = int(round(timeout_s * 1_000_000))
    state[_SEQUENCE] += 1


def read(state) -> RunningTask:
    """Return a consistent snapshot of what the worker process published last."""
    while True:
        before = state[_SEQUENCE]
        if before % 2 == 0:
            task_id, attempts, timeout_us = state[_TASK_ID], state[_ATTEMPTS], state[_TIMEOUT_US]
            if state[_SEQUENCE] == before:
                return RunningTask(before, task_id or None, attempts, timeout_us / 1_000_000)
