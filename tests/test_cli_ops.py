"""The operations commands, run as subprocesses against a real database file that contains
tasks in every status: list, show, cancel, requeue, stats, workers, detect-orphans, purge, top."""

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from conftest import DEADLINE_S, pid_alive, subprocess_env, wait_for
from litequeue import TaskNotFoundError, TaskStatus, liveness, retention, sql, storage, top
from litequeue.connection import Database
from litequeue.storage import Claim, Owner, RetryPolicy

ORPHAN = "Task failed: worker process (PID {pid}) no longer running"
FAILURE = (
    "ValueError('boom')\n"
    "Traceback (most recent call last):\n"
    '  File "sample_tasks.py", line 22, in fail\n'
    "ValueError: boom\n"
)


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "litequeue", *args], capture_output=True, text=True,
                          env=subprocess_env(env), timeout=DEADLINE_S)


def cli_json(*args):
    result = run_cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def claim_next(db: Database, queue: str = "default", pid: int = None, start_token: str = None,
               now: float = None) -> Claim:
    """Claim the next task of ``queue`` through the real claim statement. The owner is this
    test process unless ``pid`` and ``start_token`` name another one."""
    owner = Owner(pid or os.getpid(), liveness.host_name(), liveness.host_id(),
                  start_token if pid else liveness.own_start_token())
    task = db.write("claim", lambda d: storage.claim_in(d, owner, [queue], now or time.time()))
    assert task is not None, f"no task to claim in queue {queue}"
    return Claim(task.id, owner.pid, owner.host_id, task.attempts)


def complete(db: Database, claim: Claim, now: float = None) -> None:
    assert db.write("complete", lambda d: storage.complete_in(d, claim, "3", "stdout: added\n", now or time.time()))


def fail(db: Database, claim: Claim, now: float = None) -> None:
    db.write("append_output", lambda d: storage.append_output_in(d, claim, "item 0\n"))
    status = db.write("fail", lambda d: storage.fail_or_retry_in(
        d, claim, FAILURE, "stderr: oops\n", now or time.time(), RetryPolicy(), 0))
    assert status == TaskStatus.FAILED


def task_exists(queue, task_id: int) -> bool:
    try:
        queue.get(task_id)
    except TaskNotFoundError:
        return False
    return True


def wait_final(queue, task_id: int, supervisor):
    """Wait for the task to finish; on a timeout, fail with the supervisor's log."""
    try:
        return queue.wait(task_id, timeout_s=DEADLINE_S)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\nsupervisor log:\n{supervisor.log()}") from None


def output_rows(db: Database) -> int:
    return db.read(lambda d: d.execute("count", "SELECT count(*) FROM task_output").fetchone()[0])


@pytest.fixture
def tasks(queue, db):
    """One task in every status, plus a second queued one, across the queues default and reports.

    Each task is claimed right after it is enqueued, so the claim takes exactly that task. The
    task in progress is owned by this test process, which stays alive, so no orphan check
    recovers it.
    """
    ids = {}
    ids["completed"] = queue.enqueue("sample_tasks.add", {"a": 1, "b": 2})
    complete(db, claim_next(db))
    ids["failed"] = queue.enqueue("sample_tasks.fail", {"message": "boom"}, queue="reports")
    fail(db, claim_next(db, "reports"))
    ids["progress"] = queue.enqueue("sample_tasks.sleep", {"seconds": 60})
    claim_next(db)
    ids["cancelled"] = queue.enqueue("sample_tasks.noop")
    queue.cancel(ids["cancelled"])
    ids["queued"] = queue.enqueue("sample_tasks.square", {"x": 3})
    ids["queued_reports"] = queue.enqueue("sample_tasks.square", {"x": 4}, queue="reports")
    return ids


# --- input errors shared by every command ------------------------------------------------------

INSPECTING_COMMANDS = [
    ["list"], ["show", "1"], ["cancel", "1"], ["requeue", "1"], ["requeue", "--failed"], ["stats"],
    ["workers"], ["detect-orphans"], ["purge"], ["top", "--once"],
]


