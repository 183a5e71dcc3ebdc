"""The Queue API against a real database file, without worker processes."""

import datetime
import math
import os
import stat
import sqlite3

import pytest

import litequeue
from litequeue import (
    InvalidArgsError, InvalidOptionError, InvalidTaskError, PayloadTooLargeError, Task,
    TaskNotAllowedError, TaskNotFoundError, TaskStateError, TaskStatus, TaskWaitTimeout,
)


def test_enqueue_stores_queued_task(queue):
    task_id = queue.enqueue("sample_tasks.add", {"a": 1, "b": 2}, queue="math", priority=5,
                            timeout_s=3, max_retries=2)
    task = queue.get(task_id)
    assert task.status == TaskStatus.QUEUED
    assert task.status == "queued"
    assert task.task == "sample_tasks.add"
    assert task.args == {"a": 1, "b": 2}
    assert task.queue == "math"
    assert task.priority == 5
    assert task.timeout_s == 3
    assert task.max_retries == 2
    assert task.attempts == 0
    assert task.worker_pid is None
    assert task.run_at == pytest.approx(task.created)


def test_enqueue_accepts_module_level_function(queue):
    from sample_tasks import add

    task_id = queue.enqueue(add, {"a": 1, "b": 2})
    assert queue.get(task_id).task == "sample_tasks.add"


def test_task_status_aliases():
    assert Task.QUEUED is TaskStatus.QUEUED
    assert Task.PROGRESS == "progress"
    assert Task.COMPLETED == "completed"
    assert Task.FAILED == "failed"
    assert Task.CANCELLED == "cancelled"


def test_counts_lists_all_statuses(queue):
    assert queue.counts() == {"queued": 0, "progress": 0, "completed": 0, "failed": 0, "cancelled": 0}
    queue.enqueue("sample_tasks.noop")
    queue.enqueue("sample_tasks.noop")
    cancelled = queue.enqueue("sample_tasks.noop")
    queue.cancel(cancelled)
    assert queue.counts() == {"queued": 2, "progress": 0, "completed": 0, "failed": 0, "cancelled": 1}


def test_list_filters_newest_first(queue):
    first = queue.enqueue("sample_tasks.noop", queue="a")
    second = queue.enqueue("sample_tasks.noop", queue="b")
    third = queue.enqueue("sample_tasks.add", {"a": 1, "b": 1}, queue="a")
    assert [t.id for t in queue.list()] == [third, second, first]
    assert [t.id for t in queue.list(queue="a")] == [third, first]
    assert [t.id for t in queue.list(task="sample_tasks.noop")] == [second, first]
    assert [t.id for t in queue.list(limit=1)] == [third]
    assert [t.id for t in queue.list(status="cancelled")] == []
    with pytest.raises(InvalidOptionError, match="'done'"):
        queue.list(status="done")


def test_enqueue_many_is_all_or_nothing(queue):
    ids = queue.enqueue_many([
        ("sample_tasks.add", {"a": 1, "b": 2}),
        {"task": "sample_tasks.square", "args": {"x": 3}, "priority": 4},
    ])
    assert len(ids) == 2
    assert queue.get(ids[1]).priority == 4
    with pytest.raises(InvalidArgsError):
        queue.enqueue_many([("sample_tasks.noop", {}), ("sample_tasks.noop", {"bad": {1, 2}})])
    assert queue.counts()["queued"] == 2


def test_enqueue_many_rejects_unknown_keyword(queue):
    with pytest.raises(InvalidOptionError, match="prio"):
        queue.enqueue_many([{"task": "sample_tasks.noop", "prio": 1}])
    assert queue.counts()["queued"] == 0


def test_cancel_queued_task(queue):
    task_id = queue.enqueue("sample_tasks.noop")
    assert queue.cancel(task_id) == TaskStatus.QUEUED
    task = queue.get(task_id)
    assert task.status == TaskStatus.CANCELLED
    assert task.finished is not None


def test_cancel_finished_task_raises(queue):
    task_id = queue.enqueue("sample_tasks.noop")
    queue.cancel(task_id)
    with pytest.raises(TaskStateError, match=f"task {task_id} is already cancelled"):
        queue.cancel(task_id)


def test_requeue_cancelled_task(queue):
    task_id = queue.enqueue("sample_tasks.noop")
    queue.cancel(task_id)
    queue.requeue(task_id)
    task = queue.get(task_id)
    assert task.status == TaskStatus.QUEUED
    assert task.error is None
    assert task.finished is None


