"""Periodic schedules: registration, due runs and missed-run policies with an injected clock,
exactly one task per run across processes and real supervisors, `litequeue schedules`, and
the `pause` and `resume` commands."""

import datetime
import importlib
import json
import multiprocessing
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import litequeue
from conftest import DEADLINE_S, subprocess_env, wait_for
from litequeue import TaskStatus, schedule, sql
from litequeue.connection import Database
from litequeue.cron import UTC
from litequeue.errors import (
    InvalidArgsError, InvalidOptionError, InvalidScheduleError, InvalidTaskError, TaskNotAllowedError,
)

# A Monday, 05:00 UTC.
MONDAY_5AM = datetime.datetime(2024, 1, 8, 5, 0, tzinfo=UTC).timestamp()


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """An empty schedule registry for each test, so that tests never see each other's schedules."""
    monkeypatch.setattr(schedule, "_registry", {})


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "litequeue", *args], capture_output=True, text=True,
                          env=subprocess_env(env), timeout=DEADLINE_S)


def cli_json(*args):
    result = run_cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def register_module(name: str) -> None:
    """Import a schedule module from tests/helpers again, so that it registers its schedules in
    this test's empty registry."""
    sys.modules.pop(name, None)
    importlib.import_module(name)


def positions(db: Database) -> dict:
    return dict(db.conn.execute("SELECT name, last_run_at FROM schedules").fetchall())


def tasks_of(queue, task: str, queue_name: str = None):
    return sorted(queue.list(task=task, queue=queue_name, limit=10_000), key=lambda found: found.id)


# --- registration ------------------------------------------------------------------------------

def test_every_registers_with_defaults():
    definition = schedule.every("sample_tasks.noop", seconds=300)
    assert definition.name == "sample_tasks.noop every 300s"
    assert definition.queue == "default"
    assert definition.args == {}
    assert definition.missed == "once"
    assert definition.describe() == "every 300s"
    assert schedule.registered() == [definition]


def test_cron_registers_with_options():
    definition = schedule.cron("sample_tasks.add", "0 6 * * mon-fri", args={"a": 1, "b": 2}, queue="reports",
                               priority=3, timeout_s=60, max_retries=2, missed="skip")
    assert definition.name == "sample_tasks.add 0 6 * * mon-fri"
    assert definition.describe() == "0 6 * * mon-fri UTC"
    assert definition.to_dict() == {
        "name": "sample_tasks.add 0 6 * * mon-fri", "task": "sample_tasks.add", "args": {"a": 1, "b": 2},
        "queue": "reports", "priority": 3, "timeout_s": 60.0, "max_retries": 2, "missed": "skip",
        "interval_s": None, "cron": "0 6 * * mon-fri", "timezone": "UTC",
    }


def test_cron_default_name_includes_zone():
    pytest.importorskip("zoneinfo")
    try:
        definition = schedule.cron("sample_tasks.noop", "@daily", timezone="Europe/Berlin")
    except InvalidScheduleError as exc:
        pytest.skip(f"no time zone database: {exc}")
    assert definition.name == "sample_tasks.noop @daily Europe/Berlin"


def test_callable_task_registered_by_path():
    from sample_tasks import square

    assert schedule.every(square, seconds=10).task == "sample_tasks.square"


def test_identical_registration_is_kept():
    first = schedule.every("sample_tasks.noop", seconds=60, name="tick")
    second = schedule.every("sample_tasks.noop", seconds=60, name="tick")
    assert first == second
    assert schedule.registered() == [first]


def test_duplicate_name_rejected():
    schedule.every("sample_tasks.noop", seconds=60, name="tick")
    with pytest.raises(InvalidScheduleError) as caught:
        schedule.cron("sample_tasks.add", "* * * * *", name="tick")
    assert str(caught.value) == (
        "schedule name 'tick' is already registered for sample_tasks.noop (every 60s); "
        "pass a different name= to one of them")


