"""Crash chaos: supervisors and worker processes are SIGKILLed at random while thousands of
tasks run. Afterwards every task is in a documented final state and none was lost.

LITEQUEUE_SOAK=1 runs the same for minutes (LITEQUEUE_SOAK_S, default 300) and prints the
counts; by default it runs for about ten seconds."""

import os
import random
import signal
import sqlite3
import time

from conftest import DEADLINE_S, wait_for

import litequeue
from litequeue import TaskStatus

SOAK = os.environ.get("LITEQUEUE_SOAK") == "1"
CHAOS_S = float(os.environ.get("LITEQUEUE_SOAK_S", "300")) if SOAK else 8.0
TASK_COUNT = 20_000 if SOAK else 1_500
DOCUMENTED_FAILURES = ("Task failed: worker process (PID ", "Task timed out after ", "Worker subprocess exited with code ")


def effect_counts(effects_path) -> dict:
    if not effects_path.exists():
        return {}
    conn = sqlite3.connect(effects_path, timeout=30)
    try:
        return dict(conn.execute("SELECT task_key, count(*) FROM effects GROUP BY task_key").fetchall())
    finally:
        conn.close()


def test_crash_chaos_loses_nothing(db_path, tmp_path, start_supervisor):
    effects_path = tmp_path / "effects.db"
    queue = litequeue.Queue(db_path, synchronous="NORMAL")
    calls = [{"task": "chaos_tasks.record", "args": {"effects_path": str(effects_path), "key": key},
              "max_retries": 50} for key in range(TASK_COUNT)]
    for start in range(0, TASK_COUNT, 1000):
        queue.enqueue_many(calls[start:start + 1000])

    options = ("--concurrency", "2", "--synchronous", "NORMAL", "--log-level", "INFO")
    supervisors = [start_supervisor(*options), start_supervisor(*options)]
    rng = random.Random(int(os.environ.get("LITEQUEUE_CHAOS_SEED", "1234")))
    kills = {"worker processes": 0, "supervisor groups": 0, "restarts": 0}
    stop_at = time.monotonic() + CHAOS_S
    while time.monotonic() < stop_at and queue.counts()["queued"] > 0:
        time.sleep(rng.uniform(0.1, 0.4))
        index = rng.randrange(len(supervisors))
        victim = supervisors[index]
        if rng.random() < 0.75:
            pids = victim.worker_pids()
            if pids:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills["worker processes"] += 1
        else:
            victim.kill_group()
            kills["supervisor groups"] += 1
            supervisors[index] = start_supervisor(*options)
            kills["restarts"] += 1

    def settled():
        counts = queue.counts()
        return counts["queued"] == 0 and counts["progress"] == 0

    wait_for(settled, timeout_s=DEADLINE_S * (20 if SOAK else 4), message="the load to settle")

    counts = queue.counts()
    tasks = queue.list(limit=TASK_COUNT)
    assert len(tasks) == TASK_COUNT
    for task in tasks:
        assert task.status in (TaskStatus.COMPLETED, TaskStatus.FAILED), task
        if task.status == TaskStatus.FAILED:
            assert task.error.startswith(DOCUMENTED_FAILURES), task.error
    # With 50 retries each, every task completes in the end.
    assert counts["completed"] == TASK_COUNT, counts

    runs = effect_counts(effects_path)
    assert set(runs) == set(range(TASK_COUNT)), "a task never ran"
    extra_runs = sum(runs.values()) - TASK_COUNT
    killed_processes = kills["worker processes"] + 2 * kills["supervisor groups"]
    # A task runs again only when the process running it was killed after its side effect.
    assert extra_runs <= killed_processes, (extra_runs, kills)
    attempts = {task.args["key"]: task.attempts for task in tasks}
    for key, count in runs.items():
        assert attempts[key] >= count, (key, count, attempts[key])

    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    print(f"\nchaos: {TASK_COUNT} tasks, {kills['worker processes']} worker processes killed, "
          f"{kills['supervisor groups']} supervisor groups killed and restarted, "
          f"{extra_runs} duplicate runs, lost: 0, counts {counts}")
