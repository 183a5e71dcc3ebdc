"""litequeue figures: enqueue rates, drain rates, pickup latency, idle CPU and worker memory.

Every function takes a path for a fresh database file. Drains and latencies run the real
supervisor (``python -m litequeue worker``) as a child process with 2 worker processes.
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path
from typing import Dict, List

import litequeue

from common import (
    BenchmarkError, ManagedProcess, child_pids, cpu_seconds, peak_rss_bytes, percentile,
    process_tree, rate, start_litequeue_supervisor, wait_until,
)

NOOP = "bench_tasks.noop"
STAMP = "bench_tasks.monotonic_stamp"

# Only unfinished rows are counted while a drain runs. Queue.counts() groups every row,
# which on a table of 1,000,000 finished tasks costs tens of milliseconds per call and
# would take CPU from the two worker processes being measured.
UNFINISHED = "SELECT count(*) FROM tasks WHERE status IN ('queued', 'progress')"

# Finished tasks written straight into litequeue's schema, for the large-table drain.
INSERT_FINISHED = """
WITH RECURSIVE sequence(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM sequence WHERE n < ?)
INSERT INTO tasks (queue, task, args, status, priority, run_at, created, modified, started,
                   finished, attempts, worker_pid, worker_host, worker_host_id, worker_start,
                   result, log)
SELECT 'default', ?, '{}', 'completed', 0, ?, ?, ?, ?, ?, 1, 4242, 'bench-host',
       'bench-host-id', 'bench-start', 'null', ''
