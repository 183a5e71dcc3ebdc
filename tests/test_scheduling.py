"""Delayed, prioritised, unique and dependent tasks, paused queues, transactional enqueue,
schema migration, and a worker embedded in an application."""

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import litequeue
from conftest import DEADLINE_S, REPO_DIR, pid_alive, subprocess_env, wait_for
from litequeue import InvalidOptionError, TaskNotFoundError, TaskStatus, liveness, sql, storage
from litequeue.connection import Database
from litequeue.storage import Owner


def claim_next(db: Database, queues=("default",)):
    owner = Owner(os.getpid(), liveness.host_name(), liveness.host_id(), liveness.own_start_token())
    return db.write("claim", lambda d: storage.claim_in(d, owner, list(queues), time.time()))


def test_claim_order_priority_run_at_id(queue, db):
    now = time.time()
    low = queue.enqueue("sample_tasks.noop", priority=0, run_at=now - 10)
    high_late = queue.enqueue("sample_tasks.noop", priority=5, run_at=now - 1)
    high_early = queue.enqueue("sample_tasks.noop", priority=5, run_at=now - 5)
    high_early_second = queue.enqueue("sample_tasks.noop", priority=5, run_at=now - 5)
    future = queue.enqueue("sample_tasks.noop", priority=9, delay_s=60)
    order = [claim_next(db).id for _ in range(4)]
    assert order == [high_early, high_early_second, high_late, low]
    assert claim_next(db) is None
    assert queue.get(future).status == TaskStatus.QUEUED


def test_delayed_task_waits_then_starts_promptly(queue, start_supervisor):
    supervisor = start_supervisor("--concurrency", "1", "--poll-interval-s", "5")
    wait_for(lambda: "worker process started" in supervisor.log())
    enqueued_at = time.time()
    task_id = queue.enqueue("sample_tasks.noop", delay_s=1.5)
    task = queue.wait(task_id, timeout_s=DEADLINE_S)
    assert task.started >= enqueued_at + 1.5
    assert task.started - task.run_at < 0.5


def test_queues_served_in_given_order(queue, start_supervisor, tmp_path):
    runs = tmp_path / "runs"
    low = [queue.enqueue("sample_tasks.record_run", {"path": str(runs)}, queue="low") for _ in range(3)]
    high = [queue.enqueue("sample_tasks.record_run", {"path": str(runs)}, queue="high") for _ in range(3)]
    start_supervisor("--concurrency", "1", "--queue", "high", "--queue", "low")
    for task_id in high + low:
        queue.wait(task_id, timeout_s=DEADLINE_S)
    started = sorted(high + low, key=lambda task_id: queue.get(task_id).started)
    assert started == high + low


def test_unique_key_returns_existing_task(queue, db):
    first = queue.enqueue("sample_tasks.noop", unique_key="report:42")
    assert queue.enqueue("sample_tasks.noop", unique_key="report:42") == first
    assert queue.enqueue_many([{"task": "sample_tasks.noop", "unique_key": "report:42"}]) == [first]
    claim_next(db)  # running still counts
    assert queue.enqueue("sample_tasks.noop", unique_key="report:42") == first
    assert queue.counts()["queued"] == 0
    queue.cancel(first)
    second = queue.enqueue("sample_tasks.noop", unique_key="report:42")
    assert second != first


def _enqueue_unique(path, count):
    queue = litequeue.Queue(path)
    return [queue.enqueue("sample_tasks.noop", unique_key="only-one") for _ in range(count)]


def test_unique_key_across_racing_processes(db_path, queue):
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        results = pool.starmap(_enqueue_unique, [(str(db_path), 50)] * 4)
    ids = {task_id for batch in results for task_id in batch}
    assert len(ids) == 1
    assert queue.counts()["queued"] == 1


