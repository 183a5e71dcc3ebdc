"""Task status values and the :class:`Task` record."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Optional


class TaskStatus(str, enum.Enum):
    """Status of a task, stored in the database as the value string."""

    #: Waiting to be claimed once ``run_at`` has passed.
    QUEUED = "queued"
    #: Claimed by a worker process, which is running it.
    PROGRESS = "progress"
    #: Ran and returned; ``result`` contains the return value.
    COMPLETED = "completed"
    #: Failed for good; ``error`` contains the reason.
    FAILED = "failed"
    #: Cancelled on request; it will not run (again) unless requeued.
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


FINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


@dataclasses.dataclass(frozen=True)
class Task:
    """One stored task. Times are Unix times in seconds (``float``), or ``None`` when unset."""

    QUEUED = TaskStatus.QUEUED
    PROGRESS = TaskStatus.PROGRESS
    COMPLETED = TaskStatus.COMPLETED
    FAILED = TaskStatus.FAILED
    CANCELLED = TaskStatus.CANCELLED

    id: int
    queue: str
    task: str
    args: dict
    status: TaskStatus
    priority: int
    run_at: float
    created: float
    modified: float
    started: Optional[float]
    finished: Optional[float]
    attempts: int
    max_retries: int
    timeout_s: Optional[float]
    worker_pid: Optional[int]
    worker_host: Optional[str]
    result: Any
    output: str
    log: str
    error: Optional[str]
    unique_key: Optional[str] = None
    #: How many tasks this one still waits for (``after=``); it is claimed only at 0.
    waiting_on: int = 0

    @property
    def is_final(self) -> bool:
        """Whether the task reached completed, failed or cancelled."""
        return self.status in FINAL_STATUSES

    def to_dict(self) -> dict:
        """Return the task as a dict of JSON-encodable values."""
        record = dataclasses.asdict(self)
        record["status"] = self.status.value
        return record
