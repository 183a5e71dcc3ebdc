"""Raw SQLite baselines: what Python's sqlite3 does with a minimal task table and no queue code.

Each function creates a fresh database file at the path it is given, in WAL mode at the
requested ``synchronous`` level, and returns a rate in tasks per second.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

from common import BenchmarkError, rate

TASK_PATH = "bench_tasks.noop"
BUSY_TIMEOUT_S = 10.0
# How long the raw claim processes may take to drain their queue.
JOIN_TIMEOUT_S = 600.0

SCHEMA = """
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY,
    task TEXT NOT NULL,
    args TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    result TEXT
);
CREATE INDEX tasks_queued ON tasks (id) WHERE status = 'queued';
"""

INSERT = "INSERT INTO tasks (task, args, status, created) VALUES (?, ?, 'queued', ?)"

CLAIM = """
UPDATE tasks SET status = 'progress', started = ?
WHERE id = (SELECT id FROM tasks WHERE status = 'queued' ORDER BY id LIMIT 1)
RETURNING id, task, args
"""

COMPLETE = "UPDATE tasks SET status = 'completed', finished = ?, result = ? WHERE id = ? AND status = 'progress'"


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


def create_database(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = connect(path, synchronous)
    conn.executescript(SCHEMA)
    return conn


def measure_single_inserts(path: Path, synchronous: str, count: int) -> float:
    """Insert ``count`` rows, each in its own autocommit transaction, and return rows per second."""
    conn = create_database(path, synchronous)
    started = time.perf_counter()
    for _ in range(count):
        conn.execute(INSERT, (TASK_PATH, "{}", time.time()))
    elapsed = time.perf_counter() - started
    conn.close()
    return rate(count, elapsed)


def measure_batched_inserts(path: Path, synchronous: str, count: int, batch_size: int) -> float:
    """Insert ``count`` rows in transactions of ``batch_size`` rows and return rows per second."""
    conn = create_database(path, synchronous)
    started = time.perf_counter()
    for offset in range(0, count, batch_size):
        now = time.time()
        rows = [(TASK_PATH, "{}", now) for _ in range(min(batch_size, count - offset))]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return rate(count, elapsed)


def _claim_and_complete(path: str, synchronous: str, ready, start) -> None:
    """Claim and complete tasks, one transaction each, until none is queued (a child process)."""
    conn = connect(Path(path), synchronous)
    ready.release()
    start.wait()
    while True:
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(CLAIM, (time.time(),)).fetchone()
        conn.execute("COMMIT")
        if row is None:
            break
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(COMPLETE, (time.time(), "null", row[0]))
        conn.execute("COMMIT")
    conn.close()


def _wait_until_ready(ready, children) -> None:
    """Wait until every child has connected; raise BenchmarkError if one exits first."""
    for _ in children:
        while not ready.acquire(timeout=0.1):
            dead = [child.exitcode for child in children if child.exitcode is not None]
            if dead:
                raise BenchmarkError(f"a raw claim process exited with code {dead[0]} before it connected")


def measure_claim_and_complete(path: Path, synchronous: str, count: int, processes: int = 2) -> float:
    """Drain ``count`` queued rows with ``processes`` processes and return tasks per second.

    Each task costs two write transactions: the claim (``UPDATE ... WHERE id = (SELECT ...
    LIMIT 1) RETURNING``) and the completion. The clock starts once every process has opened
    its connection, so process start-up is not counted.
    """
    conn = create_database(path, synchronous)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(INSERT, ((TASK_PATH, "{}", time.time()) for _ in range(count)))
    conn.execute("COMMIT")

    context = multiprocessing.get_context()
    ready = context.Semaphore(0)
    start = context.Event()
    children = [context.Process(target=_claim_and_complete, args=(str(path), synchronous, ready, start))
                for _ in range(processes)]
    for child in children:
        child.start()
    try:
        _wait_until_ready(ready, children)
        started = time.perf_counter()
        start.set()
        for child in children:
            child.join(JOIN_TIMEOUT_S)
        elapsed = time.perf_counter() - started
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()

    failed = [child.exitcode for child in children if child.exitcode != 0]
    completed = conn.execute("SELECT count(*) FROM tasks WHERE status = 'completed'").fetchone()[0]
    conn.close()
    if failed or completed != count:
        raise BenchmarkError(f"raw claim baseline completed {completed} of {count} tasks; "
                             f"child exit codes {failed}")
    return rate(count, elapsed)
