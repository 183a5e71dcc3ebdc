"""Raw SQLite baselines: what Python's sqlite3 does without any queue code.

Most functions use a minimal task table. measure_schema_single_inserts and
measure_schema_finish_and_claim run litequeue's own statements on litequeue's own schema,
from a plain sqlite3 connection with the settings that litequeue.connection applies, so they
measure what that schema costs without litequeue's Python code. Each function creates a fresh
database file at the path it is given, in WAL mode at the requested ``synchronous`` level.
The ``measure_`` functions return a rate in tasks per second, except measure_wal_frames.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import litequeue
from litequeue import sql as litequeue_sql
from litequeue.connection import (
    CHECKPOINT_THRESHOLD_BYTES, CHECKPOINT_WAIT_S, JOURNAL_SIZE_LIMIT_BYTES, has_wal_reset_bug, is_busy_error,
)

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


def _claim_then_complete(conn: sqlite3.Connection) -> bool:
    """Claim one task and complete it, in two transactions. Return False when none is queued."""
    conn.execute("BEGIN IMMEDIATE")
    row = conn.execute(CLAIM, (time.time(),)).fetchone()
    conn.execute("COMMIT")
    if row is None:
        return False
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(COMPLETE, (time.time(), "null", row[0]))
    conn.execute("COMMIT")
    return True


def _claim_and_complete(path: str, synchronous: str, ready, start) -> None:
    """Claim and complete tasks, one transaction each, until none is queued (a child process)."""
    conn = connect(Path(path), synchronous)
    ready.release()
    start.wait()
    while _claim_then_complete(conn):
        pass
    conn.close()


def _wait_until_ready(ready, children) -> None:
    """Wait until every child has connected; raise BenchmarkError if one exits first."""
    for _ in children:
        while not ready.acquire(timeout=0.1):
            dead = [child.exitcode for child in children if child.exitcode is not None]
            if dead:
                raise BenchmarkError(f"a raw claim process exited with code {dead[0]} before it connected")


def _time_claim_processes(target: Callable, path: Path, synchronous: str, processes: int) -> float:
    """Run ``target(path, synchronous, ready, start)`` in ``processes`` child processes and return
    the seconds from the moment all of them have connected until the last one exits.

    Raises BenchmarkError when a child exits with a non-zero code.
    """
    context = multiprocessing.get_context()
    ready = context.Semaphore(0)
    start = context.Event()
    children = [context.Process(target=target, args=(str(path), synchronous, ready, start))
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
    if failed:
        raise BenchmarkError(f"raw claim processes on {path} exited with codes {failed}")
    return elapsed


def _count_completed(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM tasks WHERE status = 'completed'").fetchone()[0]


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

    elapsed = _time_claim_processes(_claim_and_complete, path, synchronous, processes)
    completed = _count_completed(conn)
    conn.close()
    if completed != count:
        raise BenchmarkError(f"raw claim baseline completed {completed} of {count} tasks")
    return rate(count, elapsed)


# --- litequeue's schema and statements, without litequeue's Python code ----------------------

# Queue and owner values that the same-schema baselines write where litequeue writes its own.
QUEUE_NAME = "default"
HOST_ID = "bench-host-id"
START_TOKEN = "bench-start"
# Position of `attempts` in the row that CLAIM_TASK returns, which COMPLETE_TASK is fenced on.
ATTEMPTS_COLUMN = [name.strip() for name in litequeue_sql.TASK_COLUMNS.split(",")].index("attempts")


def connect_like_litequeue(path: Path, synchronous: str) -> sqlite3.Connection:
    """Open a plain sqlite3 connection with the settings litequeue.connection applies.

    These are synchronous, journal_size_limit and, on SQLite versions with the WAL-reset
    bug, wal_autocheckpoint = 0. litequeue's file lock, which keeps checkpoints apart from
    writes on those versions, is not taken.
    """
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
    if has_wal_reset_bug():
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn


def create_litequeue_database(path: Path, synchronous: str) -> sqlite3.Connection:
    """Create litequeue's schema at ``path`` through litequeue.Queue, then return a plain connection."""
    litequeue.Queue(path, synchronous=synchronous).close()
    return connect_like_litequeue(path, synchronous)


