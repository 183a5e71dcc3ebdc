"""Orphans, liveness checks, fencing of late writes, and several supervisors on one file."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import DEADLINE_S, events_for, pid_alive, read_events, run_as_unprivileged_user, wait_for
from litequeue import TaskStatus, liveness, monitor, signals, storage
from litequeue.connection import Database
from litequeue.storage import Owner

ORPHAN = "Task failed: worker process (PID {pid}) no longer running"


def claim_as(db: Database, pid: int, start_token: str, host_id: str = None, queue: str = "default"):
    """Claim the next task with a made-up owner, through the real claim statement."""
    owner = Owner(pid, liveness.host_name(), host_id or liveness.host_id(), start_token)
    return db.write("claim", lambda d: storage.claim_in(d, owner, [queue], time.time()))


@pytest.fixture
def failures():
    """Failures recorded in this test process, as (task id, error)."""
    seen = []

    def receiver(task, error=None, **kwargs):
        seen.append((task.id, error))

    signals.on_failure.connect(receiver)
    yield seen
    signals.on_failure.disconnect(receiver)


def markers_with_pids(markers):
    return [int(m.read_text()) for m in markers if m.exists() and m.read_text()]


def test_killed_supervisor_tasks_recovered_by_peer(queue, start_supervisor, tmp_path, events_path):
    markers = [tmp_path / f"started-{i}" for i in range(2)]
    ids = [queue.enqueue("sample_tasks.sleep", {"seconds": 120, "marker": str(m)}, queue="long") for m in markers]
    victim = start_supervisor("--concurrency", "2", "--queue", "long")
    peer = start_supervisor("--concurrency", "1", "--queue", "other")
    pids = wait_for(lambda: len(markers_with_pids(markers)) == 2 and markers_with_pids(markers))
    owner_of = {task_id: queue.get(task_id).worker_pid for task_id in ids}
    assert sorted(owner_of.values()) == sorted(pids)

    victim.kill_group()
    killed_at = time.monotonic()
    for task_id in ids:
        task = queue.wait(task_id, timeout_s=DEADLINE_S)
        assert task.status == TaskStatus.FAILED
        assert task.error == ORPHAN.format(pid=owner_of[task_id])
    # One orphan-check interval is 0.5 s here; allow scheduling slack on a loaded machine.
    assert time.monotonic() - killed_at < 0.5 + 2.0
    wait_for(lambda: all("on_failure" in events_for(events_path, t) for t in ids))
    for task_id in ids:
        assert events_for(events_path, task_id) == ["before_job", "on_failure"]
        failures = [e for e in read_events(events_path) if e["event"] == "on_failure" and e["task_id"] == task_id]
        assert failures[0]["pid"] == peer.pid
    assert "orphan recovered" in peer.log()


def test_supervisor_started_later_recovers_at_startup(queue, start_supervisor, tmp_path):
    marker = tmp_path / "started"
    task_id = queue.enqueue("sample_tasks.sleep", {"seconds": 120, "marker": str(marker)})
    victim = start_supervisor("--concurrency", "1")
    worker_pid = int(wait_for(lambda: marker.exists() and marker.read_text()))
    victim.kill_group()
    assert queue.get(task_id).status == TaskStatus.PROGRESS
    # A long interval: only the start-up check can recover it in time.
    start_supervisor("--concurrency", "1", "--orphan-check-interval-s", "600", "--lease-s", "1200")
    task = queue.wait(task_id, timeout_s=DEADLINE_S)
    assert task.error == ORPHAN.format(pid=worker_pid)


def test_fast_restart_still_finds_orphan(queue, start_supervisor, tmp_path):
    marker = tmp_path / "started"
    task_id = queue.enqueue("sample_tasks.sleep", {"seconds": 120, "marker": str(marker)})
    victim = start_supervisor("--concurrency", "1")
    worker_pid = int(wait_for(lambda: marker.exists() and marker.read_text()))
    victim.kill_group()
    start_supervisor("--concurrency", "1")  # within a second of the kill
    killed_at = time.monotonic()
    task = queue.wait(task_id, timeout_s=DEADLINE_S)
    assert task.error == ORPHAN.format(pid=worker_pid)
    assert time.monotonic() - killed_at < 2 * 0.5 + 2.0


def test_killed_supervisor_alone_lets_workers_finish(queue, start_supervisor, tmp_path):
    marker = tmp_path / "started"
    running = queue.enqueue("sample_tasks.sleep", {"seconds": 1.5, "marker": str(marker)})
    supervisor = start_supervisor("--concurrency", "1")
    worker_pid = int(wait_for(lambda: marker.exists() and marker.read_text()))
    waiting = queue.enqueue("sample_tasks.square", {"x": 2})
    os.kill(supervisor.pid, signal.SIGKILL)
    supervisor.wait()
    wait_for(lambda: not pid_alive(worker_pid), message="orphaned worker process to exit")
    assert queue.get(running).status == TaskStatus.COMPLETED
    assert queue.get(waiting).status == TaskStatus.QUEUED


def test_reused_pid_counts_as_dead(queue, db, failures):
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        task_id = queue.enqueue("sample_tasks.noop")
        claim_as(db, stranger.pid, "12345")  # not the stranger's real start token
        assert monitor.detect_orphaned_tasks(db) == [task_id]
        assert queue.get(task_id).error == ORPHAN.format(pid=stranger.pid)
        assert failures == [(task_id, ORPHAN.format(pid=stranger.pid))]
    finally:
        stranger.kill()
        stranger.wait()


def test_live_owner_with_matching_token_kept(queue, db):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        task_id = queue.enqueue("sample_tasks.noop")
        claim_as(db, owner.pid, liveness.process_info(owner.pid).start_token)
        assert monitor.detect_orphaned_tasks(db) == []
        assert queue.get(task_id).status == TaskStatus.PROGRESS
    finally:
        owner.kill()
        owner.wait()


def test_zombie_owner_counts_as_dead(queue, db):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    token = liveness.process_info(child.pid).start_token
    wait_for(lambda: liveness.process_info(child.pid).zombie, message="child to become a zombie")
    try:
        task_id = queue.enqueue("sample_tasks.noop")
        claim_as(db, child.pid, token)
        assert monitor.detect_orphaned_tasks(db) == [task_id]
    finally:
        child.wait()


def liveness_seen_by_other_user(pid: int, token: str) -> str:
    """Return same_host_owner_alive(pid, token) as seen by a user that os.kill(pid, 0)
    rejects with PermissionError."""

    def check() -> str:
        try:
            os.kill(pid, 0)
        except PermissionError:
            return repr(liveness.same_host_owner_alive(pid, token))
        return "no-permission-error"

    return run_as_unprivileged_user(check)


def test_permission_error_is_not_proof_of_life():
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        real_token = liveness.process_info(owner.pid).start_token
        assert liveness_seen_by_other_user(owner.pid, "1") == "False"
        assert liveness_seen_by_other_user(owner.pid, real_token) == "True"
    finally:
        owner.kill()
        owner.wait()


def test_other_host_owner_judged_by_heartbeat(queue, db):
    task_id = queue.enqueue("sample_tasks.noop")
    claim_as(db, 4242, "77", host_id="elsewhere|boot|ns")
    now = time.time()
    db.write("register", lambda d: d.execute("upsert_worker", storage.sql.UPSERT_WORKER,
                                             ("elsewhere|boot|ns", 4242, "elsewhere", "77", "worker", 1, "default", now, now)))
    assert monitor.detect_orphaned_tasks(db, lease_s=30) == []
    stale = now - 60
    db.write("age", lambda d: d.execute("age", "UPDATE workers SET heartbeat = ?", (stale,)))
    assert monitor.detect_orphaned_tasks(db, lease_s=30) == [task_id]


@pytest.mark.parametrize("cleanup_first", [True, False])
def test_worker_cleanup_never_hides_orphan(queue, db, cleanup_first):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    token = liveness.process_info(dead.pid).start_token
    dead.wait()
    task_id = queue.enqueue("sample_tasks.noop")
    claim_as(db, dead.pid, token)
    stale = time.time() - 3600
    db.write("register", lambda d: d.execute("upsert_worker", storage.sql.UPSERT_WORKER, (
        liveness.host_id(), dead.pid, liveness.host_name(), token, "worker", 1, "default", stale, stale)))

    def cleanup():
        return db.write("cleanup", lambda d: storage.delete_stale_workers_in(d, time.time() - 30))

    if cleanup_first:
        assert cleanup() == 0  # the row still names a task in progress
    assert monitor.detect_orphaned_tasks(db) == [task_id]
    assert queue.get(task_id).error == ORPHAN.format(pid=dead.pid)
    assert cleanup() == 1


def test_cleaned_row_of_remote_owner_falls_back_to_task_age(queue, db):
    task_id = queue.enqueue("sample_tasks.noop")
    claim_as(db, 4242, "77", host_id="elsewhere|boot|ns")
    assert monitor.detect_orphaned_tasks(db, lease_s=30) == []
    db.write("age", lambda d: d.execute("age", "UPDATE tasks SET modified = modified - 60"))
    assert monitor.detect_orphaned_tasks(db, lease_s=30) == [task_id]


def test_orphan_recovered_once_by_two_checkers(queue, db, failures):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    task_id = queue.enqueue("sample_tasks.noop", max_retries=0)
    claim_as(db, dead.pid, "1")
    other = Database(db.path)
    assert monitor.detect_orphaned_tasks(db) == [task_id]
    assert monitor.detect_orphaned_tasks(other) == []
    assert failures == [(task_id, ORPHAN.format(pid=dead.pid))]
    other.close()


def test_orphan_with_retries_requeued(queue, db):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    task_id = queue.enqueue("sample_tasks.noop", max_retries=1)
    claim_as(db, dead.pid, "1")
    assert monitor.detect_orphaned_tasks(db) == [task_id]
    task = queue.get(task_id)
    assert task.status == TaskStatus.QUEUED
    assert task.error == ORPHAN.format(pid=dead.pid)


def test_monitor_functions_store_exact_messages(queue, db):
    ids = [queue.enqueue("sample_tasks.noop") for _ in range(3)]
    for _ in ids:
        claim_as(db, os.getpid(), liveness.own_start_token())
    monitor.handle_subprocess_exit(ids[0], -9, db)
    monitor.handle_task_timeout(ids[1], 2.0, db)
    monitor.handle_task_timeout(ids[2], 2.5, queue)
    assert queue.get(ids[0]).error == "Worker subprocess exited with code -9"
    assert queue.get(ids[1]).error == "Task timed out after 2 seconds"
    assert queue.get(ids[2]).error == "Task timed out after 2.5 seconds"
    # A second record for a task that is no longer in progress changes nothing.
    assert monitor.handle_subprocess_exit(ids[1], 1, db) is None
    assert queue.get(ids[1]).error == "Task timed out after 2 seconds"


def test_monitor_default_database_from_env(tmp_path, monkeypatch):
    path = tmp_path / "env.db"
    monkeypatch.setenv("LITEQUEUE_DB", str(path))
    monkeypatch.chdir(tmp_path)
    from litequeue import Queue

    queue = Queue()
    task_id = queue.enqueue("sample_tasks.noop")
    database = Database(path)
    claim_as(database, os.getpid(), liveness.own_start_token())
    monitor.handle_task_timeout(task_id, 7)
    assert queue.get(task_id).error == "Task timed out after 7 seconds"
    database.close()
    queue.close()


def test_paused_worker_has_one_terminal_status(queue, db, start_supervisor, tmp_path, events_path, failures):
    marker = tmp_path / "started"
    task_id = queue.enqueue("sample_tasks.sleep", {"seconds": 2, "marker": str(marker)}, timeout_s=0)
    supervisor = start_supervisor("--concurrency", "1")
    wait_for(marker.exists)
    os.killpg(supervisor.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: time.time() - queue.get(task_id).modified > 1.5, message="heartbeat to go stale")
        # Seen from another host, only the (now stale) heartbeat can speak for the owner.
        assert monitor.detect_orphaned_tasks(db, lease_s=1.0, local_host_id="another-host") == [task_id]
    finally:
        os.killpg(supervisor.pid, signal.SIGCONT)
    wait_for(lambda: "late write ignored" in supervisor.log(), message="the late completion to be logged")
    task = queue.get(task_id)
    assert task.status == TaskStatus.FAILED
    assert task.error == ORPHAN.format(pid=task.worker_pid)
    assert failures == [(task_id, task.error)]
    assert "on_success" not in events_for(events_path, task_id)
    assert "on_failure" not in events_for(events_path, task_id)  # fired here, in the test process


def test_two_supervisors_run_each_task_once(queue, start_supervisor, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    ids = queue.enqueue_many([("sample_tasks.record_run", {"path": str(runs / str(i))}) for i in range(300)])
    start_supervisor("--concurrency", "2")
    start_supervisor("--concurrency", "2")
    wait_for(lambda: queue.counts()["completed"] == 300, message="300 completed tasks")
    for i in range(300):
        assert len((runs / str(i)).read_text().split()) == 1, f"task {ids[i]} ran more than once"


def test_slow_task_of_live_worker_runs_once(queue, start_supervisor, tmp_path):
    runs = tmp_path / "runs"
    task_id = queue.enqueue("sample_tasks.record_run", {"path": str(runs), "seconds": 3}, timeout_s=10)
    start_supervisor("--concurrency", "1", "--orphan-check-interval-s", "0.3", "--lease-s", "1")
    start_supervisor("--concurrency", "1", "--orphan-check-interval-s", "0.3", "--lease-s", "1")
    task = queue.wait(task_id, timeout_s=DEADLINE_S)
    assert task.status == TaskStatus.COMPLETED
    assert len(runs.read_text().split()) == 1


def test_lease_shorter_than_heartbeat_rejected(start_supervisor):
    supervisor = start_supervisor("--heartbeat-interval-s", "2", "--lease-s", "1", fast=False)
    assert supervisor.wait() == 2
    assert "invalid lease_s 1" in supervisor.log()


def test_sigterm_in_claim_window_loses_nothing(queue, start_supervisor, tmp_path):
    paused, release = tmp_path / "paused", tmp_path / "release"
    task_id = queue.enqueue("sample_tasks.square", {"x": 7})
    start_supervisor("--concurrency", "1", "--import", "claim_pause",
                     env={"LITEQUEUE_TEST_PAUSED": str(paused), "LITEQUEUE_TEST_RELEASE": str(release)})
    worker_pid = int(wait_for(lambda: paused.exists() and paused.read_text()))
    task = queue.get(task_id)
    assert task.status == TaskStatus.PROGRESS
    assert task.worker_pid == worker_pid
    os.kill(worker_pid, signal.SIGTERM)
    release.touch()
    task = queue.wait(task_id, timeout_s=DEADLINE_S)
    assert task.status == TaskStatus.COMPLETED
    assert task.result == 49


def test_sigkill_in_claim_window_recorded(queue, start_supervisor, tmp_path):
    paused, release = tmp_path / "paused", tmp_path / "release"
    task_id = queue.enqueue("sample_tasks.square", {"x": 7})
    start_supervisor("--concurrency", "1", "--import", "claim_pause",
                     env={"LITEQUEUE_TEST_PAUSED": str(paused), "LITEQUEUE_TEST_RELEASE": str(release)})
    worker_pid = int(wait_for(lambda: paused.exists() and paused.read_text()))
    os.kill(worker_pid, signal.SIGKILL)
    task = queue.wait(task_id, timeout_s=DEADLINE_S)
    assert task.status == TaskStatus.FAILED
    assert task.error == "Worker subprocess exited with code -9"


def test_group_sigkill_in_claim_window_found_by_next_supervisor(queue, start_supervisor, tmp_path):
    paused, release = tmp_path / "paused", tmp_path / "release"
    task_id = queue.enqueue("sample_tasks.square", {"x": 7})
    first = start_supervisor("--concurrency", "1", "--import", "claim_pause",
                             env={"LITEQUEUE_TEST_PAUSED": str(paused), "LITEQUEUE_TEST_RELEASE": str(release)})
    worker_pid = int(wait_for(lambda: paused.exists() and paused.read_text()))
    first.kill_group()
    start_supervisor("--concurrency", "1")
    task = queue.wait(task_id, timeout_s=DEADLINE_S)
    assert task.error == ORPHAN.format(pid=worker_pid)


def test_completion_write_failing_once_is_retried(queue, start_supervisor, tmp_path):
    task_id = queue.enqueue("sample_tasks.square", {"x": 6})
    supervisor = start_supervisor("--concurrency", "1", "--import", "failing_completion",
                                  env={"LITEQUEUE_TEST_FAULT": "once",
                                       "LITEQUEUE_TEST_FAULT_CLAIM": str(tmp_path / "fault-owner")})
    task = queue.wait(task_id, timeout_s=DEADLINE_S)
    assert task.status == TaskStatus.COMPLETED
    assert task.result == 36
    assert task.attempts == 1
    assert (tmp_path / "fault-owner").exists(), "the fault never fired"
    assert "finish_and_claim busy (database is locked); retry 1" in supervisor.log()


@pytest.mark.parametrize("message", ["database is locked", "disk I/O error"])
def test_completion_write_failing_for_good_exits(queue, start_supervisor, tmp_path, message):
    fault_owner = tmp_path / "fault-owner"
    task_id = queue.enqueue("sample_tasks.square", {"x": 6})
    follower = queue.enqueue("sample_tasks.square", {"x": 8})
    supervisor = start_supervisor("--concurrency", "1", "--import", "failing_completion", "--write-retry-s", "1",
                                  env={"LITEQUEUE_TEST_FAULT": "always", "LITEQUEUE_TEST_FAULT_MESSAGE": message,
                                       "LITEQUEUE_TEST_FAULT_CLAIM": str(fault_owner)})
    task = queue.wait(task_id, timeout_s=DEADLINE_S)
    assert task.status == TaskStatus.FAILED
    assert task.error == "Worker subprocess exited with code 75"
    faulty_pid = int(fault_owner.read_text())
    follower_task = queue.wait(follower, timeout_s=DEADLINE_S)
    assert follower_task.result == 64
    assert follower_task.worker_pid != faulty_pid
    assert f"cannot record task {task_id}" in supervisor.log()


def test_peer_leaves_dead_worker_to_its_live_supervisor(queue, start_supervisor, tmp_path, events_path):
    marker = tmp_path / "started"
    task_id = queue.enqueue("sample_tasks.sleep", {"seconds": 60, "marker": str(marker)}, queue="long")
    owner = start_supervisor("--concurrency", "1", "--queue", "long")
    start_supervisor("--concurrency", "1", "--queue", "other", "--orphan-check-interval-s", "0.05")
    worker_pid = int(wait_for(lambda: marker.exists() and marker.read_text()))
    os.kill(worker_pid, signal.SIGKILL)
    task = queue.wait(task_id, timeout_s=DEADLINE_S)
    assert task.error == "Worker subprocess exited with code -9"
    wait_for(lambda: "on_failure" in events_for(events_path, task_id))
    failures = [e for e in read_events(events_path) if e["event"] == "on_failure" and e["task_id"] == task_id]
    assert [e["pid"] for e in failures] == [owner.pid]
