"""huey figures: enqueue rate, drain rate and pickup latency of SqliteHuey with its process consumer.

huey is optional: :func:`huey_unavailable` returns why it cannot be measured, and the runner
then skips these rows. ``fsync`` is "default" (SQLite's own synchronous setting, FULL in the
builds this was checked on) or "off" (``fsync=False``, synchronous=OFF: less durable than
litequeue's NORMAL, because a power loss can corrupt the database, not only lose commits).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from common import ManagedProcess, percentile, rate, wait_until, worker_env

WAIT_TIMEOUT_S = 60.0


def huey_unavailable() -> Optional[str]:
    """Return why huey cannot be measured here, or None when it can."""
    try:
        import huey  # noqa: F401
        import huey_app  # noqa: F401
    except ImportError as exc:
        return (f"huey is not importable ({exc}); install benchmarks/requirements.txt in the "
                "benchmark environment to measure it")
    return None


def huey_version() -> str:
    from importlib import metadata
    return metadata.version("huey")


def _create(path: Path, fsync: str):
    import huey_app
    return huey_app.create_huey(str(path), fsync)


def synchronous_setting(path: Path, fsync: str) -> int:
    """Return PRAGMA synchronous as huey's connection sets it (0 OFF, 1 NORMAL, 2 FULL)."""
    app, _, _ = _create(path, fsync)
    return app.storage.conn.execute("PRAGMA synchronous").fetchone()[0]


def start_consumer(path: Path, fsync: str, workers: int = 2) -> ManagedProcess:
    """Start ``huey_consumer huey_app.huey -k process -w 2 -q`` on ``path``.

    ``-q`` logs warnings only, so that no line is written per task (litequeue writes none at
    its default level either).
    """
    import huey_app
    env = worker_env()
    env[huey_app.DB_ENV] = str(path)
    env[huey_app.FSYNC_ENV] = fsync
    command = [sys.executable, "-m", "huey.bin.huey_consumer", "huey_app.huey",
               "-k", "process", "-w", str(workers), "-q"]
    log_path = path.with_name(path.name + ".consumer.log")
    return ManagedProcess("huey consumer", command, log_path, env)


def measure_enqueue(path: Path, fsync: str, count: int) -> float:
    """Enqueue ``count`` no-op tasks from one producer and return tasks per second."""
    app, noop, _ = _create(path, fsync)
    started = time.perf_counter()
    for _ in range(count):
        noop()
    elapsed = time.perf_counter() - started
    app.storage.close()
    return rate(count, elapsed)


def measure_drain(path: Path, fsync: str, count: int) -> float:
    """Drain ``count`` no-op tasks with 2 worker processes and return tasks per second.

    The clock runs from the consumer's start until the task table is empty. huey deletes a
    task row when a worker process dequeues it, so up to one no-op task per worker process
    may still be running then. huey stores nothing for a task that returns None.
    """
    app, noop, _ = _create(path, fsync)
    for _ in range(count):
        noop()
    with start_consumer(path, fsync) as consumer:
        finished_at = wait_until(lambda: app.pending_count() == 0,
                                 max(WAIT_TIMEOUT_S, count / 200), "the huey drain", consumer)
    app.storage.close()
    return rate(count, finished_at - consumer.started_at)


def pickup_latency_s(stamp_task) -> float:
    result = stamp_task()
    enqueued_at = time.monotonic()
    started_at = result.get(blocking=True, timeout=WAIT_TIMEOUT_S)
    return started_at - enqueued_at


def measure_pickup_series(path: Path, fsync: str, count: int, spacing_s: tuple, seed: int) -> Dict[str, float]:
    """Measure ``count`` pickups by an idle consumer, each after a random pause from ``spacing_s``."""
    app, _, stamp = _create(path, fsync)
    pauses = random.Random(seed)
    latencies: List[float] = []
    with start_consumer(path, fsync):
        pickup_latency_s(stamp)  # warm-up: the worker processes are up after it
        for _ in range(count):
            time.sleep(pauses.uniform(*spacing_s))
            latencies.append(pickup_latency_s(stamp))
    app.storage.close()
    return {
        "pickup_p50_ms": percentile(latencies, 0.50) * 1000,
        "pickup_p99_ms": percentile(latencies, 0.99) * 1000,
    }
