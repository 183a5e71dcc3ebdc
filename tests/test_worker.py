"""End-to-end behaviour of a supervisor and its worker processes on a real database file."""

import json
import os
import signal
import sqlite3
import time

import pytest

from conftest import DEADLINE_S, events_for, pid_alive, read_events, wait_for
from litequeue import TaskStatus


def wait_final(queue, task_id, timeout_s=DEADLINE_S):
    return queue.wait(task_id, timeout_s=timeout_s)


def wait_counts(queue, expected: dict, timeout_s=DEADLINE_S):
    def matches():
        counts = queue.counts()
        return all(counts[key] == value for key, value in expected.items())

    wait_for(matches, timeout_s, f"counts {expected} (last {queue.counts()})")


def test_two_hundred_tasks_complete(queue, start_supervisor):
    ids = queue.enqueue_many([("sample_tasks.square", {"x": i}) for i in range(200)])
    supervisor = start_supervisor("--concurrency", "2")
    wait_counts(queue, {"completed": 200})
    results = {task.id: task.result for task in queue.list(limit=300)}
    assert [results[task_id] for task_id in ids] == [i * i for i in range(200)]
    assert {task.status for task in queue.list(limit=300)} == {TaskStatus.COMPLETED}
    assert {task.attempts for task in queue.list(limit=300)} == {1}
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0


def test_raising_task_fails_once(queue, start_supervisor, events_path):
    task_id = queue.enqueue("sample_tasks.fail", {"message": "bad input"})
    start_supervisor("--concurrency", "1")
    task = wait_final(queue, task_id)
    assert task.status == TaskStatus.FAILED
    assert task.error.startswith("ValueError('bad input')\nTraceback (most recent call last):")
    assert 'raise ValueError(message)' in task.error
    wait_for(lambda: "on_failure" in events_for(events_path, task_id))
    assert events_for(events_path, task_id) == ["before_job", "on_failure"]


def test_success_event_sequence(queue, start_supervisor, events_path):
    task_id = queue.enqueue("sample_tasks.add", {"a": 1, "b": 2})
    start_supervisor("--concurrency", "1")
    assert wait_final(queue, task_id).result == 3
    wait_for(lambda: "on_success" in events_for(events_path, task_id))
    assert events_for(events_path, task_id) == ["before_job", "on_success"]


def test_killed_worker_process_recorded(queue, start_supervisor, events_path, tmp_path):
    marker = tmp_path / "started"
    victim = queue.enqueue("sample_tasks.sleep", {"seconds": 60, "marker": str(marker)})
    others = queue.enqueue_many([("sample_tasks.square", {"x": i}) for i in range(5)])
    supervisor = start_supervisor("--concurrency", "1")
    worker_pid = int(wait_for(lambda: marker.exists() and marker.read_text()))
    os.kill(worker_pid, signal.SIGKILL)

    task = wait_final(queue, victim)
    assert task.status == TaskStatus.FAILED
    assert task.error == "Worker subprocess exited with code -9"
    for task_id in others:
        assert wait_final(queue, task_id).status == TaskStatus.COMPLETED
    wait_for(lambda: "on_failure" in events_for(events_path, victim))
    failures = [e for e in read_events(events_path) if e["event"] == "on_failure" and e["task_id"] == victim]
    assert len(failures) == 1
    assert failures[0]["pid"] == supervisor.pid
    assert "exited with code -9" in supervisor.log()
    # The replacement process gets a name of its own in the log.
    assert "litequeue-worker-2[" in supervisor.log()


@pytest.mark.parametrize("task,args,code", [
    ("sample_tasks.exit_hard", {"code": 3}, 3),
    ("sample_tasks.exit_clean", {}, 0),
    ("sample_tasks.segfault", {}, -11),
])
def test_exit_while_holding_task(queue, start_supervisor, task, args, code):
    task_id = queue.enqueue(task, args)
    follower = queue.enqueue("sample_tasks.square", {"x": 4})
    start_supervisor("--concurrency", "1")
    task = wait_final(queue, task_id)
    assert task.status == TaskStatus.FAILED
    assert task.error == f"Worker subprocess exited with code {code}"
    assert wait_final(queue, follower).result == 16