@pytest.mark.parametrize("command", INSPECTING_COMMANDS, ids=" ".join)
def test_missing_database_not_created(tmp_path, command):
    missing = tmp_path / "missing.db"
    result = run_cli(*command, "--db", str(missing))
    assert result.returncode == 3
    assert result.stderr == f"litequeue: error: database {missing} not found; pass --db or set LITEQUEUE_DB\n"
    assert result.stdout == ""
    assert not missing.exists()


@pytest.mark.parametrize("command", INSPECTING_COMMANDS, ids=" ".join)
def test_unreadable_database_one_line(tmp_path, command):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite database\n" * 200)
    result = run_cli(*command, "--db", str(garbage))
    assert result.returncode == 3
    assert len(result.stderr.splitlines()) == 1
    assert f"database {garbage} failed: file is not a database" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command,fragment", [
    (["list", "--status", "done"], "argument --status: invalid status 'done': use one of queued, progress"),
    (["list", "--limit", "-1"], "argument --limit: invalid count '-1': use an integer >= 0"),
    (["cancel", "abc"], "argument ID: invalid task id 'abc': use a positive integer"),
    (["requeue", "0"], "argument ID: invalid task id '0': use a positive integer"),
    (["purge", "--older-than", "3 weeks"], "argument --older-than: invalid duration '3 weeks'"),
    (["purge", "--status", "queued"], "invalid status 'queued' for a purge: only finished tasks are deleted"),
    (["top", "--interval-s", "0"], "argument --interval-s: invalid number of seconds '0'"),
])
def test_bad_argument_one_line(db_path, tasks, command, fragment):
    result = run_cli(*command, "--db", str(db_path))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert fragment in result.stderr
    assert f"see 'litequeue {command[0]} --help'" in result.stderr


@pytest.mark.parametrize("command", ["list", "show", "cancel", "requeue", "stats", "workers",
                                     "detect-orphans", "purge", "top"])
