"""Run a supervisor from inside an application: :class:`Worker`."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import sys
from typing import Iterable, Optional, Sequence, Union

from .connection import default_path
from .errors import InvalidOptionError, LitequeueError

logger = logging.getLogger(__name__)

# Seconds stop() waits for the supervisor beyond grace_s before it forces the stop.
_STOP_MARGIN_S = 10.0


class Worker:
    """A supervisor and its worker processes, started from an application.

    The supervisor runs as a child process (``python -m litequeue worker``), so task code
    never shares the application's process. It stops when :meth:`stop` is called, when the
    application exits normally, and when the application dies (even by SIGKILL): its worker
    processes then finish their current task and exit.

    Args:
        queue_or_path: A :class:`~litequeue.Queue`, a database path, or None for the default.
        concurrency: Number of worker processes.
        queues: Queue names to serve, in priority order.
        imports: Modules to import in the supervisor and worker processes (observers).
        timeout_s: Default task timeout in seconds (0 disables); None keeps the worker default.
        grace_s: Seconds running tasks get to finish when stopping.
        extra_args: More ``litequeue worker`` options, such as ``["--poll-interval-s", "0.5"]``.
        env: Environment for the supervisor; None inherits the application's.
        log_path: File that receives the supervisor's log; None inherits stderr.
    """

    def __init__(
        self,
        queue_or_path=None,
        *,
        concurrency: int = 2,
        queues: Sequence[str] = ("default",),
        imports: Iterable[str] = (),
        timeout_s: Optional[float] = None,
        grace_s: float = 30.0,
        extra_args: Sequence[str] = (),
        env: Optional[dict] = None,
        log_path: Union[str, os.PathLike, None] = None,
    ):
        path = getattr(queue_or_path, "path", None) or queue_or_path or default_path()
        self.db_path = os.path.abspath(os.fspath(path))
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidOptionError(f"invalid concurrency {concurrency!r}: use an integer >= 1")
        self.grace_s = float(grace_s)
        self.command = [sys.executable, "-m", "litequeue", "worker", "--db", self.db_path,
                        "--concurrency", str(concurrency), "--grace-s", str(self.grace_s), "--exit-with-parent"]
        for name in queues:
            self.command += ["--queue", name]
        for module in imports:
            self.command += ["--import", module]
        if timeout_s is not None:
            self.command += ["--timeout-s", str(timeout_s)]
        self.command += list(extra_args)
        self.env = env
        self.log_path = log_path
        self._process: Optional[subprocess.Popen] = None
        self._log_file = None

    @property
    def pid(self) -> Optional[int]:
        """The supervisor's PID while it runs."""
        return self._process.pid if self._process else None

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> "Worker":
        """Start the supervisor and return self. Raises LitequeueError if already running."""
        if self.is_alive():
            raise LitequeueError(f"worker for {self.db_path} is already running (PID {self.pid})")
        output = None
        if self.log_path is not None:
            self._log_file = open(self.log_path, "ab")
            output = self._log_file
        self._process = subprocess.Popen(self.command, env=self.env, stdout=output, stderr=output)
        atexit.register(self._stop_at_exit)
        logger.info("started litequeue supervisor PID %s for %s", self._process.pid, self.db_path)
        return self

    def stop(self, grace_s: Optional[float] = None) -> Optional[int]:
        """Stop the supervisor and return its exit code (None if it never started).

        Running tasks get ``grace_s`` seconds (default: the grace given at construction) to
        finish; what is still running then goes back to queued without spending an attempt.
        """
        if self._process is None:
            return None
        grace_s = self.grace_s if grace_s is None else grace_s
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(grace_s + _STOP_MARGIN_S)
            except subprocess.TimeoutExpired:
                logger.warning("supervisor %s did not stop within %g s; sending a second SIGTERM",
                               self._process.pid, grace_s + _STOP_MARGIN_S)
                self._process.send_signal(signal.SIGTERM)
                try:
                    self._process.wait(_STOP_MARGIN_S)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
        atexit.unregister(self._stop_at_exit)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self._process.returncode

    def _stop_at_exit(self) -> None:
        self.stop()

    def __enter__(self) -> "Worker":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"PID {self.pid}" if self.is_alive() else "stopped"
        return f"Worker({self.db_path!r}, {state})"