def test_same_task_twice_needs_names():
    schedule.cron("sample_tasks.add", "@daily", args={"a": 1, "b": 1})
    with pytest.raises(InvalidScheduleError, match="already registered"):
        schedule.cron("sample_tasks.add", "@daily", args={"a": 2, "b": 2})
    schedule.cron("sample_tasks.add", "@daily", args={"a": 2, "b": 2}, name="daily sum 2")
    assert len(schedule.registered()) == 2


@pytest.mark.parametrize("call,error,fragment", [
    (lambda: schedule.every("sample_tasks.noop", seconds=0), InvalidScheduleError,
     "invalid seconds 0: use at least 1, because supervisors check schedules once a second"),
    (lambda: schedule.every("sample_tasks.noop", seconds=0.5), InvalidScheduleError, "invalid seconds 0.5"),
    (lambda: schedule.every("sample_tasks.noop", seconds=float("nan")), InvalidScheduleError,
     "invalid seconds nan: use a finite number of seconds"),
    (lambda: schedule.every("sample_tasks.noop", seconds="60"), InvalidScheduleError, "invalid seconds '60'"),
    (lambda: schedule.every("sample_tasks.noop", seconds=True), InvalidScheduleError, "invalid seconds True"),
    (lambda: schedule.every("sample_tasks.noop", seconds=60, missed="sometimes"), InvalidScheduleError,
     "invalid missed 'sometimes': use 'once' (enqueue one run for all missed runs) or 'skip'"),
    (lambda: schedule.every("sample_tasks.noop", seconds=60, name=""), InvalidScheduleError,
     "invalid schedule name '': use a non-empty string"),
    (lambda: schedule.every("sample_tasks.noop", seconds=60, name="a\nb"), InvalidScheduleError,
     "use at most 200 printable characters"),
    (lambda: schedule.cron("sample_tasks.noop", "0 0 30 2 *"), InvalidScheduleError, "it never fires"),
    (lambda: schedule.cron("sample_tasks.noop", "@daily", timezone="Nowhere/City"), InvalidScheduleError,
     "unknown time zone 'Nowhere/City'"),
    (lambda: schedule.every("not a path", seconds=60), InvalidTaskError, "invalid task path 'not a path'"),
    (lambda: schedule.every("sample_tasks.noop", seconds=60, args=[1]), InvalidArgsError,
     "args must be a dict of keyword arguments"),
    (lambda: schedule.every("sample_tasks.noop", seconds=60, args={"when": datetime.date(2024, 1, 1)}),
     InvalidArgsError, "args may hold only JSON values"),
    (lambda: schedule.every("sample_tasks.noop", seconds=60, queue=""), InvalidOptionError, "invalid queue name"),
    (lambda: schedule.every("sample_tasks.noop", seconds=60, priority=1.5), InvalidOptionError,
     "invalid priority 1.5"),
    (lambda: schedule.every("sample_tasks.noop", seconds=60, timeout_s=-1), InvalidOptionError,
     "invalid timeout_s -1"),
    (lambda: schedule.every("sample_tasks.noop", seconds=60, max_retries=-1), InvalidOptionError,
     "invalid max_retries -1"),
])
def test_invalid_schedule_rejected(call, error, fragment):
    with pytest.raises(error) as caught:
        call()
    assert fragment in str(caught.value)
    assert schedule.registered() == []


def test_unregister_removes_schedule():
    schedule.every("sample_tasks.noop", seconds=60, name="tick")
    schedule.unregister("tick")
    schedule.unregister("never registered")
    assert schedule.registered() == []


def test_allow_list_checked_for_schedules():
    schedule.every("sample_tasks.noop", seconds=60, name="tick")
    schedule.check_allowed_tasks(["sample_tasks.*"], "--allow")
    schedule.check_allowed_tasks(None, "--allow")
    with pytest.raises(TaskNotAllowedError) as caught:
        schedule.check_allowed_tasks(["myapp.*"], "--allow")
    assert str(caught.value).startswith("schedule 'tick': task 'sample_tasks.noop' is not allowed by --allow")


# --- due runs with an injected clock -----------------------------------------------------------

