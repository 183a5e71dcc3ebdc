"""Wake idle worker processes when a task is enqueued, through a named pipe (FIFO).

Idle worker processes wait on the FIFO ``<database>-litequeue.wake`` with a timeout, and
``enqueue`` writes one byte to it after its commit. The byte is only a hint: a worker that
wakes runs a read-only check, and polling on the timeout remains the fallback (other hosts,
Windows, a full pipe).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import stat
import time
from typing import Optional

logger = logging.getLogger(__name__)

# After a failed open (no worker is listening), the notifier tries again after this long.
_REOPEN_INTERVAL_S = 0.5


def fifo_path(db_path: str) -> str:
    return db_path + "-litequeue.wake"


def signal_wakeup_pipe() -> int:
    """Route signal wake-ups to a new non-blocking pipe and return its read end.

    Handlers only set flags, so a process waiting in select() includes this descriptor to
    wake as soon as a signal arrives instead of at its next timeout.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    return read_fd


class Notifier:
    """The enqueue side: writes a wake-up byte, and never blocks or raises."""

    def __init__(self, db_path: str):
        self.path = fifo_path(db_path)
        self._fd: Optional[int] = None
        self._pid = os.getpid()
        self._next_open_at = 0.0

    def notify(self) -> None:
        if not hasattr(os, "mkfifo"):
            return
        if self._pid != os.getpid():
            self._fd, self._pid = None, os.getpid()
        fd = self._fd if self._fd is not None else self._open()
        if fd is None:
            return
        try:
            os.write(fd, b"\x01")
        except BlockingIOError:
            pass  # The pipe is full of earlier wake-ups: the workers are awake already.
        except OSError:
            # No reader is left (EPIPE), or the FIFO changed: open it again next time.
            self._close()

    def _open(self) -> Optional[int]:
        now = time.monotonic()
        if now < self._next_open_at:
            return None
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            if exc.errno not in (errno.ENXIO, errno.ENOENT):
                logger.debug("cannot open wake-up FIFO %s: %s", self.path, exc)
            self._next_open_at = now + _REOPEN_INTERVAL_S
            return None
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
            self._next_open_at = time.monotonic() + _REOPEN_INTERVAL_S


class Listener:
    """The worker side: waits until a wake-up byte arrives or a timeout passes."""

    def __init__(self, db_path: str):
        self.path = fifo_path(db_path)
        self._fd: Optional[int] = None
        if hasattr(os, "mkfifo"):
            self._fd = self._open()

    def _open(self) -> Optional[int]:
        try:
            os.mkfifo(self.path, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            logger.warning("cannot create wake-up FIFO %s (%s); idle workers will poll", self.path, exc)
            return None
        try:
            if not stat.S_ISFIFO(os.stat(self.path).st_mode):
                logger.warning("%s exists and is not a FIFO; idle workers will poll", self.path)
                return None
            # Read-write, so the FIFO always has a writer and never reports end-of-file.
            return os.open(self.path, os.O_RDWR | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            logger.warning("cannot open wake-up FIFO %s (%s); idle workers will poll", self.path, exc)
            return None

    def fileno(self) -> Optional[int]:
        return self._fd

    def wait(self, timeout_s: float, extra_fd: Optional[int] = None) -> bool:
        """Wait up to ``timeout_s`` for a wake-up byte, or for ``extra_fd`` to become readable
        (a signal's wake-up pipe). Return True when a wake-up byte arrived."""
        fds = [fd for fd in (self._fd, extra_fd) if fd is not None]
        if not fds:
            time.sleep(max(0.0, timeout_s))
            return False
        try:
            ready, _, _ = select.select(fds, [], [], max(0.0, timeout_s))
        except InterruptedError:
            return False
        if extra_fd is not None and extra_fd in ready:
            _drain(extra_fd)
        if self._fd is not None and self._fd in ready:
            _drain(self._fd)
            return True
        return False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
