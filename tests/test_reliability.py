"""Scenarios that broke other task queues: large payloads, retry storms, lock contention,
fork with an open connection, start methods, clock jumps and a database that goes away."""

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import litequeue
from conftest import DEADLINE_S, REPO_DIR, run_as_unprivileged_user, events_for, read_events, subprocess_env, wait_for
from litequeue import DatabaseError, PayloadTooLargeError, TaskStatus

SOAK = os.environ.get("LITEQUEUE_SOAK") == "1"


def integrity(db_path) -> str:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def test_huge_argument_does_not_stall_queue(queue, start_supervisor):
    big = queue.enqueue("sample_tasks.length", {"text": "x" * (50 * 1024 * 1024)})
    small = queue.enqueue_many([("sample_tasks.square", {"x": i}) for i in range(100)])
    start_supervisor("--concurrency", "2")
    for index, task_id in enumerate(small):
        assert queue.wait(task_id, timeout_s=DEADLINE_S).result == index * index
    assert queue.wait(big, timeout_s=DEADLINE_S).result == 50 * 1024 * 1024


def test_args_over_limit_store_nothing(db_path):
    queue = litequeue.Queue(db_path, max_args_bytes=1024 * 1024)
    queue.enqueue("sample_tasks.noop")
    with pytest.raises(PayloadTooLargeError, match=r"args are 2097163 bytes as JSON, over the limit of 1048576 bytes"):
        queue.enqueue("sample_tasks.length", {"text": "x" * (2 * 1024 * 1024)})
    assert queue.counts()["queued"] == 1
    queue.close()


def test_retry_storm_does_not_starve_queue(queue, start_supervisor, tmp_path, events_path):
    stamps, short_stamps = tmp_path / "stamps", tmp_path / "short-stamps"
    storm = queue.enqueue("sample_tasks.fail_and_stamp", {"path": str(stamps)}, max_retries=1000)
    short = queue.enqueue("sample_tasks.fail_and_stamp", {"path": str(short_stamps)}, max_retries=3)
    ordinary = queue.enqueue_many([("sample_tasks.square", {"x": i}) for i in range(50)])
    supervisor = start_supervisor("--concurrency", "1", "--retry-delay-s", "0.05")
    for task_id in ordinary:
        assert queue.wait(task_id, timeout_s=DEADLINE_S).status == TaskStatus.COMPLETED
    final = queue.wait(short, timeout_s=DEADLINE_S)
    assert final.status == TaskStatus.FAILED
    assert final.attempts == 4
    wait_for(lambda: "on_failure" in events_for(events_path, short))
    assert events_for(events_path, short).count("on_failure") == 1
    wait_for(lambda: len(stamps.read_text().split()) >= 5, message="five attempts of the storm task")
    supervisor.signal(signal.SIGTERM)
    supervisor.wait()
    starts = [float(value) for value in stamps.read_text().split()]
    for attempt, (earlier, later) in enumerate(zip(starts, starts[1:]), start=1):
        assert later - earlier >= 0.05 * 2 ** (attempt - 1), (attempt, later - earlier)
    assert queue.get(storm).status == TaskStatus.QUEUED


READER_SOURCE = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    conn.execute("BEGIN")
    conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall()
    time.sleep(0.002)
    conn.execute("COMMIT")
"""


def test_wal_stays_bounded_with_constant_readers(db_path, start_supervisor):
    count = 50_000 if SOAK else 5_000
    queue = litequeue.Queue(db_path, synchronous="NORMAL")
    for start in range(0, count, 1000):
        queue.enqueue_many([("sample_tasks.noop", {})] * 1000)
    readers = [subprocess.Popen([sys.executable, "-c", READER_SOURCE, str(db_path), str(DEADLINE_S * 4)])
               for _ in range(3)]
    largest = [0]
    try:
        supervisor = start_supervisor("--concurrency", "2", "--synchronous", "NORMAL")

        def drained():
            largest[0] = max(largest[0], queue.database.wal_size())
            return queue.counts()["completed"] == count

        wait_for(drained, timeout_s=DEADLINE_S * 4, message=f"{count} tasks to complete")
    finally:
        for reader in readers:
            reader.kill()
            reader.wait()
    assert largest[0] < 64 * 1024 * 1024, f"WAL reached {largest[0]} bytes"
    # Once the workers have stopped, nothing writes: a TRUNCATE checkpoint empties the WAL.
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    assert queue.database.checkpoint("TRUNCATE")[0] == 0
    assert queue.database.wal_size() == 0
    print(f"largest WAL: {largest[0]} bytes for {count} tasks")


def test_busy_storm_loses_nothing(db_path, start_supervisor, tmp_path):
    queue = litequeue.Queue(db_path)
    supervisor = start_supervisor("--concurrency", "8")
    wait_for(lambda: len(supervisor.worker_pids()) == 8, message="eight worker processes")
    stop_reader = threading.Event()

    def long_reads():
        conn = sqlite3.connect(db_path, isolation_level=None)
        while not stop_reader.is_set():
            conn.execute("SELECT count(*), sum(length(args)) FROM tasks").fetchone()
            stop_reader.wait(0.1)
        conn.close()

    reader = threading.Thread(target=long_reads)
    reader.start()
    producer = subprocess.run(
        [sys.executable, "-c",
         "import sys, litequeue; q = litequeue.Queue(sys.argv[1]); "
         "[q.enqueue('sample_tasks.square', {'x': i}) for i in range(5000)]", str(db_path)],
        env=subprocess_env(), capture_output=True, text=True, timeout=DEADLINE_S * 4)
    try:
        assert producer.returncode == 0, producer.stderr
        wait_for(lambda: queue.counts()["completed"] == 5000, timeout_s=DEADLINE_S * 2,
                 message="5000 completed tasks")
    finally:
        stop_reader.set()
        reader.join()
    assert "OperationalError" not in supervisor.log()
    assert "Traceback" not in supervisor.log()
    assert queue.counts() == {"queued": 0, "progress": 0, "completed": 5000, "failed": 0, "cancelled": 0}
    queue.close()


def _child_enqueues(queue: litequeue.Queue) -> None:
    queue.enqueue("sample_tasks.noop")


def test_fork_with_open_connection_keeps_file_intact(db_path):
    """The parent keeps enqueueing on its connection while forked children use the same
    Queue object (which opens its own connection in each child) and exit normally."""
    queue = litequeue.Queue(db_path)
    queue.enqueue_many([("sample_tasks.noop", {})] * 1000)
    context = multiprocessing.get_context("fork")
    for round_number in range(50):
        children = [context.Process(target=_child_enqueues, args=(queue,)) for _ in range(2)]
        for child in children:
            child.start()
        for _ in range(5):
            queue.enqueue("sample_tasks.noop")
        for child in children:
            child.join(DEADLINE_S)
            assert child.exitcode == 0
        assert integrity(db_path) == "ok", f"round {round_number}"
    assert queue.counts()["queued"] == 1000 + 50 * (2 + 5)
    queue.close()


FORK_AND_EXIT_SOURCE = """
import os, sqlite3, sys
import litequeue

