"""Running one task function inside a worker process, and turning its outcome into a record.

No database transaction is open while user code runs. Generator output goes to an
``OutputSink`` that saves it in batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import io
import time
import traceback
from typing import Any, Callable, Optional

from . import signals
from .errors import TaskNotAllowedError
from .status import Task
from .storage import previous_attempt_section
from .validation import check_allowed, to_json

DEFAULT_MAX_LOG_BYTES = 1024 * 1024
DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_RESULT_BYTES = 16 * 1024 * 1024

# Output is saved when this many items are waiting, or this long after the first one.
OUTPUT_BATCH_ITEMS = 64
OUTPUT_BATCH_S = 0.5


class TaskAborted(BaseException):
    """Raised inside a task function when its supervisor stops it (timeout or cancel).

    It derives from BaseException so that ``except Exception`` in task code does not
    swallow it. Code that swallows it anyway is killed after the grace period.
    """


class OutputLimitExceeded(Exception):
    """Raised when a generator task yields more output than the configured limit."""


@dataclasses.dataclass
class Outcome:
    """The outcome of running a task, ready to be written."""

    succeeded: bool
    result_json: Optional[str] = None
    error: Optional[str] = None
    log: str = ""


class LimitedTextBuffer(io.TextIOBase):
    """A text stream that keeps at most ``max_bytes`` (UTF-8) and marks what it dropped."""

    def __init__(self, max_bytes: int, prefix: str = ""):
        super().__init__()
        self.max_bytes = max_bytes
        self._prefix = prefix  # put before the captured text and not counted against max_bytes
        self._parts: list = []
        self._size = 0
        self._dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        size = len(text.encode("utf-8", "surrogatepass"))
        room = self.max_bytes - self._size
        if size <= room:
            self._parts.append(text)
            self._size += size
        else:
            if room > 0:
                kept = text.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
                self._parts.append(kept)
                self._size = self.max_bytes
            self._dropped += size - max(room, 0)
        return len(text)

    def getvalue(self) -> str:
        text = self._prefix + "".join(self._parts)
        if self._dropped:
            text += f"\n[litequeue: {self._dropped} more bytes of log dropped at the {self.max_bytes}-byte limit]\n"
        return text


_imported_functions: dict = {}


def import_task_function(path: str) -> Callable:
    """Import the callable named by a dotted path, or raise ImportError / TypeError saying why.

    Functions that imported once are kept, so a worker process resolves each path once.
    """
    function = _imported_functions.get(path)
    if function is None:
        function = _imported_functions[path] = _import_task_function(path)
    return function


def _import_task_function(path: str) -> Callable:
    parts = path.split(".")
    module = None
    attribute_path: list = []
    # Import the longest prefix that is a module; the rest are attributes (Class.method).
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name) and split > 1:
                continue
            raise ImportError(
                f"cannot import task {path!r}: {exc} (the worker imports from its working directory "
                "and PYTHONPATH)"
            ) from exc
        attribute_path = parts[split:]
        break
    if module is None:
        raise ImportError(f"cannot import task {path!r}: no module found")
    target: Any = module
    for name in attribute_path:
        try:
            target = getattr(target, name)
        except AttributeError:
            raise ImportError(
                f"cannot import task {path!r}: {getattr(target, '__name__', target)!s} has no attribute {name!r}"
            ) from None
    if not callable(target):
        raise TypeError(f"task {path!r} is not callable: it is a {type(target).__name__}")
    return target


class OutputSink:
    """Collects generator items and saves them in batches through ``save(text) -> bool``."""

    def __init__(self, save: Callable[[str], bool], max_bytes: int, clock: Callable[[], float] = time.monotonic):
        self._save = save
        self._clock = clock
        self.max_bytes = max_bytes
        self._pending: list = []
        self._first_pending_at = 0.0
        self._size = 0

    def add(self, item: str) -> None:
        size = len(item.encode("utf-8", "surrogatepass"))
        if self._size + size > self.max_bytes:
            raise OutputLimitExceeded(
                f"Task output exceeded the limit of {self.max_bytes} bytes; yield less, or write "
                "large data to a file and yield its path"
            )
        self._size += size
        if not self._pending:
            self._first_pending_at = self._clock()
        self._pending.append(item)
        if len(self._pending) >= OUTPUT_BATCH_ITEMS or self._clock() - self._first_pending_at >= OUTPUT_BATCH_S:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            text = "".join(self._pending)
            self._pending = []
            self._save(text)


def run_task(
    task: Task,
    *,
    allowed: Optional[list],
    allow_setting: str,
    sink: OutputSink,
    max_log_bytes: int = DEFAULT_MAX_LOG_BYTES,
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    abortable: Callable[[bool], None] = lambda enabled: None,
) -> Outcome:
    """Run ``task`` and return its outcome. Only TaskAborted and SystemExit propagate.

    ``abortable(True)`` is called while user code runs, so that an abort signal raises
    TaskAborted only there and never inside litequeue's own database writes.
    """
    # A requeued task's log starts with its previous attempt, which this attempt's log keeps.
    log = LimitedTextBuffer(max_log_bytes, prefix=previous_attempt_section(task.log))
    try:
        check_allowed(task.task, allowed, allow_setting)
        function = import_task_function(task.task)
    except (TaskNotAllowedError, ImportError, TypeError) as exc:
        return Outcome(False, error=_describe_exception(exc), log=log.getvalue())

    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            abortable(True)
            try:
                value = _call(function, task, sink)
            finally:
                abortable(False)
        sink.flush()
    except (TaskAborted, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - a task's failure is recorded, whatever it raised
        with contextlib.suppress(Exception):
            sink.flush()
        return Outcome(False, error=_describe_exception(exc), log=log.getvalue())
    return _encode_result(value, log.getvalue(), max_result_bytes)


def _call(function: Callable, task: Task, sink: OutputSink) -> Any:
    # asyncio is imported only for async tasks: importing it adds about 9 MiB to every
    # worker process (measured on CPython 3.11).
    if inspect.iscoroutinefunction(function):
        import asyncio

        return asyncio.run(function(**task.args))
    value = function(**task.args)
    if inspect.iscoroutine(value):
        import asyncio

        return asyncio.run(value)
    if inspect.isgenerator(value):
        return _stream(value, task, sink)
    return value


def _stream(generator, task: Task, sink: OutputSink) -> None:
    """Consume a generator task, saving each item to the output. Its return value is kept."""
    try:
        while True:
            try:
                item = next(generator)
            except StopIteration as stop:
                return stop.value
            text = item if isinstance(item, str) else str(item)
            signals.before_loop.send(task=task, item=text)
            sink.add(text)
            signals.after_loop.send(task=task, item=text)
    finally:
        generator.close()


def _encode_result(value: Any, log: str, max_bytes: int) -> Outcome:
    try:
        text = to_json(value)
    except (TypeError, ValueError, RecursionError) as exc:
        return Outcome(False, error=(
            f"Task returned a value that JSON cannot encode ({type(value).__name__}): {exc}; "
            "return only JSON values (dict, list, str, int, finite float, bool, None)"
        ), log=log)
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        return Outcome(False, error=(
            f"Task result is {size} bytes as JSON, over the limit of {max_bytes} bytes; "
            "write large results to a file and return its path"
        ), log=log)
    return Outcome(True, result_json=text, log=log)


def _describe_exception(exc: BaseException) -> str:
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"{exc!r}\n{trace}"