def test_pause_holds_tasks_until_resume(queue, start_supervisor):
    queue.pause("reports")
    assert queue.paused_queues() == ["reports"]
    held = queue.enqueue("sample_tasks.square", {"x": 3}, queue="reports")
    start_supervisor("--concurrency", "1", "--queue", "reports", "--queue", "default")
    # A task of another queue, enqueued later, runs: the worker is active while "reports" waits.
    probe = queue.enqueue("sample_tasks.noop")
    assert queue.wait(probe, timeout_s=DEADLINE_S).status == TaskStatus.COMPLETED
    assert queue.get(held).status == TaskStatus.QUEUED
    queue.resume("reports")
    assert queue.paused_queues() == []
    assert queue.wait(held, timeout_s=DEADLINE_S).result == 9


def test_dependent_task_waits_for_completion(queue, start_supervisor):
    first = queue.enqueue("sample_tasks.sleep", {"seconds": 0.5})
    second = queue.enqueue("sample_tasks.square", {"x": 4}, after=[first])
    assert queue.get(second).waiting_on == 1
    assert queue.dependencies(second) == [first]
    start_supervisor("--concurrency", "2")
    done = queue.wait(second, timeout_s=DEADLINE_S)
    assert done.result == 16
    assert done.started >= queue.get(first).finished


def test_failed_dependency_cancels_chain(queue, start_supervisor):
    failing = queue.enqueue("sample_tasks.fail")
    middle = queue.enqueue("sample_tasks.noop", after=[failing])
    last = queue.enqueue("sample_tasks.noop", after=[middle])
    start_supervisor("--concurrency", "1")
    assert queue.wait(failing, timeout_s=DEADLINE_S).status == TaskStatus.FAILED
    middle_task = queue.wait(middle, timeout_s=DEADLINE_S)
    assert middle_task.status == TaskStatus.CANCELLED
    assert middle_task.error == f"Cancelled: task {failing}, which this task depends on, ended failed"
    last_task = queue.get(last)
    assert last_task.status == TaskStatus.CANCELLED
    assert last_task.error == f"Cancelled: task {middle}, which this task depends on, ended cancelled"


def test_cancelled_dependency_cancels_dependent(queue):
    first = queue.enqueue("sample_tasks.noop")
    second = queue.enqueue("sample_tasks.noop", after=[first])
    queue.cancel(first)
    assert queue.get(second).status == TaskStatus.CANCELLED


def test_dependency_already_final_at_enqueue(queue, db):
    done = queue.enqueue("sample_tasks.noop")
    claimed = claim_next(db)
    db.write("complete", lambda d: storage.complete_in(d, storage.Claim(claimed.id, os.getpid(), liveness.host_id(), 1),
                                                       "null", "", time.time()))
    ready = queue.enqueue("sample_tasks.noop", after=[done])
    assert queue.get(ready).waiting_on == 0
    cancelled = queue.enqueue("sample_tasks.noop")
    queue.cancel(cancelled)
    doomed = queue.enqueue("sample_tasks.noop", after=[cancelled])
    assert queue.get(doomed).status == TaskStatus.CANCELLED


def test_unknown_dependency_stores_nothing(queue):
    with pytest.raises(TaskNotFoundError, match="task 999 not found"):
        queue.enqueue("sample_tasks.noop", after=[999])
    with pytest.raises(InvalidOptionError, match="after"):
        queue.enqueue("sample_tasks.noop", after="12")
    assert queue.counts()["queued"] == 0


def test_transactional_enqueue_follows_commit(queue, db_path):
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
    conn.commit()

    conn.execute("INSERT INTO orders (item) VALUES ('lost')")
    rolled_back = queue.enqueue("sample_tasks.noop", {"order": "lost"}, connection=conn)
    conn.rollback()
    with pytest.raises(TaskNotFoundError):
        queue.get(rolled_back)

    conn.execute("INSERT INTO orders (item) VALUES ('kept')")
    kept = queue.enqueue("sample_tasks.noop", {"order": "kept"}, connection=conn)
    assert queue.counts()["queued"] == 0  # not visible before the commit
    conn.commit()
    queue.notify()
    assert queue.get(kept).args == {"order": "kept"}
    conn.close()