queue = litequeue.Queue(sys.argv[1])
queue.enqueue("sample_tasks.noop")
for _ in range(20):
    child = os.fork()
    if child == 0:
        queue.enqueue("sample_tasks.noop")
        sys.exit(0)  # full interpreter shutdown: atexit handlers and garbage collection run
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    queue.enqueue("sample_tasks.noop")
print(queue.counts()["queued"])
"""


def test_forked_child_exiting_through_interpreter_shutdown(db_path):
    """A child that exits through sys.exit runs garbage collection and atexit handlers:
    neither may close or checkpoint through the parent's connection."""
    result = subprocess.run([sys.executable, "-c", FORK_AND_EXIT_SOURCE, str(db_path)], env=subprocess_env(),
                            capture_output=True, text=True, timeout=DEADLINE_S)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "41"
    assert integrity(db_path) == "ok"


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_start_methods_run_tasks(queue, start_supervisor, events_path, method):
    ids = queue.enqueue_many([("sample_tasks.square", {"x": i}) for i in range(20)])
    supervisor = start_supervisor("--concurrency", "2", "--start-method", method)
    for index, task_id in enumerate(ids):
        assert queue.wait(task_id, timeout_s=DEADLINE_S).result == index * index
    assert f"start method {method}" in supervisor.log()
    # The observer module given with --import runs in worker processes under every method.
    wait_for(lambda: len([e for e in read_events(events_path) if e["event"] == "on_success"]) == 20)
    worker_pids = {e["pid"] for e in read_events(events_path) if e["event"] == "on_success"}
    assert supervisor.pid not in worker_pids


@pytest.mark.parametrize("offset_s", [3600, -3600])
def test_wall_clock_jump_does_not_change_timeouts(queue, start_supervisor, offset_s):
    quick = queue.enqueue("sample_tasks.sleep", {"seconds": 1}, timeout_s=5)
    stuck = queue.enqueue("sample_tasks.sleep", {"seconds": 60}, timeout_s=1)
    start_supervisor("--concurrency", "2", "--import", "clock_jump",
                     env={"LITEQUEUE_TEST_CLOCK_OFFSET_S": str(offset_s)})
    wait_for(lambda: queue.get(stuck).status == TaskStatus.PROGRESS, message="the stuck task to start")
    started = time.monotonic()
    task = queue.wait(stuck, timeout_s=DEADLINE_S)
    assert task.error == "Task timed out after 1 seconds"
    assert time.monotonic() - started < 1 + 2  # the timeout plus scheduling slack
    assert queue.wait(quick, timeout_s=DEADLINE_S).status == TaskStatus.COMPLETED


def test_disk_full_keeps_stored_tasks(db_path):
    queue = litequeue.Queue(db_path)
    ids = queue.enqueue_many([("sample_tasks.noop", {})] * 10)
    page_count = queue.database.conn.execute("PRAGMA page_count").fetchone()[0]
    queue.database.conn.execute(f"PRAGMA max_page_count = {page_count + 2}")
    with pytest.raises(DatabaseError, match=f"{db_path}.*full"):
        queue.enqueue_many([("sample_tasks.length", {"text": "x" * 100_000})] * 5)
    assert queue.counts()["queued"] == 10
    assert [queue.get(task_id).status for task_id in ids] == [TaskStatus.QUEUED] * 10
    queue.close()
    assert integrity(db_path) == "ok"


def test_read_only_database_named(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    directory = tempfile.mkdtemp(prefix="litequeue-readonly-")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "queue.db")
    try:
        litequeue.Queue(path).close()
        os.chmod(path, 0o644)
        def enqueue() -> str:
            litequeue.Queue(path).enqueue("sample_tasks.noop")
            return "enqueued"

        answer = run_as_unprivileged_user(enqueue)
        assert answer.startswith("DatabaseError: "), answer
        assert path in answer
        assert "read-only" in answer or "readonly" in answer
    finally:
        subprocess.run(["rm", "-rf", directory], check=True)


def test_deleted_database_stops_supervisor(db_path, start_supervisor):
    supervisor = start_supervisor("--concurrency", "1")
    wait_for(lambda: "supervisor started" in supervisor.log())
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{db_path}{suffix}"):
            os.unlink(f"{db_path}{suffix}")
    assert supervisor.wait() == 3
    assert f"database file {db_path} was deleted or replaced" in supervisor.log()