def test_new_schedule_starts_from_now(db, queue):
    tick = schedule.every("sample_tasks.noop", seconds=60, name="tick")
    result = schedule.enqueue_due(db, MONDAY_5AM)
    assert result.runs == []
    assert result.next_run_at == MONDAY_5AM + 60
    assert positions(db) == {"tick": MONDAY_5AM}
    assert tasks_of(queue, tick.task) == []


def test_due_run_enqueued_once(db, queue):
    tick = schedule.every("sample_tasks.square", seconds=60, name="tick", args={"x": 3}, queue="reports",
                          priority=4, timeout_s=30, max_retries=2)
    schedule.enqueue_due(db, MONDAY_5AM)
    assert schedule.enqueue_due(db, MONDAY_5AM + 59.9).runs == []

    result = schedule.enqueue_due(db, MONDAY_5AM + 60.5)
    assert [(run.name, run.run_at) for run in result.runs] == [("tick", MONDAY_5AM + 60)]
    assert result.next_run_at == MONDAY_5AM + 120
    task = queue.get(result.runs[0].task_id)
    assert (task.task, task.args, task.queue, task.priority, task.timeout_s, task.max_retries) == (
        "sample_tasks.square", {"x": 3}, "reports", 4, 30.0, 2)
    assert task.status == TaskStatus.QUEUED
    assert task.run_at == MONDAY_5AM + 60

    # The same moment again, or from another connection: the run is taken already.
    assert schedule.enqueue_due(db, MONDAY_5AM + 60.5).runs == []
    other = Database(db.path)
    assert schedule.enqueue_due(other, MONDAY_5AM + 61).runs == []
    other.close()
    assert len(tasks_of(queue, tick.task)) == 1


def test_interval_runs_keep_their_grid(db):
    schedule.every("sample_tasks.noop", seconds=10, name="tick")
    schedule.enqueue_due(db, MONDAY_5AM)
    run_times = []
    for late_s in (0.3, 2.0, 0.01, 9.5):
        now = (run_times[-1] if run_times else MONDAY_5AM) + 10 + late_s
        run_times += [run.run_at for run in schedule.enqueue_due(db, now).runs]
    assert run_times == [MONDAY_5AM + 10, MONDAY_5AM + 20, MONDAY_5AM + 30, MONDAY_5AM + 40]


def test_cron_run_at_fire_time(db, queue):
    report = schedule.cron("sample_tasks.add", "0 6 * * mon-fri", args={"a": 1, "b": 2})
    schedule.enqueue_due(db, MONDAY_5AM)
    result = schedule.enqueue_due(db, MONDAY_5AM + 3600.2)
    assert [run.run_at for run in result.runs] == [MONDAY_5AM + 3600]
    assert result.next_run_at == MONDAY_5AM + 3600 + 86400
    assert queue.get(result.runs[0].task_id).args == {"a": 1, "b": 2}
    assert report.name in positions(db)


def test_missed_once_enqueues_one_run(db, queue):
    schedule.every("sample_tasks.noop", seconds=60, name="tick", missed="once")
    schedule.enqueue_due(db, MONDAY_5AM)
    # Ten runs were due while nothing checked.
    now = MONDAY_5AM + 10 * 60 + 5
    result = schedule.enqueue_due(db, now)
    assert [run.run_at for run in result.runs] == [now]
    assert positions(db) == {"tick": now}
    assert result.next_run_at == now + 60
    assert schedule.enqueue_due(db, now + 1).runs == []
    assert len(tasks_of(queue, "sample_tasks.noop")) == 1


def test_missed_skip_enqueues_nothing(db, queue):
    schedule.every("sample_tasks.noop", seconds=60, name="tick", missed="skip")
    schedule.enqueue_due(db, MONDAY_5AM)
    now = MONDAY_5AM + 10 * 60 + 5
    result = schedule.enqueue_due(db, now)
    assert result.runs == []
    assert positions(db) == {"tick": now}
    assert result.next_run_at == now + 60
    assert [run.run_at for run in schedule.enqueue_due(db, now + 60).runs] == [now + 60]


