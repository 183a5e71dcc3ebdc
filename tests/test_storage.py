"""The storage layer: WAL settings, the WAL-reset guard, migrations, the process guard."""

import os
import sqlite3
import threading
import time

import pytest

import litequeue
from litequeue import ConnectionProcessError, DatabaseError, sql
from litequeue.connection import Database, has_wal_reset_bug


@pytest.mark.parametrize("version,affected", [
    ((3, 6, 23), False),
    ((3, 7, 0), True),
    ((3, 40, 1), True),
    ((3, 44, 5), True),
    ((3, 44, 6), False),
    ((3, 45, 0), True),
    ((3, 50, 6), True),
    ((3, 50, 7), False),
    ((3, 51, 2), True),
    ((3, 51, 3), False),
    ((3, 52, 0), False),
])
def test_wal_reset_bug_versions(version, affected):
    assert has_wal_reset_bug(version) is affected


def test_guard_turns_off_autocheckpoint(db_path):
    guarded = Database(db_path, wal_guard=True)
    unguarded = Database(db_path, wal_guard=False)
    assert guarded.autocheckpoint_pages() == 0
    assert unguarded.autocheckpoint_pages() == 1000
    guarded.close()
    unguarded.close()


def test_guard_matches_sqlite_version(db_path):
    database = Database(db_path)
    assert database.wal_guard is has_wal_reset_bug()
    if database.wal_guard:
        assert database.autocheckpoint_pages() == 0
    database.close()


def test_every_queue_connection_is_guarded(queue):
    if not has_wal_reset_bug():
        pytest.skip(f"SQLite {sqlite3.sqlite_version} does not have the WAL-reset bug")
    assert queue.database.autocheckpoint_pages() == 0


def test_checkpoint_waits_for_write_in_progress(db_path):
    writer = Database(db_path, wal_guard=True)
    checkpointer = Database(db_path, wal_guard=True)
    inside_write = threading.Event()
    finish_write = threading.Event()
    order = []

    def long_write(db):
        db.execute("insert", "INSERT INTO workers (host_id, pid, host, role, started, heartbeat) "
                             "VALUES ('h', 1, 'h', 'worker', 0, 0)")
        inside_write.set()
        finish_write.wait(10)
        order.append("write committed")

    thread = threading.Thread(target=lambda: writer.write("long", long_write))
    thread.start()
    assert inside_write.wait(10)

    def checkpoint():
        checkpointer.checkpoint("PASSIVE")
        order.append("checkpoint ran")

    checker = threading.Thread(target=checkpoint)
    checker.start()
    checker.join(0.3)
    assert checker.is_alive(), "the checkpoint did not wait for the write lock"
    finish_write.set()
    thread.join(10)
    checker.join(10)
    assert order == ["write committed", "checkpoint ran"]
    writer.close()
    checkpointer.close()


def test_wal_stays_bounded_under_writes(db_path):
    queue = litequeue.Queue(db_path)
    payload = {"blob": "x" * 4000}
    largest = 0
    for _ in range(40):
        queue.enqueue_many([("sample_tasks.noop", payload)] * 100)
        largest = max(largest, queue.database.wal_size())
    # 40 batches of about 400 KB: without checkpoints the WAL would pass 16 MB.
    assert largest < 12 * 1024 * 1024
    queue.close()


def test_schema_version_recorded(db_path):
    litequeue.Queue(db_path).close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == sql.SCHEMA_VERSION
    conn.close()


def test_newer_schema_rejected(db_path):
    litequeue.Queue(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {sql.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(DatabaseError, match="newer than this litequeue"):
        litequeue.Queue(db_path)


def test_missing_directory_named(tmp_path):
    path = tmp_path / "missing" / "q.db"
    with pytest.raises(DatabaseError, match=f"directory {tmp_path / 'missing'} does not exist"):
        litequeue.Queue(path)


def test_corrupted_file_named(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(DatabaseError, match=f"database {path} failed: file is not a database"):
        litequeue.Queue(path)


def test_connection_refused_in_forked_child(db_path):
    database = Database(db_path)
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_fd)
            try:
                database.conn
                answer = "used"
            except ConnectionProcessError as exc:
                answer = str(exc)
            os.write(write_fd, answer.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as reader:
        answer = reader.read()
    os.waitpid(child, 0)
    assert f"opened in process {os.getpid()} and cannot be used in process" in answer
    database.close()


def test_queue_reopens_in_forked_child(db_path):
    queue = litequeue.Queue(db_path)
    queue.enqueue("sample_tasks.noop")
    child = os.fork()
    if child == 0:
        code = 1
        try:
            queue.enqueue("sample_tasks.noop")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert queue.counts()["queued"] == 2
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    queue.close()


def test_busy_writer_is_waited_for(db_path):
    """A claim that waits behind a writer holding the lock for about a second succeeds."""
    queue = litequeue.Queue(db_path)
    holder = Database(db_path)
    inside = threading.Event()

    def hold(db):
        inside.set()
        time.sleep(1.0)

    thread = threading.Thread(target=lambda: holder.write("hold", hold))
    thread.start()
    assert inside.wait(10)
    started = time.monotonic()
    queue.enqueue("sample_tasks.noop")
    assert time.monotonic() - started >= 0.5
    thread.join(10)
    assert queue.counts()["queued"] == 1
    holder.close()
    queue.close()


def test_foreign_writer_busy_is_retried(db_path):
    """A plain sqlite3 connection (not litequeue's lock) holding the write lock is waited out."""
    queue = litequeue.Queue(db_path, busy_timeout_s=5)
    foreign = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    foreign.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.5, lambda: foreign.execute("COMMIT"))
    timer.start()
    try:
        queue.enqueue("sample_tasks.noop")
    finally:
        timer.join()
        foreign.close()
    assert queue.counts()["queued"] == 1
    queue.close()
