"""Settings shared by the supervisor and its worker processes, with their checks."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Tuple

from .errors import InvalidOptionError
from .execution import DEFAULT_MAX_LOG_BYTES, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_RESULT_BYTES
from .monitor import DEFAULT_LEASE_S
from .retention import DEFAULT_RETENTION_S
from .validation import check_seconds

TASK_TIMEOUT_ENV = "LITEQUEUE_TASK_TIMEOUT"
DEFAULT_TASK_TIMEOUT_S = 3600.0


def default_task_timeout_s() -> float:
    """Return the default task timeout: LITEQUEUE_TASK_TIMEOUT, else 3600 s (0 disables)."""
    raw = os.environ.get(TASK_TIMEOUT_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_TASK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise InvalidOptionError(
            f"invalid {TASK_TIMEOUT_ENV}={raw!r}: use a number of seconds (0 disables timeouts)"
        ) from None
    return check_seconds(TASK_TIMEOUT_ENV, value)


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    """Everything a supervisor and its worker processes need; picklable for spawn."""

    db_path: str
    queues: Tuple[str, ...] = ("default",)
    concurrency: int = 2
    synchronous: str = "FULL"
    busy_timeout_s: float = 10.0
    timeout_s: float = DEFAULT_TASK_TIMEOUT_S  # 0 disables
    grace_s: float = 30.0
    abort_grace_s: float = 2.0
    imports: Tuple[str, ...] = ()
    allow: Optional[Tuple[str, ...]] = None
    allow_setting: str = "LITEQUEUE_ALLOWED_TASKS"
    max_tasks_per_child: int = 0  # 0: no limit
    poll_interval_s: float = 1.0
    orphan_check_interval_s: float = 5.0
    heartbeat_interval_s: float = 5.0
    lease_s: float = DEFAULT_LEASE_S
    retry_base_s: float = 1.0
    retry_max_s: float = 3600.0
    start_method: Optional[str] = None
    log_level: int = 20
    max_log_bytes: int = DEFAULT_MAX_LOG_BYTES
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    # Stop (as after a first SIGTERM) when the process that started the supervisor exits.
    exit_with_parent: bool = False
    # Seconds the storage layer keeps retrying a terminal write before the worker process exits.
    terminal_write_deadline_s: float = 30.0
    # Seconds finished tasks are kept before the supervisor's periodic purge deletes them; 0 disables it.
    retention_s: float = DEFAULT_RETENTION_S

    def __post_init__(self):
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise InvalidOptionError(f"invalid concurrency {self.concurrency!r}: use an integer >= 1")
        if not self.queues:
            raise InvalidOptionError("no queue given: name at least one queue to serve")
        if isinstance(self.max_tasks_per_child, bool) or not isinstance(self.max_tasks_per_child, int) \
                or self.max_tasks_per_child < 0:
            raise InvalidOptionError(
                f"invalid max_tasks_per_child {self.max_tasks_per_child!r}: use an integer >= 0 (0: no limit)"
            )
        for name in ("timeout_s", "grace_s", "abort_grace_s", "retry_base_s", "retry_max_s",
                     "terminal_write_deadline_s", "retention_s"):
            check_seconds(name, getattr(self, name))
        for name in ("max_log_bytes", "max_output_bytes", "max_result_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidOptionError(f"invalid {name} {value!r}: use a positive number of bytes")
        for name in ("poll_interval_s", "orphan_check_interval_s", "heartbeat_interval_s", "lease_s"):
            if not check_seconds(name, getattr(self, name)) > 0:
                raise InvalidOptionError(f"invalid {name} {getattr(self, name)!r}: use a number of seconds > 0")
        if self.lease_s < 2 * self.heartbeat_interval_s:
            raise InvalidOptionError(
                f"invalid lease_s {self.lease_s:g}: it must be at least twice heartbeat_interval_s "
                f"({self.heartbeat_interval_s:g}), or live workers would be taken for dead between heartbeats"
            )
        if self.start_method not in (None, "fork", "forkserver", "spawn"):
            raise InvalidOptionError(
                f"invalid start method {self.start_method!r}: use fork, forkserver or spawn"
            )
