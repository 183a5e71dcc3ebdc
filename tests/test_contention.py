"""Lock contention: producers, supervisors and readers on one file. No "database is locked"
reaches a caller or stops a process, and the totals match exactly."""

import sqlite3
import subprocess
import sys
import threading
import time

import litequeue
from conftest import DEADLINE_S, subprocess_env, wait_for
from litequeue import TaskStatus
from litequeue.connection import Database

PRODUCER_SOURCE = """
import sys, litequeue
queue = litequeue.Queue(sys.argv[1])
for i in range(int(sys.argv[2])):
    queue.enqueue("sample_tasks.square", {"x": i})
"""


def test_producers_supervisors_and_reader(db_path, start_supervisor):
    queue = litequeue.Queue(db_path)
    supervisors = [start_supervisor("--concurrency", "2"), start_supervisor("--concurrency", "2")]
    stop = threading.Event()
    reads = [0]

    def reader():
        conn = sqlite3.connect(db_path, isolation_level=None)
        while not stop.is_set():
            conn.execute("BEGIN")
            conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall()
            conn.execute("COMMIT")
            reads[0] += 1
            time.sleep(0.003)
        conn.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        producers = [subprocess.Popen([sys.executable, "-c", PRODUCER_SOURCE, str(db_path), "1000"],
                                      env=subprocess_env(), stderr=subprocess.PIPE, text=True)
                     for _ in range(3)]
        for producer in producers:
            _, stderr = producer.communicate(timeout=DEADLINE_S * 4)
            assert producer.returncode == 0, stderr
            assert "locked" not in stderr
        wait_for(lambda: queue.counts()["completed"] == 3000, timeout_s=DEADLINE_S * 2,
                 message="3000 completed tasks")
    finally:
        stop.set()
        thread.join()
    assert queue.counts() == {"queued": 0, "progress": 0, "completed": 3000, "failed": 0, "cancelled": 0}
    assert reads[0] > 0
    for supervisor in supervisors:
        log = supervisor.log()
        assert "Traceback" not in log
        assert "CRITICAL" not in log
        assert "exited with code" not in log or "exited with code 0" in log
    queue.close()


def test_claim_waits_for_writer_holding_lock(db_path, start_supervisor):
    queue = litequeue.Queue(db_path)
    supervisor = start_supervisor("--concurrency", "1")
    wait_for(lambda: "worker process started" in supervisor.log(), message="an idle worker process")
    task_id = queue.enqueue("sample_tasks.square", {"x": 9}, delay_s=0.3)
    holder = Database(db_path)
    held = threading.Event()
    released_at = []

    def hold_for_two_seconds(db):
        held.set()
        time.sleep(2.0)
        released_at.append(time.time())

    thread = threading.Thread(target=lambda: holder.write("hold", hold_for_two_seconds))
    thread.start()
    assert held.wait(DEADLINE_S)
    thread.join()
    task = queue.wait(task_id, timeout_s=DEADLINE_S)
    assert task.status == TaskStatus.COMPLETED
    assert task.result == 81
    assert task.started >= task.run_at
    assert task.started >= released_at[0] - 0.05  # the claim waited for the lock
    assert "Traceback" not in supervisor.log()
    holder.close()
    queue.close()
