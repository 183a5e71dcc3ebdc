"""litequeue: a task queue stored in one SQLite file, with supervised worker processes."""

from .version import __version__
from .errors import (
    ConnectionProcessError, DatabaseError, InvalidArgsError, InvalidOptionError, InvalidTaskError,
    LitequeueError, PayloadTooLargeError, TaskNotAllowedError, TaskNotFoundError, TaskStateError,
    TaskWaitTimeout, UnsupportedPlatformError,
)
from .status import Task, TaskStatus
from .queue import Queue, create_task
from .embedded import Worker

__all__ = [
    "__version__", "Queue", "Task", "TaskStatus", "Worker", "create_task",
    "LitequeueError", "ConnectionProcessError", "DatabaseError", "InvalidArgsError",
    "InvalidOptionError", "InvalidTaskError", "PayloadTooLargeError", "TaskNotAllowedError",
    "TaskNotFoundError", "TaskStateError", "TaskWaitTimeout", "UnsupportedPlatformError",
]

from .errors import InvalidScheduleError

__all__.append("InvalidScheduleError")