FROM sequence
"""

WAIT_TIMEOUT_S = 60.0


def measure_enqueue(path: Path, synchronous: str, count: int) -> float:
    """Call Queue.enqueue ``count`` times from one producer and return tasks per second."""
    queue = litequeue.Queue(path, synchronous=synchronous)
    started = time.perf_counter()
    for _ in range(count):
        queue.enqueue(NOOP)
    elapsed = time.perf_counter() - started
    queue.close()
    return rate(count, elapsed)


def measure_enqueue_many(path: Path, synchronous: str, count: int, batch_size: int) -> float:
    """Call Queue.enqueue_many with batches of ``batch_size`` and return tasks per second."""
    queue = litequeue.Queue(path, synchronous=synchronous)
    started = time.perf_counter()
    for offset in range(0, count, batch_size):
        queue.enqueue_many([(NOOP, None)] * min(batch_size, count - offset))
    elapsed = time.perf_counter() - started
    queue.close()
    return rate(count, elapsed)


def fill_queue(queue: litequeue.Queue, count: int, batch_size: int = 1000) -> None:
    for offset in range(0, count, batch_size):
        queue.enqueue_many([(NOOP, None)] * min(batch_size, count - offset))


def insert_finished_tasks(path: Path, count: int) -> None:
    """Write ``count`` completed tasks with one INSERT ... SELECT, then checkpoint the WAL.

    The schema is created by opening the file with litequeue.Queue first. No litequeue
    process runs while this connection writes, so its automatic checkpoint is safe here.
    """
    litequeue.Queue(path).close()
    conn = sqlite3.connect(str(path), isolation_level=None)
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(INSERT_FINISHED, (count, NOOP, now, now, now, now, now))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _drain(path: Path, synchronous: str, count: int) -> Dict[str, float]:
    """Start a supervisor on a filled queue and time it until no task is unfinished.

    Returns the drain rate (supervisor start to the last completion), the steady rate
    (first claim to last completion, from the tasks' own timestamps) and the peak RSS of
    the worker processes, read before the supervisor stops.
    """
    queue = litequeue.Queue(path, synchronous=synchronous)
    conn = queue.database.conn
    started_wall = time.time()
    supervisor = start_litequeue_supervisor(path, synchronous)
    with supervisor:
        # fetchall() resets the statement at once, so no read transaction stays open.
        finished_at = wait_until(lambda: conn.execute(UNFINISHED).fetchall()[0][0] == 0,
                                 max(WAIT_TIMEOUT_S, count / 200), "the drain", supervisor)
        worker_rss = [peak_rss_bytes(pid) for pid in child_pids(supervisor.pid)]
        supervisor_rss = peak_rss_bytes(supervisor.pid)
    counts = queue.counts()
    first_start, last_finish = conn.execute(
        "SELECT min(started), max(finished) FROM tasks WHERE started >= ?", (started_wall,)
    ).fetchall()[0]
    queue.close()
    if counts["completed"] < count or counts["failed"] or counts["cancelled"]:
        raise BenchmarkError(f"drain of {path} ended with counts {counts}; expected {count} completed")
    figures = {
        "drain": rate(count, finished_at - supervisor.started_at),
        "steady": rate(count, last_finish - first_start) if first_start and last_finish else float("nan"),
    }
    known_rss = [value for value in worker_rss if value is not None]
    if known_rss:
        figures["worker_rss_mib"] = max(known_rss) / 2**20
    if supervisor_rss is not None:
        figures["supervisor_rss_mib"] = supervisor_rss / 2**20
    return figures


def measure_drain(path: Path, synchronous: str, count: int) -> Dict[str, float]:
    """Drain ``count`` no-op tasks from an otherwise empty table."""
    with litequeue.Queue(path, synchronous=synchronous) as queue:
        fill_queue(queue, count)
    return _drain(path, synchronous, count)


def measure_drain_large_table(path: Path, synchronous: str, count: int, finished: int) -> Dict[str, float]:
    """Drain ``count`` no-op tasks from a table that already contains ``finished`` completed tasks."""
    insert_finished_tasks(path, finished)
    with litequeue.Queue(path, synchronous=synchronous) as queue:
        fill_queue(queue, count)
    return _drain(path, synchronous, count)


# --- an idle supervisor: pickup latency and CPU --------------------------------------------------

def pickup_latency_s(queue: litequeue.Queue) -> float:
    """Enqueue a stamp task and return the seconds from enqueue returning to the task starting."""
    task_id = queue.enqueue(STAMP)
    enqueued_at = time.monotonic()
    task = queue.wait(task_id, timeout_s=WAIT_TIMEOUT_S)
    if task.status != litequeue.TaskStatus.COMPLETED:
        raise BenchmarkError(f"stamp task {task_id} ended {task.status.value}: {task.error}")
    return task.result - enqueued_at


def measure_pickup_series(queue: litequeue.Queue, count: int, spacing_s: tuple, seed: int) -> Dict[str, float]:
    """Measure ``count`` pickups, each after a random pause drawn uniformly from ``spacing_s``."""
    pauses = random.Random(seed)
    latencies: List[float] = []
    for _ in range(count):
        time.sleep(pauses.uniform(*spacing_s))
        latencies.append(pickup_latency_s(queue))
    return {
        "pickup_p50_ms": percentile(latencies, 0.50) * 1000,
        "pickup_p99_ms": percentile(latencies, 0.99) * 1000,
    }


def warm_up(queue: litequeue.Queue) -> None:
    """Run two pickups, 1 s apart, whose latencies are not counted.

    The first one waits until the worker processes run. The producer's first wake-up came
    before any worker process listened on the wake-up FIFO, and litequeue's Notifier then
    skips wake-ups for 0.5 s before it opens the FIFO again. The second pickup runs after that
    pause, so the series measures a producer whose wake-ups reach the workers.
    """
    pickup_latency_s(queue)
    time.sleep(1.0)
    pickup_latency_s(queue)


def measure_idle_cpu(supervisor: ManagedProcess, seconds: float) -> float:
    """Return the CPU used by the supervisor and its worker processes over ``seconds``, in %
    of one core."""
    pids = process_tree(supervisor.pid)
    before = cpu_seconds(pids)
    started = time.monotonic()
    time.sleep(seconds)
    used = cpu_seconds(pids) - before
    return 100.0 * used / (time.monotonic() - started)


def measure_idle_and_pickup(path: Path, synchronous: str, pickups: int, spacing_s: tuple,
                            idle_cpu_s: float, long_idle_s: float, seed: int) -> Dict[str, float]:
    """Run one supervisor: a pickup series, then an idle period with a CPU reading, then one
    pickup after ``long_idle_s`` without tasks."""
    queue = litequeue.Queue(path, synchronous=synchronous)
    with start_litequeue_supervisor(path, synchronous) as supervisor:
        warm_up(queue)
        figures = measure_pickup_series(queue, pickups, spacing_s, seed)

        idle_since = time.monotonic()
        time.sleep(min(1.0, long_idle_s / 4))  # let the last task's bookkeeping settle
        figures["idle_cpu_percent"] = measure_idle_cpu(supervisor, idle_cpu_s)
        time.sleep(max(0.0, long_idle_s - (time.monotonic() - idle_since)))
        figures["pickup_after_idle_ms"] = pickup_latency_s(queue) * 1000
    queue.close()
    return figures