@pytest.mark.parametrize("missed,late_s,expected", [
    # Within the on-time window, a late run is enqueued for its fire time under both policies.
    ("skip", 30.0, "fire time"),
    ("once", 30.0, "fire time"),
    # Beyond it, the run counts as missed even though it is the only one.
    ("skip", schedule.ON_TIME_WINDOW_S + 1, None),
    ("once", schedule.ON_TIME_WINDOW_S + 1, "now"),
    ("once", 2 * 3600, "now"),
])
def test_single_late_run(db, missed, late_s, expected):
    schedule.cron("sample_tasks.noop", "0 6 * * *", missed=missed)
    schedule.enqueue_due(db, MONDAY_5AM)
    fire_time = MONDAY_5AM + 3600
    now = fire_time + late_s
    runs = schedule.enqueue_due(db, now).runs
    expected_run_at = {"fire time": [fire_time], "now": [now], None: []}[expected]
    assert [run.run_at for run in runs] == expected_run_at


def test_missed_cron_runs_follow_policy(db, queue):
    once = schedule.cron("sample_tasks.noop", "*/5 * * * *", name="every five minutes", missed="once")
    skip = schedule.cron("sample_tasks.noop", "*/5 * * * *", name="every five minutes, skip", missed="skip",
                         queue="reports")
    schedule.enqueue_due(db, MONDAY_5AM)
    # Down from 05:00 to 07:02:30: 24 fire times passed.
    now = MONDAY_5AM + 2 * 3600 + 150
    result = schedule.enqueue_due(db, now)
    assert [(run.name, run.run_at) for run in result.runs] == [(once.name, now)]
    assert result.next_run_at == MONDAY_5AM + 2 * 3600 + 300
    assert tasks_of(queue, "sample_tasks.noop", "reports") == []
    states = {entry["name"]: entry for entry in schedule.list_states(db, now + 1)}
    assert states[skip.name]["next_run_at"] == MONDAY_5AM + 2 * 3600 + 300
    assert states[once.name]["last_task_id"] == result.runs[0].task_id


def test_renamed_schedule_starts_again(db, queue):
    schedule.every("sample_tasks.noop", seconds=60, name="tick")
    schedule.enqueue_due(db, MONDAY_5AM)
    schedule.unregister("tick")
    schedule.every("sample_tasks.noop", seconds=60, name="tock")
    # An hour later, the new name has no position yet: no backfill.
    assert schedule.enqueue_due(db, MONDAY_5AM + 3600).runs == []
    assert positions(db) == {"tick": MONDAY_5AM, "tock": MONDAY_5AM + 3600}


def test_changed_timing_keeps_position(db):
    schedule.every("sample_tasks.noop", seconds=60, name="tick")
    schedule.enqueue_due(db, MONDAY_5AM)
    schedule.unregister("tick")
    schedule.every("sample_tasks.noop", seconds=30, name="tick")
    assert [run.run_at for run in schedule.enqueue_due(db, MONDAY_5AM + 30.5).runs] == [MONDAY_5AM + 30]


def test_advance_from_stale_position_changes_nothing(db):
    schedule.every("sample_tasks.noop", seconds=60, name="tick")
    schedule.enqueue_due(db, MONDAY_5AM)
    cursor = db.write("advance", lambda d: d.execute("advance_schedule", sql.ADVANCE_SCHEDULE, {
        "position": MONDAY_5AM + 60, "now": MONDAY_5AM + 61, "name": "tick", "expected": MONDAY_5AM - 60}))
    assert cursor.rowcount == 0
    assert positions(db) == {"tick": MONDAY_5AM}


def test_no_schedules_no_database_access(db):
    def forbidden(name):
        raise AssertionError(f"statement {name} ran without schedules")

    from litequeue import connection

    previous, connection.statement_hook = connection.statement_hook, forbidden
    try:
        assert schedule.enqueue_due(db, MONDAY_5AM) == schedule.CheckResult([], None)
    finally:
        connection.statement_hook = previous