@pytest.mark.parametrize("task", ["sample_tasks.sleep", "sample_tasks.block_signals_and_sleep",
                                  "sample_tasks.swallow_everything"])
def test_timeout_fails_task_and_next_runs(queue, start_supervisor, tmp_path, task):
    marker = tmp_path / "started"
    args = {"marker": str(marker)}
    if task != "sample_tasks.swallow_everything":
        args["seconds"] = 120
    task_id = queue.enqueue(task, args, timeout_s=1)
    follower = queue.enqueue("sample_tasks.square", {"x": 3})
    start_supervisor("--concurrency", "1", "--abort-grace-s", "1")
    worker_pid = int(wait_for(lambda: marker.exists() and marker.read_text()))
    started = time.monotonic()

    result = wait_final(queue, task_id)
    assert result.status == TaskStatus.FAILED
    assert result.error == "Task timed out after 1 seconds"
    # timeout (1 s) + abort grace (1 s) + 2 s of slack
    wait_for(lambda: not pid_alive(worker_pid), timeout_s=4, message=f"worker process {worker_pid} to end")
    assert time.monotonic() - started < 4 + 1
    assert wait_final(queue, follower).result == 9


def test_timeout_event_sequence(queue, start_supervisor, tmp_path, events_path):
    task_id = queue.enqueue("sample_tasks.sleep", {"seconds": 60}, timeout_s=0.5)
    supervisor = start_supervisor("--concurrency", "1")
    assert wait_final(queue, task_id).error == "Task timed out after 0.5 seconds"
    wait_for(lambda: "on_failure" in events_for(events_path, task_id))
    events = [e for e in read_events(events_path) if e["task_id"] == task_id]
    assert [e["event"] for e in events] == ["before_job", "on_failure"]
    assert events[0]["pid"] != supervisor.pid
    assert events[1]["pid"] == supervisor.pid
    assert events[1]["error"] == "Task timed out after 0.5 seconds"


def test_output_over_limit_fails_task(queue, start_supervisor):
    task_id = queue.enqueue("sample_tasks.stream", {"count": 1000})
    start_supervisor("--concurrency", "1", "--max-output-bytes", "100")
    task = wait_final(queue, task_id)
    assert task.status == TaskStatus.FAILED
    assert "Task output exceeded the limit of 100 bytes" in task.error
    assert len(task.output.encode()) <= 100


def test_log_over_limit_truncated(queue, start_supervisor):
    task_id = queue.enqueue("sample_tasks.shout", {"text": "x" * 5000})
    start_supervisor("--concurrency", "1", "--max-log-bytes", "1000")
    task = wait_final(queue, task_id)
    assert task.status == TaskStatus.COMPLETED
    assert task.log.startswith("stdout: xxx")
    assert "more bytes of log dropped at the 1000-byte limit" in task.log


def test_supervisor_logs_sqlite_version_and_guard(queue, start_supervisor):
    import sqlite3

    from litequeue.connection import has_wal_reset_bug

    supervisor = start_supervisor("--concurrency", "1")
    log = wait_for(lambda: "WAL-reset guard" in supervisor.log() and supervisor.log())
    expected = "WAL-reset guard on" if has_wal_reset_bug() else "WAL-reset guard off"
    assert f"SQLite {sqlite3.sqlite_version}; {expected}" in log


def test_retries_then_success(queue, start_supervisor, tmp_path, events_path):
    runs = tmp_path / "runs"
    task_id = queue.enqueue("sample_tasks.fail_until", {"path": str(runs), "failures": 2}, max_retries=2)
    start_supervisor("--concurrency", "1", "--retry-delay-s", "0.3")
    task = wait_final(queue, task_id)
    assert task.status == TaskStatus.COMPLETED
    assert task.result == 3
    assert task.attempts == 3
    wait_for(lambda: "on_success" in events_for(events_path, task_id))
    assert events_for(events_path, task_id) == [
        "before_job", "on_retry", "before_job", "on_retry", "before_job", "on_success"]