def test_help_has_examples(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert "examples:\n  litequeue " + command in result.stdout
    assert "--db PATH" in result.stdout


# --- list and show -------------------------------------------------------------------------------

def test_list_newest_first(db_path, tasks):
    result = run_cli("list", "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "QUEUE", "TASK", "STATUS", "ATTEMPTS", "AGE", "ERROR"]
    assert [int(row.split()[0]) for row in rows] == sorted(tasks.values(), reverse=True)

    failed_row = next(row for row in rows if row.split()[0] == str(tasks["failed"]))
    assert failed_row.split()[1:5] == ["reports", "sample_tasks.fail", "failed", "1"]
    # Only the first line of the error is shown, not its traceback.
    assert failed_row.endswith("ValueError('boom')")
    assert "Traceback" not in result.stdout


def test_list_json_filters(db_path, tasks):
    everything = cli_json("list", "--db", str(db_path))
    assert [task["id"] for task in everything] == sorted(tasks.values(), reverse=True)
    assert {task["status"] for task in everything} == {status.value for status in TaskStatus}
    assert "output" not in everything[0]
    assert "log" not in everything[0]

    failed = cli_json("list", "--status", "failed", "--db", str(db_path))
    assert [task["id"] for task in failed] == [tasks["failed"]]
    assert failed[0]["error"] == FAILURE
    assert failed[0]["args"] == {"message": "boom"}

    reports = cli_json("list", "--queue", "reports", "--db", str(db_path))
    assert [task["id"] for task in reports] == [tasks["queued_reports"], tasks["failed"]]

    squares = cli_json("list", "--task", "sample_tasks.square", "--status", "queued", "--db", str(db_path))
    assert [task["id"] for task in squares] == [tasks["queued_reports"], tasks["queued"]]

    assert len(cli_json("list", "--limit", "2", "--db", str(db_path))) == 2
    assert len(cli_json("list", "--limit", "0", "--db", str(db_path))) == len(tasks)
    assert cli_json("list", "--queue", "nowhere", "--db", str(db_path)) == []


def test_list_no_match_message(db_path, tasks):
    result = run_cli("list", "--queue", "nowhere", "--db", str(db_path))
    assert result.returncode == 0
    assert result.stdout == "no tasks match\n"


def test_show_prints_every_field(db_path, tasks):
    result = run_cli("show", str(tasks["failed"]), "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    labels = [line.split(":")[0] for line in lines if not line.startswith("  ")]
    assert labels == ["id", "task", "queue", "status", "args", "priority", "attempts", "timeout_s", "created",
                      "run_at", "started", "finished", "modified", "worker", "result", "error", "output", "log"]
    # The error keeps its traceback, and output and log follow in full, indented.
    error_at = lines.index("error:")
    assert lines[error_at + 1:error_at + 5] == ["  " + line for line in FAILURE.splitlines()]
    assert lines[lines.index("output:") + 1] == "  item 0"
    assert lines[lines.index("log:") + 1] == "  stderr: oops"
    assert f"worker:      PID {os.getpid()} on {liveness.host_name()}" in lines


def test_show_marks_empty_fields(db_path, tasks):
    result = run_cli("show", str(tasks["queued"]), "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    for line in ("error:       -", "output:      -", "log:         -", "started:     -", "worker:      -"):
        assert line in result.stdout.splitlines()


def test_show_json_object(db_path, tasks):
    task = cli_json("show", str(tasks["failed"]), "--db", str(db_path))
    assert task["error"] == FAILURE
    assert task["output"] == "item 0\n"
    assert task["log"] == "stderr: oops\n"
    assert task["status"] == "failed"


# --- cancel ----------------------------------------------------------------------------------

def test_cancel_queued_task_never_runs(queue, db_path, start_supervisor, tmp_path):
    runs = tmp_path / "runs"
    cancelled = queue.enqueue("sample_tasks.record_run", {"path": str(runs)})
    result = run_cli("cancel", str(cancelled), "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"task {cancelled} cancelled; it was queued and will not run\n"

    # The follower sorts after the cancelled task, so a single worker process finishing it
    # proves that the cancelled task was passed over.
    follower = queue.enqueue("sample_tasks.noop")
    supervisor = start_supervisor("--concurrency", "1")
    assert wait_final(queue, follower, supervisor).status == TaskStatus.COMPLETED
    assert not runs.exists()
    assert queue.get(cancelled).status == TaskStatus.CANCELLED


def test_cancel_running_task_stops_it(queue, db_path, start_supervisor, tmp_path):
    marker = tmp_path / "started"
    task_id = queue.enqueue("sample_tasks.sleep", {"seconds": 120, "marker": str(marker)})
    start_supervisor("--concurrency", "1")
    worker_pid = int(wait_for(lambda: marker.exists() and marker.read_text()))

    result = run_cli("cancel", str(task_id), "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert "it was running, so its supervisor stops its worker process" in result.stdout
    wait_for(lambda: not pid_alive(worker_pid), message="the cancelled task's worker process to end")
    task = queue.get(task_id)
    assert task.status == TaskStatus.CANCELLED
    assert task.error == "Task cancelled while running"


def test_cancel_processes_every_id(db_path, tasks, queue):
    ids = [tasks["completed"], 999, tasks["queued"], tasks["queued_reports"]]
    result = run_cli("cancel", *map(str, ids), "--db", str(db_path))
    # The first id that could not be cancelled sets the exit code: an invalid state.
    assert result.returncode == 6
    assert result.stderr.splitlines() == [
        f"litequeue: error: task {tasks['completed']} is already completed and cannot be cancelled; "
        "only queued or running tasks can",
        f"litequeue: error: task 999 not found in {db_path}",
    ]
    assert result.stdout.splitlines() == [
        f"task {tasks['queued']} cancelled; it was queued and will not run",
        f"task {tasks['queued_reports']} cancelled; it was queued and will not run",
    ]
    assert queue.get(tasks["completed"]).status == TaskStatus.COMPLETED
    assert queue.get(tasks["queued"]).status == TaskStatus.CANCELLED
    assert queue.get(tasks["queued_reports"]).status == TaskStatus.CANCELLED


def test_cancel_unknown_id_not_found(db_path, tasks):
    result = run_cli("cancel", "999", "--db", str(db_path))
    assert result.returncode == 5
    assert result.stderr == f"litequeue: error: task 999 not found in {db_path}\n"


# --- requeue ---------------------------------------------------------------------------------

def test_requeue_keeps_previous_attempt_in_log(db_path, tasks, queue):
    task_id = tasks["failed"]
    result = run_cli("requeue", str(task_id), "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"task {task_id} requeued; its previous error and output are in its log\n"

    task = queue.get(task_id)
    assert task.status == TaskStatus.QUEUED
    assert task.error is None
    assert task.output == ""
    assert task.attempts == 0
    log = task.log.splitlines()
    assert log[0].startswith("--- previous attempt, requeued at ")
    assert log[1].startswith("status: failed after 1 attempt(s); started ")
    assert log[2] == "error:"
    assert log[3:7] == ["  " + line for line in FAILURE.splitlines()]
    assert log[7:11] == ["output:", "  item 0", "log:", "  stderr: oops"]
    assert log[11] == "--- end of previous attempt ---"


def test_requeued_task_keeps_history_when_rerun(db_path, tasks, queue, start_supervisor):
    for name in ("failed", "cancelled"):
        assert run_cli("requeue", str(tasks[name]), "--db", str(db_path)).returncode == 0
    history = {name: queue.get(tasks[name]).log for name in ("failed", "cancelled")}
    supervisor = start_supervisor("--concurrency", "1", "--queue", "default", "--queue", "reports")

    # sample_tasks.fail fails again: its new log is the history followed by nothing it printed.
    failed = wait_final(queue, tasks["failed"], supervisor)
    assert failed.status == TaskStatus.FAILED
    assert failed.attempts == 1
    assert failed.log == history["failed"]
    assert "ValueError: boom" in failed.error

    noop = wait_final(queue, tasks["cancelled"], supervisor)
    assert noop.status == TaskStatus.COMPLETED
    assert noop.log == history["cancelled"]
    assert noop.log.splitlines()[2:4] == ["error:", "  Task cancelled"]

    # A second requeue nests the first section, indented, inside the new one.
    assert run_cli("requeue", str(tasks["failed"]), "--db", str(db_path)).returncode == 0
    nested = queue.get(tasks["failed"]).log
    assert storage.previous_attempt_section(nested) == nested
    assert "\n  --- previous attempt, requeued at " in nested
    assert nested.count("--- end of previous attempt ---") == 2


def test_previous_attempt_section_parsing():
    section = storage.format_previous_attempt(status="failed", attempts=1, started=1.0, finished=2.5,
                                              error="boom\n--- end of previous attempt ---", output="",
                                              log="printed\n", requeued=3.0)
    assert section.startswith("--- previous attempt, requeued at 1970-01-01T00:00:03.000Z ---\n")
    assert "status: failed after 1 attempt(s); started 1970-01-01T00:00:01.000Z, finished 1970-01-01T00:00:02.500Z" in section
    assert "output: (none)" in section
    # A marker line inside the error is indented, so it does not end the section early.
    assert storage.previous_attempt_section(section + "new attempt output\n") == section
    assert storage.previous_attempt_section("plain log\n") == ""
    assert storage.previous_attempt_section("") == ""
    assert storage.previous_attempt_section(None) == ""


def test_requeue_failed_with_filters(db_path, queue, db):
    failed = {}
    for name, queue_name, task in [("a", "default", "sample_tasks.fail"), ("b", "reports", "sample_tasks.fail"),
                                   ("c", "reports", "sample_tasks.add")]:
        failed[name] = queue.enqueue(task, queue=queue_name)
        fail(db, claim_next(db, queue_name))
    cancelled = queue.enqueue("sample_tasks.noop", queue="reports")
    queue.cancel(cancelled)

    result = run_cli("requeue", "--failed", "--queue", "reports", "--task", "sample_tasks.fail",
                     "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"task {failed['b']} requeued; its previous error and output are in its log",
        "requeued 1 failed task(s)",
    ]

    result = run_cli("requeue", "--failed", "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "requeued 2 failed task(s)"
    for task_id in failed.values():
        assert queue.get(task_id).status == TaskStatus.QUEUED
        assert "ValueError: boom" in queue.get(task_id).log
    # --failed leaves cancelled tasks alone.
    assert queue.get(cancelled).status == TaskStatus.CANCELLED


@pytest.mark.parametrize("args,message", [
    ([], "give the ids of the tasks to requeue, or --failed to requeue every failed task"),
    (["1", "--failed"], "give task ids or --failed, not both"),
    (["1", "--queue", "reports"], "--queue and --task select failed tasks; use them together with --failed"),
])
def test_requeue_bad_usage(db_path, tasks, args, message):
    result = run_cli("requeue", *args, "--db", str(db_path))
    assert result.returncode == 2
    assert result.stderr == f"litequeue: error: {message}\n"


def test_requeue_unfinished_task_invalid_state(db_path, tasks, queue):
    result = run_cli("requeue", str(tasks["queued"]), str(tasks["cancelled"]), "--db", str(db_path))
    assert result.returncode == 6
    assert f"task {tasks['queued']} is queued and cannot be requeued" in result.stderr
    assert queue.get(tasks["cancelled"]).status == TaskStatus.QUEUED


# --- stats and workers ----------------------------------------------------------------------

def register_worker(db: Database, pid: int, role: str, heartbeat: float, *, host_id: str = "elsewhere|boot|ns",
                    start_token: str = "1") -> None:
    """Write a row of the workers table, by default for a process on another host."""
    db.write("register", lambda d: d.execute("upsert_worker", sql.UPSERT_WORKER, (
        host_id, pid, "elsewhere", start_token, role, 100, "default,reports", heartbeat, heartbeat)))


def test_stats_json(db_path, tasks, db):
    now = time.time()
    register_worker(db, 100, "supervisor", now)
    register_worker(db, 101, "worker", now)
    register_worker(db, 102, "worker", now)
    register_worker(db, 103, "worker", now - 3600)  # outside the lease

    stats = cli_json("stats", "--db", str(db_path))
    assert stats["database"] == str(db_path)
    assert stats["counts"] == {"queued": 2, "progress": 1, "completed": 1, "failed": 1, "cancelled": 1}
    assert stats["queues"]["default"]["counts"] == {
        "queued": 1, "progress": 1, "completed": 1, "failed": 0, "cancelled": 1}
    assert stats["queues"]["reports"]["counts"] == {
        "queued": 1, "progress": 0, "completed": 0, "failed": 1, "cancelled": 0}
    assert 0 <= stats["oldest_queued_age_s"] < DEADLINE_S
    assert stats["oldest_queued_age_s"] >= stats["queues"]["reports"]["oldest_queued_age_s"]
    assert stats["finished_last_minute"] == {"completed": 1, "failed": 1}
    assert stats["finished_last_hour"] == {"completed": 1, "failed": 1}
    assert stats["live_supervisors"] == 1
    assert stats["live_worker_processes"] == 2


def test_stats_throughput_windows(db_path, queue, db):
    now = time.time()
    for finished in (now - 30, now - 600, now - 7200):
        queue.enqueue("sample_tasks.noop")
        complete(db, claim_next(db), now=finished)
    stats = cli_json("stats", "--db", str(db_path))
    assert stats["finished_last_minute"] == {"completed": 1, "failed": 0}
    assert stats["finished_last_hour"] == {"completed": 2, "failed": 0}
    assert stats["oldest_queued_age_s"] is None


def test_stats_text(db_path, tasks):
    result = run_cli("stats", "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"database: {db_path}"
    assert lines[2].split() == ["QUEUE", "QUEUED", "PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "OLDEST", "QUEUED"]
    assert lines[3].split()[:6] == ["default", "1", "1", "1", "0", "1"]
    assert lines[4].split()[:6] == ["reports", "1", "0", "0", "1", "0"]
    assert lines[5].split()[:7] == ["all", "queues", "2", "1", "1", "1", "1"]
    assert "live: 0 supervisors, 0 worker processes (heartbeat within 30 s)" in lines


def test_workers_shows_running_task(queue, db_path, start_supervisor, tmp_path):
    marker = tmp_path / "started"
    task_id = queue.enqueue("sample_tasks.sleep", {"seconds": 120, "marker": str(marker)})
    supervisor = start_supervisor("--concurrency", "2")
    worker_pid = int(wait_for(lambda: marker.exists() and marker.read_text()))

    def three_rows():
        rows = cli_json("workers", "--db", str(db_path))
        return rows if len(rows) == 3 else None

    workers = wait_for(three_rows, message="the supervisor and two worker processes in the workers table")
    roles = {worker["pid"]: worker["role"] for worker in workers}
    assert roles[supervisor.pid] == "supervisor"
    assert sorted(role for pid, role in roles.items() if pid != supervisor.pid) == ["worker", "worker"]
    assert all(worker["supervisor_pid"] == supervisor.pid for worker in workers)
    assert all(worker["host"] == liveness.host_name() for worker in workers)
    assert all(0 <= worker["heartbeat_age_s"] < DEADLINE_S for worker in workers)

    busy = next(worker for worker in workers if worker["pid"] == worker_pid)
    assert [task["id"] for task in busy["tasks"]] == [task_id]
    assert busy["tasks"][0]["task"] == "sample_tasks.sleep"
    assert busy["tasks"][0]["elapsed_s"] >= 0
    assert all(worker["tasks"] == [] for worker in workers if worker["pid"] != worker_pid)

    text = run_cli("workers", "--db", str(db_path))
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0].split() == ["HOST", "PID", "ROLE", "SUPERVISOR", "QUEUES", "HEARTBEAT", "TASK"]
    busy_line = next(line for line in text.stdout.splitlines() if f" {worker_pid} " in line)
    assert f"{task_id} sample_tasks.sleep (" in busy_line

    stats = cli_json("stats", "--db", str(db_path))
    assert stats["live_supervisors"] == 1
    assert stats["live_worker_processes"] == 2


def test_workers_skips_dead_local_process(db_path, tasks, db):
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    token = liveness.process_info(exited.pid).start_token
    exited.wait()
    now = time.time()
    register_worker(db, exited.pid, "worker", now, host_id=liveness.host_id(), start_token=token)
    register_worker(db, os.getpid(), "worker", now, host_id=liveness.host_id(), start_token=liveness.own_start_token())

    # The heartbeat of the exited process is fresh, but its PID is gone.
    workers = cli_json("workers", "--db", str(db_path))
    assert [worker["pid"] for worker in workers] == [os.getpid()]
    assert workers[0]["tasks"][0]["id"] == tasks["progress"]
    assert cli_json("stats", "--db", str(db_path))["live_worker_processes"] == 1


def test_workers_none_live(db_path, tasks):
    assert cli_json("workers", "--db", str(db_path)) == []
    result = run_cli("workers", "--db", str(db_path))
    assert result.stdout == "no live supervisors or worker processes (lease 30 s)\n"


# --- detect-orphans ------------------------------------------------------------------------

def test_detect_orphans_recovers_dead_owner(db_path, tasks, queue, db):
    orphan = queue.enqueue("sample_tasks.noop", queue="orphans")
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    token = liveness.process_info(exited.pid).start_token  # readable until the zombie is reaped
    exited.wait()
    claim_next(db, "orphans", pid=exited.pid, start_token=token)

    result = run_cli("detect-orphans", "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"task {orphan} (sample_tasks.noop) recovered, now failed: "
                             f"{ORPHAN.format(pid=exited.pid)}\n")
    assert result.stderr == ""
    assert queue.get(orphan).status == TaskStatus.FAILED
    # The task owned by this live test process stays in progress.
    assert queue.get(tasks["progress"]).status == TaskStatus.PROGRESS

    again = run_cli("detect-orphans", "--db", str(db_path))
    assert again.stdout == "no orphaned tasks found\n"


def test_detect_orphans_bad_import(db_path, tasks):
    result = run_cli("detect-orphans", "--import", "no_such_module_here", "--db", str(db_path))
    assert result.returncode == 2
    assert "cannot import --import 'no_such_module_here'" in result.stderr


# --- purge -----------------------------------------------------------------------------------

def test_purge_keeps_queued_and_progress(db_path, tasks, queue, db):
    assert output_rows(db) == 1  # the failed task's output
    result = run_cli("purge", "--older-than", "0s", "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("deleted 3 task(s) in status completed, failed, cancelled that finished before ")

    for name in ("completed", "failed", "cancelled"):
        assert not task_exists(queue, tasks[name]), name
    for name in ("queued", "queued_reports", "progress"):
        assert task_exists(queue, tasks[name]), name
    assert output_rows(db) == 0


def test_purge_default_retention_keeps_recent(db_path, tasks, queue):
    result = run_cli("purge", "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("deleted 0 task(s)")
    assert all(task_exists(queue, task_id) for task_id in tasks.values())


def test_purge_by_status_and_age(db_path, queue, db):
    now = time.time()
    old_completed = queue.enqueue("sample_tasks.noop")
    complete(db, claim_next(db), now=now - 7200)
    old_failed = queue.enqueue("sample_tasks.fail")
    fail(db, claim_next(db), now=now - 7200)
    recent_completed = queue.enqueue("sample_tasks.noop")
    complete(db, claim_next(db), now=now - 60)

    result = run_cli("purge", "--older-than", "1h", "--status", "completed", "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("deleted 1 task(s) in status completed that finished before ")
    assert not task_exists(queue, old_completed)
    assert task_exists(queue, old_failed)
    assert task_exists(queue, recent_completed)


def test_purge_vacuum_shrinks_file(db_path, queue, db):
    big = "x" * 4096
    ids = queue.enqueue_many([("sample_tasks.length", {"text": big}) for _ in range(500)])
    for _ in ids:
        complete(db, claim_next(db))
    db.checkpoint("TRUNCATE")
    size_before = os.path.getsize(db_path)

    result = run_cli("purge", "--older-than", "0", "--vacuum", "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("deleted 500 task(s)")
    assert result.stdout.splitlines()[1].startswith(f"vacuumed {db_path}: ")
    assert os.path.getsize(db_path) < size_before / 10


def test_supervisor_purges_finished_tasks(queue, start_supervisor):
    waiting = queue.enqueue("sample_tasks.noop", queue="unserved")
    done = queue.enqueue("sample_tasks.noop")
    supervisor = start_supervisor("--concurrency", "1", "--retention", "1s")
    assert wait_final(queue, done, supervisor).status == TaskStatus.COMPLETED
    wait_for(lambda: not task_exists(queue, done), message="the supervisor to purge the completed task")
    wait_for(lambda: "purged 1 finished task(s) older than 1s" in supervisor.log(), message="the purge log line")
    assert queue.get(waiting).status == TaskStatus.QUEUED
    assert "finished tasks kept 1s" in supervisor.log()


def test_worker_rejects_bad_retention(db_path):
    result = run_cli("worker", "--retention", "forever", "--db", str(db_path))
    assert result.returncode == 2
    assert "argument --retention: invalid duration 'forever'" in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("text,seconds", [("90", 90), ("30s", 30), ("15m", 900), ("12h", 43200),
                                          ("7d", 604800), ("1.5h", 5400), (" 2D ", 172800), ("0", 0)])
def test_parse_duration(text, seconds):
    assert retention.parse_duration(text) == seconds


@pytest.mark.parametrize("seconds,text", [(604800, "7d"), (43200, "12h"), (900, "15m"), (90, "90s"),
                                          (1.5, "1.5s"), (0, "0s")])
def test_format_duration(seconds, text):
    assert retention.format_duration(seconds) == text


# --- top -------------------------------------------------------------------------------------

def test_top_once_prints_counts(db_path, tasks):
    result = run_cli("top", "--once", "--db", str(db_path), env={"COLUMNS": "200", "LINES": "30"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("litequeue top  ")
    assert lines[0].endswith(f"  {db_path}")
    assert lines[1].startswith("queued 2  progress 1  completed 1  failed 1  cancelled 1  oldest queued ")
    assert lines[2].startswith("last minute: 1 completed, 1 failed (0.03/s)   last hour: 1 completed, 1 failed")
    assert lines[3] == "live: 0 supervisors, 0 worker processes (heartbeat within 30 s)"
    assert lines[5] == "RUNNING (1)"
    assert lines[7].split()[:3] == [str(tasks["progress"]), "default", "sample_tasks.sleep"]
    assert lines[9] == "LATEST FAILURES"
    assert lines[11].split()[:3] == [str(tasks["failed"]), "reports", "sample_tasks.fail"]
    assert lines[11].endswith("ValueError('boom')")
    assert "\x1b" not in result.stdout


def test_top_once_fits_width(db_path, tasks):
    result = run_cli("top", "--once", "--db", str(db_path), env={"COLUMNS": "60", "LINES": "12"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) <= 12
    assert all(len(line) <= 60 for line in lines)
    assert "RUNNING (1)" in lines


def test_top_small_terminal_message(db_path, tasks):
    result = run_cli("top", "--once", "--db", str(db_path), env={"COLUMNS": "40", "LINES": "8"})
    assert result.returncode == 0, result.stderr
    assert " ".join(result.stdout.split()) == "terminal 40x8 is too small for litequeue top; it needs 60x12"
    assert all(len(line) <= 40 for line in result.stdout.splitlines())


def test_top_live_needs_terminal(db_path, tasks):
    result = run_cli("top", "--db", str(db_path))
    assert result.returncode == 2
    assert result.stderr == ("litequeue: error: litequeue top needs a terminal for its live view; "
                             "pass --once to print one frame\n")


def read_until(fd: int, expected: bytes, seen: bytearray, start: int = 0) -> None:
    """Read from a pseudo-terminal into ``seen`` until ``expected`` appears after offset
    ``start``, within the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while expected not in seen[start:]:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {expected!r}; got {bytes(seen)[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                seen.extend(os.read(fd, 65536))
            except OSError:  # EIO: the process exited and closed the terminal
                return


def test_top_live_exits_on_ctrl_c(db_path, tasks):
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = subprocess_env({"TERM": "xterm"})
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    process = subprocess.Popen([sys.executable, "-m", "litequeue", "top", "--interval-s", "0.2",
                                "--db", str(db_path)],
                               stdin=terminal, stdout=terminal, stderr=terminal, env=env)
    os.close(terminal)
    seen = bytearray()
    try:
        read_until(controller, b"LATEST FAILURES", seen)
        assert seen.startswith(top.ENTER_SCREEN.encode() + top.HOME.encode())
        # The next frame starts with the cursor sent home again.
        read_until(controller, top.HOME.encode(), seen, start=len(seen))

        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert process.wait(timeout=DEADLINE_S) == 0
        read_until(controller, top.LEAVE_SCREEN.encode(), seen)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    assert seen.endswith(top.LEAVE_SCREEN.encode())
    assert b"Traceback" not in seen
    assert b"queued 2  progress 1  completed 1  failed 1  cancelled 1" in seen
    assert b"(Ctrl-C to quit)" in seen
