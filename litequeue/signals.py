"""Observer lists for task events.

Connect a receiver with ``on_failure.connect(fn)``. Receivers are called with keyword
arguments: ``task=`` (a :class:`~litequeue.Task`), plus ``error=`` (a message) for
``on_failure`` and ``on_retry``. A receiver that raises is logged with its name and the task
id; it never changes the task's outcome and never stops a process.

Where each event fires, exactly once:

- ``before_job``, ``on_success``, ``before_loop``, ``after_loop``: in the worker process.
- ``on_failure``, ``on_retry`` after an exception in the task function: in the worker process.
- ``on_failure``, ``on_retry`` after a timeout, a worker process exit or an orphan: in the
  supervisor (or the process calling :mod:`litequeue.monitor`) that recorded it.
"""

from __future__ import annotations

import logging
from typing import Callable, List

logger = logging.getLogger(__name__)


class Signal:
    """A named list of receivers, called in the order they were connected."""

    def __init__(self, name: str):
        self.name = name
        self._receivers: List[Callable] = []

    def connect(self, receiver: Callable) -> Callable:
        """Add ``receiver`` (once) and return it, so this works as a decorator."""
        if not callable(receiver):
            raise TypeError(f"cannot connect {receiver!r} to {self.name}: receivers must be callable")
        if receiver not in self._receivers:
            self._receivers.append(receiver)
        return receiver

    def disconnect(self, receiver: Callable) -> None:
        """Remove ``receiver``; removing one that is not connected does nothing."""
        if receiver in self._receivers:
            self._receivers.remove(receiver)

    @property
    def receivers(self) -> List[Callable]:
        return list(self._receivers)

    def send(self, **kwargs) -> None:
        """Call every receiver with ``kwargs``, logging (never raising) their exceptions."""
        for receiver in list(self._receivers):
            try:
                receiver(**kwargs)
            except Exception:
                task = kwargs.get("task")
                logger.exception(
                    "%s receiver %s raised for task %s; the task's outcome is unchanged",
                    self.name, _name_of(receiver), getattr(task, "id", None),
                )

    def __repr__(self) -> str:
        return f"<Signal {self.name} receivers={len(self._receivers)}>"


def _name_of(receiver: Callable) -> str:
    module = getattr(receiver, "__module__", None)
    qualname = getattr(receiver, "__qualname__", None) or repr(receiver)
    return f"{module}.{qualname}" if module else qualname


before_job = Signal("before_job")
on_success = Signal("on_success")
on_failure = Signal("on_failure")
on_retry = Signal("on_retry")
before_loop = Signal("before_loop")
after_loop = Signal("after_loop")