def test_retry_delays_grow(queue, start_supervisor, tmp_path, events_path):
    runs = tmp_path / "runs"
    task_id = queue.enqueue("sample_tasks.fail_until", {"path": str(runs), "failures": 5}, max_retries=2)
    start_supervisor("--concurrency", "1", "--retry-delay-s", "0.3")
    task = wait_final(queue, task_id)
    assert task.status == TaskStatus.FAILED
    assert task.attempts == 3
    assert "RuntimeError('failure 3')" in task.error
    wait_for(lambda: "on_failure" in events_for(events_path, task_id))
    assert events_for(events_path, task_id) == [
        "before_job", "on_retry", "before_job", "on_retry", "before_job", "on_failure"]


def test_retry_backoff_spacing(queue, start_supervisor, tmp_path):
    """Consecutive attempts start at least base * 2**(n-1) apart."""
    stamps = tmp_path / "stamps"
    task_id = queue.enqueue("sample_tasks.fail_until", {"path": str(stamps), "failures": 9}, max_retries=3)
    start_supervisor("--concurrency", "1", "--retry-delay-s", "0.2")
    started_times = []

    def record_start():
        task = queue.get(task_id)
        if task.started is not None and (not started_times or task.started != started_times[-1]):
            started_times.append(task.started)
        return task.is_final

    wait_for(record_start)
    gaps = [later - earlier for earlier, later in zip(started_times, started_times[1:])]
    assert len(gaps) == 3, started_times
    for index, gap in enumerate(gaps):
        assert gap >= 0.2 * 2 ** index, gaps


def test_generator_streams_output(queue, start_supervisor, events_path):
    task_id = queue.enqueue("sample_tasks.stream", {"count": 100})
    start_supervisor("--concurrency", "1")
    task = wait_final(queue, task_id)
    assert task.status == TaskStatus.COMPLETED
    assert task.output == "".join(f"item {i}\n" for i in range(100))
    wait_for(lambda: "on_success" in events_for(events_path, task_id))
    events = events_for(events_path, task_id)
    assert events == ["before_job"] + ["before_loop", "after_loop"] * 100 + ["on_success"]


def test_async_task_runs(queue, start_supervisor):
    task_id = queue.enqueue("sample_tasks.async_double", {"x": 21})
    start_supervisor("--concurrency", "1")
    assert wait_final(queue, task_id).result == 42


def test_unencodable_result_fails_clearly(queue, start_supervisor):
    task_id = queue.enqueue("sample_tasks.return_set")
    start_supervisor("--concurrency", "1")
    task = wait_final(queue, task_id)
    assert task.status == TaskStatus.FAILED
    assert task.error.startswith("Task returned a value that JSON cannot encode (set)")
    assert task.result is None


def test_stdout_and_stderr_captured(queue, start_supervisor):
    task_id = queue.enqueue("sample_tasks.shout", {"text": "hi"})
    start_supervisor("--concurrency", "1")
    task = wait_final(queue, task_id)
    assert task.result == "HI"
    assert "stdout: hi\n" in task.log
    assert "stderr: hi\n" in task.log


@pytest.mark.parametrize("path,fragment", [
    ("missing_module_xyz.run", "No module named 'missing_module_xyz'"),
    ("sample_tasks.no_such_function", "has no attribute 'no_such_function'"),
    ("sample_tasks.not_callable", "is not callable"),
])
def test_unimportable_task_fails_clearly(queue, start_supervisor, path, fragment):
    task_id = queue.enqueue(path)
    start_supervisor("--concurrency", "1")
    task = wait_final(queue, task_id)
    assert task.status == TaskStatus.FAILED
    assert fragment in task.error