def test_requeue_queued_task_raises(queue):
    task_id = queue.enqueue("sample_tasks.noop")
    with pytest.raises(TaskStateError, match="cannot be requeued"):
        queue.requeue(task_id)


@pytest.mark.parametrize("method", ["get", "cancel", "requeue"])
def test_unknown_id_raises_not_found(queue, method):
    with pytest.raises(TaskNotFoundError, match="task 999 not found"):
        getattr(queue, method)(999)


def test_wait_unknown_id_raises_not_found(queue):
    with pytest.raises(TaskNotFoundError):
        queue.wait(999, timeout_s=0.1)


def test_wait_times_out_naming_id_and_status(queue):
    task_id = queue.enqueue("sample_tasks.noop")
    with pytest.raises(TimeoutError, match=f"task {task_id} is still queued"):
        queue.wait(task_id, timeout_s=0.05)
    with pytest.raises(TaskWaitTimeout):
        queue.wait(task_id, timeout_s=0)


def test_wait_returns_final_task(queue):
    task_id = queue.enqueue("sample_tasks.noop")
    queue.cancel(task_id)
    assert queue.wait(task_id, timeout_s=1).status == TaskStatus.CANCELLED


def test_delay_and_run_at(queue):
    before = datetime.datetime.now(datetime.timezone.utc).timestamp()
    delayed = queue.get(queue.enqueue("sample_tasks.noop", delay_s=30))
    assert delayed.run_at >= before + 30
    when = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    scheduled = queue.get(queue.enqueue("sample_tasks.noop", run_at=when))
    assert scheduled.run_at == when.timestamp()
    unix = queue.get(queue.enqueue("sample_tasks.noop", run_at=1900000000.5))
    assert unix.run_at == 1900000000.5


def test_create_task_keeps_django_simple_queue_signature(db_path):
    task_id = litequeue.create_task("sample_tasks.add", {"a": 2, "b": 3}, db=db_path)
    queue = litequeue.Queue(db_path)
    assert queue.get(task_id).args == {"a": 2, "b": 3}
    with pytest.raises(TypeError, match="args must be a dict"):
        litequeue.create_task("sample_tasks.add", "a=2")
    with pytest.raises(TypeError):
        litequeue.create_task("sample_tasks.add", [1, 2], db=db_path)
    assert queue.counts()["queued"] == 1
    queue.close()


def test_create_task_uses_litequeue_db_env(tmp_path, monkeypatch):
    path = tmp_path / "from-env.db"
    monkeypatch.setenv("LITEQUEUE_DB", str(path))
    task_id = litequeue.create_task("sample_tasks.noop", {})
    assert litequeue.Queue(path).get(task_id).task == "sample_tasks.noop"


def test_unicode_args_round_trip(queue):
    args = {"text": "naïve 日本語 🙂 \u200b", "lone": "\ud800x", "nested": {"k": ["\U0010ffff"]}}
    assert queue.get(queue.enqueue("sample_tasks.noop", args)).args == args


class Unencodable:
    pass


BAD_ARGS = [
    ("a list", [1, 2], InvalidArgsError, "must be a dict"),
    ("a string", "x=1", InvalidArgsError, "must be a dict"),
    ("a set", {"s": {1, 2}}, InvalidArgsError, "set"),
    ("bytes", {"b": b"raw"}, InvalidArgsError, "bytes"),
    ("a datetime", {"d": datetime.datetime(2024, 1, 1)}, InvalidArgsError, "datetime"),
    ("NaN", {"n": math.nan}, InvalidArgsError, "JSON"),
    ("infinity", {"n": math.inf}, InvalidArgsError, "JSON"),
    ("an object deep inside", {"a": [{"b": Unencodable()}]}, InvalidArgsError, "Unencodable"),
    ("a non-string key", {"a": {1: "x"}}, InvalidArgsError, "key 1"),
]


@pytest.mark.parametrize("label,args,error,fragment", BAD_ARGS, ids=[case[0] for case in BAD_ARGS])
def test_bad_args_rejected(queue, label, args, error, fragment):
    with pytest.raises(error, match=fragment):
        queue.enqueue("sample_tasks.noop", args)
    assert queue.counts()["queued"] == 0