class CheckpointAfterCommit:
    """litequeue's checkpoint rule on a plain connection.

    After a commit that leaves the WAL file larger than CHECKPOINT_THRESHOLD_BYTES, after_commit
    runs a RESTART checkpoint that waits at most CHECKPOINT_WAIT_S for readers. After a busy
    checkpoint, it waits for another threshold of growth before it tries again.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.wal_path = f"{path}-wal"
        self.next_size = CHECKPOINT_THRESHOLD_BYTES

    def after_commit(self) -> None:
        try:
            size = os.stat(self.wal_path).st_size
        except FileNotFoundError:
            return
        if size <= self.next_size:
            return
        self.conn.execute(f"PRAGMA busy_timeout = {int(CHECKPOINT_WAIT_S * 1000)}")
        try:
            busy = self.conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if not is_busy_error(exc):
                raise
            busy = 1
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self.next_size = size + CHECKPOINT_THRESHOLD_BYTES if busy else CHECKPOINT_THRESHOLD_BYTES


def insert_task_parameters(now: float) -> tuple:
    """Return the parameters of litequeue.sql.INSERT_TASK for a no-op task without arguments,
    as ``Queue.enqueue(NOOP)`` passes them."""
    return (QUEUE_NAME, TASK_PATH, "{}", "queued", 0, now, now, now, 0, None, None, 0, None, None)


def _insert_task(conn: sqlite3.Connection) -> None:
    conn.execute(litequeue_sql.INSERT_TASK, insert_task_parameters(time.time()))


def fill_litequeue_database(conn: sqlite3.Connection, count: int) -> None:
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(litequeue_sql.INSERT_TASK, (insert_task_parameters(now) for _ in range(count)))
    conn.execute("COMMIT")


def measure_schema_single_inserts(path: Path, synchronous: str, count: int) -> float:
    """Run litequeue's INSERT_TASK ``count`` times, each in its own autocommit transaction, on
    litequeue's schema, and return rows per second."""
    conn = create_litequeue_database(path, synchronous)
    checkpoints = CheckpointAfterCommit(conn, path)
    started = time.perf_counter()
    for _ in range(count):
        _insert_task(conn)
        checkpoints.after_commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return rate(count, elapsed)