def test_allow_list_rechecked_in_worker(queue, db_path, start_supervisor):
    allowed = queue.enqueue("sample_tasks.square", {"x": 2})
    # A row written straight into the database, bypassing enqueue's check.
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE tasks SET task = 'sample_tasks.fail' WHERE id = ?", (queue.enqueue("sample_tasks.square", {"x": 3}),))
    conn.commit()
    conn.close()
    start_supervisor("--concurrency", "1", "--allow", "sample_tasks.square")
    assert wait_final(queue, allowed).result == 4
    forged = queue.list(task="sample_tasks.fail")[0]
    task = wait_final(queue, forged.id)
    assert task.status == TaskStatus.FAILED
    assert "'sample_tasks.fail' is not allowed by --allow (sample_tasks.square)" in task.error


def test_raising_receiver_changes_nothing(queue, start_supervisor, tmp_path):
    task_id = queue.enqueue("sample_tasks.add", {"a": 2, "b": 2})
    supervisor = start_supervisor("--concurrency", "1", "--import", "raising_receiver")
    task = wait_final(queue, task_id)
    assert task.status == TaskStatus.COMPLETED
    assert task.result == 4
    log = wait_for(lambda: "raising_receiver.explode" in supervisor.log() and supervisor.log())
    assert f"on_success receiver raising_receiver.explode raised for task {task_id}" in log


def test_first_sigterm_lets_short_task_finish(queue, start_supervisor, tmp_path):
    marker = tmp_path / "started"
    task_id = queue.enqueue("sample_tasks.sleep", {"seconds": 1, "marker": str(marker)})
    supervisor = start_supervisor("--concurrency", "1", "--grace-s", "20")
    wait_for(marker.exists)
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    task = queue.get(task_id)
    assert task.status == TaskStatus.COMPLETED
    assert task.result == 1


def test_long_task_requeued_after_grace(queue, start_supervisor, tmp_path, events_path):
    marker = tmp_path / "started"
    task_id = queue.enqueue("sample_tasks.sleep", {"seconds": 60, "marker": str(marker)})
    supervisor = start_supervisor("--concurrency", "1", "--grace-s", "1")
    wait_for(marker.exists)
    assert queue.get(task_id).attempts == 1
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    task = queue.get(task_id)
    assert task.status == TaskStatus.QUEUED
    assert task.attempts == 0
    assert task.worker_pid is None
    assert events_for(events_path, task_id) == ["before_job"]
    assert f"task {task_id} returned to queued" in supervisor.log()


def test_second_sigterm_skips_wait(queue, start_supervisor, tmp_path):
    marker = tmp_path / "started"
    task_id = queue.enqueue("sample_tasks.sleep", {"seconds": 60, "marker": str(marker)})
    supervisor = start_supervisor("--concurrency", "1", "--grace-s", "300")
    wait_for(marker.exists)
    supervisor.signal(signal.SIGTERM)
    wait_for(lambda: "supervisor" in supervisor.log() and "stopping" in supervisor.log())
    started = time.monotonic()
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout_s=10) == 0
    assert time.monotonic() - started < 10
    assert queue.get(task_id).status == TaskStatus.QUEUED


def test_cancel_running_task_terminates_it(queue, start_supervisor, tmp_path):
    marker = tmp_path / "started"
    task_id = queue.enqueue("sample_tasks.sleep", {"seconds": 60, "marker": str(marker)})
    follower = queue.enqueue("sample_tasks.square", {"x": 5})
    start_supervisor("--concurrency", "1")
    worker_pid = int(wait_for(lambda: marker.exists() and marker.read_text()))
    assert queue.cancel(task_id) == TaskStatus.PROGRESS
    wait_for(lambda: not pid_alive(worker_pid), message="cancelled task's worker process to end")
    task = queue.get(task_id)
    assert task.status == TaskStatus.CANCELLED
    assert wait_final(queue, follower).result == 25


def test_max_tasks_per_child_recycles(queue, start_supervisor, tmp_path):
    marker_dir = tmp_path / "runs"
    ids = queue.enqueue_many([("sample_tasks.record_run", {"path": str(marker_dir)}) for _ in range(3)])
    start_supervisor("--concurrency", "1", "--max-tasks-per-child", "1")
    for task_id in ids:
        assert wait_final(queue, task_id).status == TaskStatus.COMPLETED
    pids = marker_dir.read_text().split()
    assert len(pids) == 3
    assert len(set(pids)) == 3
