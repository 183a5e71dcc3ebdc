"""Helpers shared by the benchmark modules: timing, statistics, child processes and /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCHMARKS_DIR.parent

# How often the benchmark process checks whether a drain has finished.
DRAIN_POLL_INTERVAL_S = 0.05
# How long a stopped supervisor or consumer may take to exit before it is killed.
STOP_TIMEOUT_S = 30.0


class BenchmarkError(RuntimeError):
    """Raised when a measurement cannot complete (a process died, a drain timed out)."""


def worker_env() -> dict:
    """Return the environment for worker processes: bench_tasks and litequeue importable."""
    env = dict(os.environ)
    paths = [str(BENCHMARKS_DIR), str(REPO_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("LITEQUEUE_ALLOWED_TASKS", None)
    env.pop("LITEQUEUE_TASK_TIMEOUT", None)
    return env


def rate(count: int, seconds: float) -> float:
    """Return events per second; a zero duration (a clock too coarse) returns infinity."""
    return count / seconds if seconds > 0 else float("inf")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the ``fraction`` quantile (0..1) with linear interpolation between ranks."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str,
               process: Optional["ManagedProcess"] = None) -> float:
    """Poll ``condition`` every DRAIN_POLL_INTERVAL_S and return time.monotonic() when it holds.

    Raises BenchmarkError when ``timeout_s`` passes first or when ``process`` exits.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return time.monotonic()
        if process is not None and process.exited():
            raise BenchmarkError(f"{process.name} exited with code {process.popen.returncode} "
                                 f"while waiting for {what}; its log:\n{process.log_tail()}")
        if time.monotonic() > deadline:
            tail = f"; log of {process.name}:\n{process.log_tail()}" if process else ""
            raise BenchmarkError(f"timed out after {timeout_s:g} s waiting for {what}{tail}")
        time.sleep(DRAIN_POLL_INTERVAL_S)


class ManagedProcess:
    """A supervisor or consumer started in its own session, so its whole group can be killed."""

    def __init__(self, name: str, command: List[str], log_path: Path, env: dict):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.started_at = time.monotonic()
        self.popen = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(log_path.parent),
        )
        self.pid = self.popen.pid

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum``, wait up to STOP_TIMEOUT_S, then SIGKILL whatever is left of the group."""
        if not self.exited():
            self.popen.send_signal(signum)
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.popen.poll() is None:
            self.popen.wait(STOP_TIMEOUT_S)
        self._log.close()

    def __enter__(self) -> "ManagedProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_litequeue_supervisor(db_path: Path, synchronous: str, concurrency: int = 2) -> ManagedProcess:
    command = [sys.executable, "-m", "litequeue", "worker", "--db", str(db_path),
               "--concurrency", str(concurrency), "--synchronous", synchronous]
    log_path = db_path.with_name(db_path.name + ".supervisor.log")
    return ManagedProcess("litequeue supervisor", command, log_path, worker_env())


# --- /proc ------------------------------------------------------------------------------------

def child_pids(pid: int) -> List[int]:
    """Return the PIDs of the direct children of ``pid`` (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [int(value) for value in text.split()]


def process_tree(pid: int) -> List[int]:
    """Return ``pid`` and all its descendants."""
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        pids.append(current)
        pending.extend(child_pids(current))
    return pids


def cpu_seconds(pids: Sequence[int]) -> float:
    """Return the user plus system CPU time of ``pids``, in seconds, from /proc/<pid>/stat."""
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    total_ticks = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # The command name in brackets may contain spaces, so split after its closing bracket.
        fields = text.rsplit(")", 1)[1].split()
        utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
        total_ticks += utime + stime
    return total_ticks / ticks_per_s


def peak_rss_bytes(pid: int) -> Optional[int]:
    """Return the peak resident set size (VmHWM) of ``pid`` in bytes, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # the kernel reports kB
    return None


def proc_available() -> bool:
    return Path("/proc/self/stat").exists()