def _check_schedule_once(db_path: str, now: float) -> int:
    """In a fresh process, register the race test's schedule and run one check at ``now``."""
    definition = schedule.every("sample_tasks.noop", seconds=60, name="race")
    database = Database(db_path)
    try:
        return len(schedule.enqueue_due(database, now, [definition]).runs)
    finally:
        database.close()


def test_racing_processes_enqueue_one_run(db, queue, db_path):
    schedule.every("sample_tasks.noop", seconds=60, name="race")
    schedule.enqueue_due(db, MONDAY_5AM)
    context = multiprocessing.get_context("spawn")
    with context.Pool(6) as pool:
        counts = pool.starmap(_check_schedule_once, [(str(db_path), MONDAY_5AM + 60.5)] * 12)
    assert sum(counts) == 1
    assert len(tasks_of(queue, "sample_tasks.noop")) == 1


def test_migration_keeps_schedule_positions(tmp_path):
    path = tmp_path / "version2.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(sql.MIGRATIONS[0])
    conn.executescript(sql.MIGRATIONS[1])
    conn.execute("INSERT INTO schedules (name, last_run_at, modified) VALUES ('tick', ?, ?)",
                 (MONDAY_5AM, MONDAY_5AM))
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()

    database = Database(path)
    assert database.conn.execute("PRAGMA user_version").fetchone()[0] == sql.SCHEMA_VERSION
    rows = database.conn.execute("SELECT name, last_run_at, last_task_id, last_task_run_at FROM schedules").fetchall()
    assert rows == [("tick", MONDAY_5AM, None, None)]
    schedule.every("sample_tasks.noop", seconds=60, name="tick")
    assert len(schedule.enqueue_due(database, MONDAY_5AM + 61).runs) == 1
    database.close()


# --- real supervisors --------------------------------------------------------------------------

def stop(supervisor) -> None:
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0, supervisor.log()


def test_two_supervisors_enqueue_each_run_once(queue, db, start_supervisor):
    first = start_supervisor("--import", "every_second_schedule", "--concurrency", "1")
    second = start_supervisor("--import", "every_second_schedule", "--concurrency", "1")

    def enough_runs():
        return len(tasks_of(queue, "sample_tasks.noop")) >= 6

    wait_for(enough_runs, message="six runs of the every-second schedule")
    stop(first)
    stop(second)

    tasks = tasks_of(queue, "sample_tasks.noop")
    run_times = sorted(task.run_at for task in tasks)
    assert len(set(run_times)) == len(run_times), "two tasks for one run time"
    # One second apart on the schedule's grid; more only where runs were missed.
    gaps = [later - earlier for earlier, later in zip(run_times, run_times[1:])]
    assert min(gaps) > 0.999, gaps
    # Each run was enqueued close to its time, within a generous bound.
    assert all(task.created - task.run_at < 5 for task in tasks)
    row = db.conn.execute("SELECT last_task_id, last_task_run_at FROM schedules WHERE name = 'every-second'").fetchone()
    assert row == (max(task.id for task in tasks), run_times[-1])
    for supervisor in (first, second):
        assert "schedule every-second: task sample_tasks.noop, every 1s, queue default, missed=once" in supervisor.log()


def test_supervisor_applies_missed_policies(queue, db, start_supervisor):
    register_module("missed_run_schedules")

    # Downtime: the hourly schedules were last seen three hours and a bit ago.
    down_since = time.time() - 3 * 3600 - 5
    hourly = [definition for definition in schedule.registered() if definition.name.startswith("hourly")]
    schedule.enqueue_due(db, down_since, hourly)
    started = time.time()
    supervisor = start_supervisor("--import", "missed_run_schedules", "--queue", "default", "--queue", "reports")

    def caught_up():
        moved = positions(db)
        return moved["hourly-once"] > started and moved["hourly-skip"] > started

    wait_for(caught_up, message="the supervisor to handle the missed runs")
    once_tasks = [task for task in tasks_of(queue, "sample_tasks.noop") if task.queue == "default"]
    assert len(once_tasks) == 1
    assert once_tasks[0].run_at >= started
    assert tasks_of(queue, "sample_tasks.noop", "reports") == []
    # The cron schedule is new to this database: it starts from now, without runs for the past.
    assert tasks_of(queue, "sample_tasks.add") == []
    assert queue.wait(once_tasks[0].id, timeout_s=DEADLINE_S).status == TaskStatus.COMPLETED

    log = supervisor.log()
    assert "schedule hourly-once: runs from" in log
    assert "enqueued one run now for all of them (missed='once')" in log
    assert "schedule hourly-skip: runs from" in log
    assert "skipped them (missed='skip')" in log
    stop(supervisor)