def litequeue_owner() -> dict:
    """Return the parameters of litequeue.sql.CLAIM_TASK that name this process as the owner."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "host_id": HOST_ID, "start_token": START_TOKEN,
            "queue": QUEUE_NAME}


def _finish_and_claim(conn: sqlite3.Connection, owner: dict, previous: Optional[tuple]) -> Optional[tuple]:
    """Complete the claimed task ``previous`` (its id and attempts, or None) and claim the next,
    in one transaction, with the statements of litequeue's worker. Return the new claim, or
    None when no task is queued.

    RELEASE_DEPENDENTS runs after each completion, as in litequeue. It writes nothing here,
    because no task has dependencies.
    """
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    if previous is not None:
        task_id, attempts = previous
        cursor = conn.execute(litequeue_sql.COMPLETE_TASK,
                              ("null", "", now, now, task_id, owner["pid"], owner["host_id"], attempts))
        if cursor.rowcount != 1:
            conn.execute("ROLLBACK")
            raise BenchmarkError(f"task {task_id} was not in progress under process {owner['pid']}")
        conn.execute(litequeue_sql.RELEASE_DEPENDENTS, (now, task_id))
    row = conn.execute(litequeue_sql.CLAIM_TASK, {**owner, "now": now}).fetchone()
    conn.execute("COMMIT")
    return None if row is None else (row[0], row[ATTEMPTS_COLUMN])


def _finish_and_claim_until_empty(path: str, synchronous: str, ready, start) -> None:
    """Complete and claim tasks, one transaction per task, until none is queued (a child process)."""
    conn = connect_like_litequeue(Path(path), synchronous)
    checkpoints = CheckpointAfterCommit(conn, Path(path))
    owner = litequeue_owner()
    ready.release()
    start.wait()
    claim = _finish_and_claim(conn, owner, None)
    checkpoints.after_commit()
    while claim is not None:
        claim = _finish_and_claim(conn, owner, claim)
        checkpoints.after_commit()
    conn.close()


def measure_schema_finish_and_claim(path: Path, synchronous: str, count: int, processes: int = 2) -> float:
    """Drain ``count`` queued tasks in litequeue's schema with ``processes`` processes and
    return tasks per second.

    Each process runs one write transaction per task, which completes its previous task and
    claims the next, as a litequeue worker process does, but without running a task
    function. The clock starts once every process has opened its connection.
    """
    # NOTE: without litequeue's file lock, two processes that both checkpoint can in principle
    # hit the WAL-reset race of SQLite 3.7.0 to 3.51.2. A lost write fails the count below.
    conn = create_litequeue_database(path, synchronous)
    fill_litequeue_database(conn, count)

    elapsed = _time_claim_processes(_finish_and_claim_until_empty, path, synchronous, processes)
    completed = _count_completed(conn)
    conn.close()
    if completed != count:
        raise BenchmarkError(f"litequeue-schema claim baseline completed {completed} of {count} tasks")
    return rate(count, elapsed)


# --- WAL frames per commit ---------------------------------------------------------------------

def count_wal_frames(conn: sqlite3.Connection, path: Path, write: Callable[[], None], calls: int) -> float:
    """Call ``write`` ``calls`` times and return how many WAL frames they wrote.

    The WAL file must exist already and nothing may checkpoint meanwhile, so that the file
    only grows. Each frame is one page plus a 24-byte frame header.
    """
    wal_path = Path(f"{path}-wal")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    before = wal_path.stat().st_size
    for _ in range(calls):
        write()
    return (wal_path.stat().st_size - before) / (page_size + 24)


def _frames_of_minimal_insert(path: Path, synchronous: str, commits: int) -> float:
    conn = create_database(path, synchronous)  # the CREATE statements start the WAL
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    frames = count_wal_frames(conn, path, lambda: conn.execute(INSERT, (TASK_PATH, "{}", time.time())), commits)
    conn.close()
    return frames / commits


def _frames_of_minimal_claim(path: Path, synchronous: str, commits: int) -> float:
    """Return the frames per commit of the minimal-table claim and completion, 2 commits per task."""
    conn = create_database(path, synchronous)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    tasks = max(1, commits // 2)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(INSERT, ((TASK_PATH, "{}", time.time()) for _ in range(tasks)))
    conn.execute("COMMIT")
    frames = count_wal_frames(conn, path, lambda: _claim_then_complete(conn), tasks)
    conn.close()
    return frames / (2 * tasks)


def _frames_of_schema_insert(path: Path, synchronous: str, commits: int) -> float:
    conn = create_litequeue_database(path, synchronous)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    _insert_task(conn)  # closing the Queue removed the WAL, and this starts a new one
    frames = count_wal_frames(conn, path, lambda: _insert_task(conn), commits)
    conn.close()
    return frames / commits


def _frames_of_schema_claim(path: Path, synchronous: str, commits: int) -> float:
    conn = create_litequeue_database(path, synchronous)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    fill_litequeue_database(conn, commits + 1)
    owner = litequeue_owner()
    claim = [_finish_and_claim(conn, owner, None)]  # the first claim completes nothing

    def finish_and_claim() -> None:
        claim[0] = _finish_and_claim(conn, owner, claim[0])

    frames = count_wal_frames(conn, path, finish_and_claim, commits)
    conn.close()
    return frames / commits


def measure_wal_frames(path: Path, synchronous: str, commits: int) -> Dict[str, float]:
    """Return the WAL frames per commit of each raw baseline's write, with checkpoints off.

    Each write gets its own database file next to ``path`` and about ``commits`` commits, in
    one process. Keys: ``raw.insert`` and ``raw.claim`` (minimal table, where a task's claim and
    its completion are one commit each), ``schema.insert`` and ``schema.claim`` (litequeue's
    schema, where one commit completes a task and claims the next).
    """
    def sibling(name: str) -> Path:
        return path.with_name(f"{path.stem}-{name}{path.suffix}")

    return {
        "raw.insert": _frames_of_minimal_insert(sibling("raw-insert"), synchronous, commits),
        "raw.claim": _frames_of_minimal_claim(sibling("raw-claim"), synchronous, commits),
        "schema.insert": _frames_of_schema_insert(sibling("schema-insert"), synchronous, commits),
        "schema.claim": _frames_of_schema_claim(sibling("schema-claim"), synchronous, commits),
    }