def test_transactional_enqueue_rejects_other_database(queue, tmp_path):
    other = sqlite3.connect(tmp_path / "other.db")
    with pytest.raises(InvalidOptionError, match="not on the queue's database"):
        queue.enqueue("sample_tasks.noop", connection=other)
    other.close()


def test_migration_from_version_one(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(sql.MIGRATIONS[0])
    conn.execute("INSERT INTO tasks (queue, task, args, status, run_at, created, modified) "
                 "VALUES ('default', 'sample_tasks.noop', '{}', 'queued', 0, 0, 0)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    queue = litequeue.Queue(path)
    task = queue.get(1)
    assert task.status == TaskStatus.QUEUED
    assert task.waiting_on == 0
    database = Database(path)
    assert claim_next(database).id == 1
    version = database.conn.execute("PRAGMA user_version").fetchone()[0]
    assert version == sql.SCHEMA_VERSION
    database.close()
    queue.close()


def test_embedded_worker_runs_and_stops(queue, tmp_path):
    task_id = queue.enqueue("sample_tasks.square", {"x": 12})
    worker = litequeue.Worker(queue, concurrency=1, env=subprocess_env(), log_path=tmp_path / "worker.log",
                              extra_args=["--poll-interval-s", "0.2"])
    with worker:
        assert worker.is_alive()
        assert queue.wait(task_id, timeout_s=DEADLINE_S).result == 144
    assert not worker.is_alive()
    assert worker.stop() == 0


APP_SOURCE = """
import sys, time, litequeue
worker = litequeue.Worker(sys.argv[1], concurrency=1, log_path=sys.argv[2],
                          extra_args=["--poll-interval-s", "0.2"])
worker.start()
print(worker.pid, flush=True)
time.sleep(120)
"""


def test_killed_application_stops_embedded_worker(queue, db_path, tmp_path):
    marker = tmp_path / "started"
    running = queue.enqueue("sample_tasks.sleep", {"seconds": 1.5, "marker": str(marker)})
    app = subprocess.Popen([sys.executable, "-c", APP_SOURCE, str(db_path), str(tmp_path / "worker.log")],
                           env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    try:
        supervisor_pid = int(app.stdout.readline())
        wait_for(marker.exists, message="the task to start")
        waiting = queue.enqueue("sample_tasks.noop")
        app.kill()
        app.wait()
        wait_for(lambda: not pid_alive(supervisor_pid), message="the orphaned supervisor to stop")
        assert queue.get(running).status == TaskStatus.COMPLETED
        assert queue.get(waiting).status == TaskStatus.QUEUED
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()


def test_requeue_blocked_by_active_unique_key(queue):
    from litequeue import TaskStateError

    first = queue.enqueue("sample_tasks.noop", unique_key="nightly")
    queue.cancel(first)
    second = queue.enqueue("sample_tasks.noop", unique_key="nightly")
    with pytest.raises(TaskStateError, match=f"task {first} cannot be requeued: another task with its unique key"):
        queue.requeue(first)
    assert queue.get(first).status == TaskStatus.CANCELLED
    assert queue.get(second).status == TaskStatus.QUEUED


def test_purge_removes_dependency_rows(queue, db):
    from litequeue import retention

    first = queue.enqueue("sample_tasks.noop")
    second = queue.enqueue("sample_tasks.noop", after=[first])
    queue.cancel(first)
    assert queue.get(second).status == TaskStatus.CANCELLED
    retention.purge_finished(db, 0, retention.PURGEABLE_STATUSES)
    rows = db.conn.execute("SELECT count(*) FROM task_dependencies").fetchone()[0]
    assert rows == 0