def test_supervisor_rejects_disallowed_schedule(db_path, queue, start_supervisor):
    supervisor = start_supervisor("--import", "every_second_schedule", "--allow", "myapp.*")
    assert supervisor.wait() == 2
    assert ("litequeue: error: schedule 'every-second': task 'sample_tasks.noop' is not allowed by --allow "
            "(myapp.*); add a matching pattern there to run it, or remove the schedule") in supervisor.log()


# --- litequeue schedules -----------------------------------------------------------------------

def test_schedules_lists_unseen_schedules(db_path, queue):
    before = time.time()
    entries = cli_json("schedules", "--import", "missed_run_schedules", "--db", str(db_path))
    assert [entry["name"] for entry in entries] == ["hourly-once", "hourly-skip", "sample_tasks.add 0 6 * * mon-fri"]
    hourly_once, hourly_skip, weekday = entries
    assert hourly_once["interval_s"] == 3600
    assert hourly_once["cron"] is None
    assert hourly_skip["queue"] == "reports"
    assert hourly_skip["missed"] == "skip"
    assert weekday["cron"] == "0 6 * * mon-fri"
    assert weekday["timezone"] == "UTC"
    assert weekday["args"] == {"a": 1, "b": 2}
    assert weekday["priority"] == 5
    assert weekday["max_retries"] == 2
    for entry in entries:
        assert entry["last_run_at"] is None
        assert entry["last_task_id"] is None
        assert entry["missed_runs"] is False
        assert entry["next_run_at"] > before
    fire = datetime.datetime.fromtimestamp(weekday["next_run_at"], UTC)
    assert (fire.hour, fire.minute, fire.weekday() < 5) == (6, 0, True)


def test_schedules_shows_last_and_next_run(db_path, queue, db):
    register_module("missed_run_schedules")

    hourly = [definition for definition in schedule.registered() if definition.name.startswith("hourly")]
    now = time.time()
    schedule.enqueue_due(db, now - 2 * 3600 - 100, hourly)
    entries = {entry["name"]: entry for entry in cli_json("schedules", "--import", "missed_run_schedules",
                                                           "--db", str(db_path))}
    assert entries["hourly-once"]["missed_runs"] is True
    assert entries["hourly-skip"]["missed_runs"] is True
    # For missed runs, a supervisor running now enqueues one at once (once) or waits an hour (skip).
    assert now <= entries["hourly-once"]["next_run_at"] < now + DEADLINE_S
    assert entries["hourly-skip"]["next_run_at"] >= now + 3600

    run = schedule.enqueue_due(db, time.time(), hourly).runs[0]
    result = run_cli("schedules", "--import", "missed_run_schedules", "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "TASK", "QUEUE", "SCHEDULE", "MISSED", "LAST", "RUN", "NEXT", "RUN"]
    assert rows[0].startswith("hourly-once")
    assert f"(task {run.task_id})" in rows[0]
    assert "every 3600s" in rows[0]
    assert "0 6 * * mon-fri UTC" in rows[2]
    assert rows[2].endswith("(no supervisor has checked it yet)")


@pytest.mark.parametrize("args,code,fragment", [
    ([], 2, "the following arguments are required: --import"),
    (["--import", "no_such_module"], 2, "cannot import --import 'no_such_module': No module named 'no_such_module'"),
    (["--import", "invalid_schedule"], 2,
     "invalid cron expression '0 0 30 2 *': it never fires, because day-of-month 30 does not occur in February"),
])
def test_schedules_bad_input_one_line(db_path, queue, args, code, fragment):
    result = run_cli("schedules", *args, "--db", str(db_path))
    assert result.returncode == code
    assert len(result.stderr.splitlines()) == 1
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_schedules_without_any(db_path, queue):
    result = run_cli("schedules", "--import", "sample_tasks", "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no schedules registered by sample_tasks;")
    assert cli_json("schedules", "--import", "sample_tasks", "--db", str(db_path)) == []


# --- litequeue pause and resume ----------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["pause", "reports"], ["resume", "reports"], ["schedules", "--import", "every_second_schedule"],
], ids=" ".join)
def test_missing_database_not_created(tmp_path, command):
    missing = tmp_path / "missing.db"
    result = run_cli(*command, "--db", str(missing))
    assert result.returncode == 3
    assert result.stderr == f"litequeue: error: database {missing} not found; pass --db or set LITEQUEUE_DB\n"
    assert not missing.exists()