BAD_OPTIONS = [
    ("negative delay", {"delay_s": -1}, "delay_s"),
    ("NaN delay", {"delay_s": math.nan}, "delay_s"),
    ("infinite delay", {"delay_s": math.inf}, "delay_s"),
    ("negative timeout", {"timeout_s": -5}, "timeout_s"),
    ("NaN timeout", {"timeout_s": math.nan}, "timeout_s"),
    ("infinite timeout", {"timeout_s": math.inf}, "timeout_s"),
    ("string timeout", {"timeout_s": "10"}, "timeout_s"),
    ("float priority", {"priority": 1.5}, "priority"),
    ("bool priority", {"priority": True}, "priority"),
    ("huge priority", {"priority": 2**70}, "priority"),
    ("negative retries", {"max_retries": -1}, "max_retries"),
    ("empty queue", {"queue": ""}, "queue name"),
    ("naive run_at", {"run_at": datetime.datetime(2030, 1, 1)}, "naive"),
    ("NaN run_at", {"run_at": math.nan}, "run_at"),
    ("delay and run_at", {"delay_s": 5, "run_at": 1900000000}, "either"),
]


@pytest.mark.parametrize("label,options,fragment", BAD_OPTIONS, ids=[case[0] for case in BAD_OPTIONS])
def test_bad_options_rejected(queue, label, options, fragment):
    with pytest.raises(InvalidOptionError, match=fragment):
        queue.enqueue("sample_tasks.noop", **options)
    assert queue.counts()["queued"] == 0


BAD_TASKS = [
    ("empty", "", "''"),
    ("blank", "   ", "dotted path"),
    ("no module", "noop", "dotted path"),
    ("trailing dot", "sample_tasks.", "dotted path"),
    ("spaces", "sample tasks.noop", "dotted path"),
    ("a number", 42, "dotted path"),
    ("a lambda", lambda: None, "module-level"),
]


@pytest.mark.parametrize("label,task,fragment", BAD_TASKS, ids=[case[0] for case in BAD_TASKS])
def test_bad_task_paths_rejected(queue, label, task, fragment):
    with pytest.raises(InvalidTaskError, match=fragment):
        queue.enqueue(task)
    assert queue.counts()["queued"] == 0


def test_args_over_limit_rejected(db_path):
    queue = litequeue.Queue(db_path, max_args_bytes=1000)
    with pytest.raises(PayloadTooLargeError, match=r"over the limit of 1000 bytes"):
        queue.enqueue("sample_tasks.noop", {"blob": "x" * 2000})
    assert queue.counts()["queued"] == 0
    queue.close()


def test_args_over_sqlite_limit_rejected(db_path):
    queue = litequeue.Queue(db_path, max_args_bytes=2**40)
    connection = queue.database.conn
    if not hasattr(connection, "setlimit"):
        pytest.skip("Connection.setlimit needs Python 3.11+")
    connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 5000)
    with pytest.raises(PayloadTooLargeError):
        queue.enqueue("sample_tasks.noop", {"blob": "x" * 10000})
    assert queue.counts()["queued"] == 0
    queue.close()


def test_allow_list_rejects_at_enqueue(db_path):
    queue = litequeue.Queue(db_path, allowed_tasks=["sample_tasks.add"])
    queue.enqueue("sample_tasks.add", {"a": 1, "b": 1})
    with pytest.raises(TaskNotAllowedError, match=r"'sample_tasks.noop' is not allowed by LITEQUEUE_ALLOWED_TASKS"):
        queue.enqueue("sample_tasks.noop")
    assert queue.counts()["queued"] == 1
    queue.close()


def test_allow_list_from_environment(db_path, monkeypatch):
    monkeypatch.setenv("LITEQUEUE_ALLOWED_TASKS", "other.*, sample_tasks.sq*")
    queue = litequeue.Queue(db_path)
    queue.enqueue("sample_tasks.square", {"x": 2})
    with pytest.raises(TaskNotAllowedError):
        queue.enqueue("sample_tasks.add", {"a": 1, "b": 1})
    queue.close()


def test_invalid_queue_options(tmp_path):
    with pytest.raises(InvalidOptionError, match="synchronous"):
        litequeue.Queue(tmp_path / "a.db", synchronous="OFF")
    with pytest.raises(InvalidOptionError, match="busy_timeout_s"):
        litequeue.Queue(tmp_path / "b.db", busy_timeout_s=-1)
    with pytest.raises(InvalidOptionError, match="max_args_bytes"):
        litequeue.Queue(tmp_path / "c.db", max_args_bytes=0)


def test_new_database_is_private(db_path):
    litequeue.Queue(db_path).close()
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600


def test_database_uses_wal(queue, db_path):
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
