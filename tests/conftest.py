"""Shared fixtures: real database files under tmp_path and real supervisor processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List

import pytest

import litequeue
from litequeue.connection import Database

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent
# Task functions and observer modules live in tests/helpers, importable here and in workers.
sys.path.insert(0, str(TESTS_DIR / "helpers"))

# Every wait in the suite is bounded by this one deadline.
DEADLINE_S = 30.0

# Short intervals so that process tests finish quickly; each test may override them.
FAST_WORKER_OPTIONS = [
    "--poll-interval-s", "0.2",
    "--orphan-check-interval-s", "0.5",
    "--heartbeat-interval-s", "0.2",
    "--lease-s", "1.0",
    "--abort-grace-s", "1.0",
    "--retry-delay-s", "0.2",
    "--log-level", "DEBUG",
]


def wait_for(condition: Callable[[], object], timeout_s: float = DEADLINE_S, message: str = "condition") -> object:
    """Poll ``condition`` until it returns a true value, failing the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    pause_s = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {message}")
        time.sleep(pause_s)
        pause_s = min(pause_s * 1.5, 0.1)


def subprocess_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR / "helpers"), str(REPO_DIR)])
    env.pop("LITEQUEUE_ALLOWED_TASKS", None)
    env.pop("LITEQUEUE_TASK_TIMEOUT", None)
    env.update(extra or {})
    return env


class Supervisor:
    """A ``python -m litequeue worker`` process started by a test, in its own session."""

    def __init__(self, db_path: Path, args: List[str], env: dict, log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "litequeue", "worker", "--db", str(db_path), *args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid = self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> List[int]:
        """PIDs of this supervisor's live worker processes (its direct children)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            return []

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill_group(self) -> None:
        """SIGKILL the supervisor together with its worker processes."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(DEADLINE_S)

    def wait(self, timeout_s: float = DEADLINE_S) -> int:
        return self.process.wait(timeout_s)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill_group()
        else:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # worker processes left behind
            except ProcessLookupError:
                pass
        self._log.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
def queue(db_path: Path):
    q = litequeue.Queue(db_path)
    yield q
    q.close()


@pytest.fixture
def db(db_path: Path, queue):
    """A second, low-level connection to the same file, for driving the storage layer."""
    database = Database(db_path)
    yield database
    database.close()


@pytest.fixture
def events_path(tmp_path: Path) -> Path:
    return tmp_path / "events.jsonl"


@pytest.fixture
def start_supervisor(db_path: Path, tmp_path: Path, events_path: Path):
    """Start supervisors on ``db_path``; every one is killed with its group at teardown."""
    started: List[Supervisor] = []

    def start(*args: str, fast: bool = True, env: dict | None = None, db: Path | None = None) -> Supervisor:
        options = list(FAST_WORKER_OPTIONS if fast else []) + list(args)
        environment = subprocess_env({"LITEQUEUE_TEST_EVENTS": str(events_path), **(env or {})})
        supervisor = Supervisor(db or db_path, ["--import", "recorder", *options], environment,
                                tmp_path / f"supervisor-{len(started)}.log")
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        supervisor.close()


def run_as_unprivileged_user(function: Callable[[], str]) -> str:
    """Run ``function`` in a forked child and return the string it returns.

    When the tests run as root, the child first switches to the unprivileged user 65534, so
    that it meets the permission errors an ordinary user would. An exception in ``function``
    comes back as "ExceptionName: message".
    """
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_fd)
            if os.getuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                answer = function()
            except Exception as exc:  # reported to the test, which checks it
                answer = f"{type(exc).__name__}: {exc}"
            os.write(write_fd, answer.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as reader:
        answer = reader.read()
    os.waitpid(child, 0)
    return answer


def read_events(events_path: Path) -> List[dict]:
    """Observer events written by tests/helpers/recorder.py, in the order they were written."""
    if not events_path.exists():
        return []
    return [json.loads(line) for line in events_path.read_text().splitlines() if line.strip()]


def events_for(events_path: Path, task_id: int) -> List[str]:
    return [event["event"] for event in read_events(events_path) if event["task_id"] == task_id]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