@pytest.mark.parametrize("command", ["pause", "resume", "schedules"])
def test_help_has_examples(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert "examples:\n  litequeue " + command in result.stdout
    assert "--db PATH" in result.stdout


def test_pause_and_resume_commands(db_path, queue):
    paused = run_cli("pause", "reports", "emails", "--db", str(db_path))
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.splitlines() == [
        "queue reports paused; its queued tasks wait until 'litequeue resume reports'",
        "queue emails paused; its queued tasks wait until 'litequeue resume emails'",
    ]
    assert queue.paused_queues() == ["emails", "reports"]
    again = run_cli("pause", "reports", "--db", str(db_path))
    assert again.stdout == "queue reports was already paused\n"

    resumed = run_cli("resume", "reports", "default", "--db", str(db_path))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines() == [
        "queue reports resumed; workers claim its queued tasks again",
        "queue default was not paused",
    ]
    assert queue.paused_queues() == ["emails"]


def test_pause_rejects_bad_queue_name(db_path, queue):
    result = run_cli("pause", "reports", "", "--db", str(db_path))
    assert result.returncode == 2
    assert result.stderr == "litequeue: error: invalid queue name '': use a non-empty string\n"
    assert queue.paused_queues() == []


def test_stats_shows_paused_queues(db_path, queue):
    queue.enqueue("sample_tasks.noop", queue="reports")
    queue.enqueue("sample_tasks.noop")
    assert run_cli("pause", "reports", "idle", "--db", str(db_path)).returncode == 0

    stats = cli_json("stats", "--db", str(db_path))
    assert stats["paused_queues"] == ["idle", "reports"]
    assert {name: entry["paused"] for name, entry in stats["queues"].items()} == {
        "default": False, "idle": True, "reports": True}
    assert stats["queues"]["idle"]["counts"] == {status.value: 0 for status in TaskStatus}
    assert stats["counts"]["queued"] == 2

    lines = run_cli("stats", "--db", str(db_path)).stdout.splitlines()
    assert lines[3].split()[:2] == ["default", "1"]
    assert lines[4].split()[:3] == ["idle", "(paused)", "0"]
    assert lines[5].split()[:3] == ["reports", "(paused)", "1"]


def test_paused_queue_waits_for_resume_command(db_path, queue, start_supervisor):
    assert run_cli("pause", "reports", "--db", str(db_path)).returncode == 0
    paused_task = queue.enqueue("sample_tasks.square", {"x": 5}, queue="reports")
    start_supervisor("--concurrency", "1", "--queue", "reports", "--queue", "default")
    # A task of another queue, enqueued later, runs while the paused one stays queued.
    probe = queue.enqueue("sample_tasks.noop")
    assert queue.wait(probe, timeout_s=DEADLINE_S).status == TaskStatus.COMPLETED
    assert queue.get(paused_task).status == TaskStatus.QUEUED
    assert run_cli("resume", "reports", "--db", str(db_path)).returncode == 0
    assert queue.wait(paused_task, timeout_s=DEADLINE_S).result == 25
