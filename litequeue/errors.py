"""Exceptions raised by litequeue. Every class derives from :class:`LitequeueError`."""


class LitequeueError(Exception):
    """Base class of every error that litequeue raises on purpose."""


class InvalidTaskError(LitequeueError, ValueError):
    """Raised when a task path or task callable cannot name an importable function."""


class InvalidArgsError(LitequeueError, TypeError, ValueError):
    """Raised when task args are not a dict of JSON-encodable values."""


class PayloadTooLargeError(InvalidArgsError):
    """Raised when encoded args exceed the configured or SQLite size limit."""


class InvalidOptionError(LitequeueError, ValueError):
    """Raised when an option such as a priority, delay, timeout or queue name is invalid."""


class TaskNotAllowedError(LitequeueError):
    """Raised when a task path does not match the allow-list (LITEQUEUE_ALLOWED_TASKS or --allow)."""


class TaskNotFoundError(LitequeueError, LookupError):
    """Raised when no task has the given id."""


class TaskStateError(LitequeueError):
    """Raised when a task is not in a state that allows the requested change."""


class TaskWaitTimeout(LitequeueError, TimeoutError):
    """Raised when :meth:`Queue.wait` gives up before the task reached a final status."""


class DatabaseError(LitequeueError):
    """Raised when the database file cannot be opened, read or written."""


class ConnectionProcessError(LitequeueError):
    """Raised when a connection is used in a process other than the one that opened it."""


class UnsupportedPlatformError(LitequeueError):
    """Raised when a feature cannot work on this operating system."""


class InvalidScheduleError(InvalidOptionError):
    """Raised when a periodic schedule, its cron expression or its time zone is invalid."""
