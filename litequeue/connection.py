"""Connections to the queue database: opening, settings, write transactions and checkpoints.

A connection belongs to the process that opened it. SQLite's own locks and caches do not
survive ``fork``, so a :class:`Database` refuses to run from another PID and callers open a
new one in each process.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import random
import sqlite3
import threading
import time
import weakref
from typing import Callable, Iterator, Optional, TypeVar

from . import sql
from .errors import ConnectionProcessError, DatabaseError, InvalidOptionError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_DB_FILENAME = "litequeue.db"
DEFAULT_BUSY_TIMEOUT_S = 10.0
SYNCHRONOUS_LEVELS = ("FULL", "NORMAL")

# A checkpoint runs after a commit that leaves the WAL larger than this. SQLite's own
# automatic checkpoint uses 1,000 pages (4 MiB at the default page size).
CHECKPOINT_THRESHOLD_BYTES = 4 * 1024 * 1024
# How long a checkpoint after a commit waits for readers, holding up other writers meanwhile.
CHECKPOINT_WAIT_S = 0.1
# When a writer restarts the WAL after a checkpoint, SQLite truncates the file to this size.
# Keeping it equal to the threshold lets later commits overwrite the file in place: on
# Linux, a commit that grows the WAL file costs about twice as much at synchronous=FULL as
# one that overwrites it (measured here: 390 against 160 microseconds per commit).
JOURNAL_SIZE_LIMIT_BYTES = CHECKPOINT_THRESHOLD_BYTES

# How many times a write transaction that hit SQLITE_BUSY is started again, after SQLite's
# own busy handler already waited busy_timeout_s.
BUSY_RETRIES = 3

MIN_SQLITE_VERSION = (3, 35, 0)  # UPDATE ... RETURNING
SQLITE_DEFAULT_MAX_LENGTH = 1_000_000_000  # SQLITE_MAX_LENGTH unless the build changed it

# Waiting for the write lock: poll every LOCK_POLL_MIN_S for the first LOCK_FINE_POLL_S,
# then back off to LOCK_POLL_MAX_S.
LOCK_POLL_MIN_S = 0.00005
LOCK_FINE_POLL_S = 0.05
LOCK_POLL_MAX_S = 0.002

# Test-only fault injection: when set, called with each statement name before it runs.
# A hook may raise sqlite3.OperationalError to simulate a failing write.
statement_hook: Optional[Callable[[str], None]] = None
# Test-only hook called with a transaction's name right after it commits.
commit_hook: Optional[Callable[[str], None]] = None



def default_path() -> str:
    """Return the database path used when none is given: LITEQUEUE_DB, else ./litequeue.db."""
    return os.environ.get("LITEQUEUE_DB") or DEFAULT_DB_FILENAME


def has_wal_reset_bug(version: tuple = sqlite3.sqlite_version_info) -> bool:
    """Return whether this SQLite version has the WAL-reset race.

    SQLite 3.7.0 to 3.51.2 can lose committed writes when a checkpoint races a writer that
    resets the WAL. 3.51.3 fixed it, with backports in 3.44.6 and 3.50.7 (SQLite's wal.html,
    "The WAL-reset bug").
    """
    version = tuple(version[:3])
    if version < (3, 7, 0) or version >= (3, 51, 3):
        return False
    if (3, 44, 6) <= version < (3, 45, 0):
        return False
    if (3, 50, 7) <= version < (3, 51, 0):
        return False
    return True


def is_busy_error(error: BaseException) -> bool:
    """Return whether a sqlite3 error means another connection holds a lock."""
    if not isinstance(error, sqlite3.OperationalError):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED and their extended codes
    message = str(error).lower()
    return "locked" in message or "busy" in message


class WriteLock:
    """An OS file lock that serialises litequeue's write transactions and checkpoints.

    On SQLite versions with the WAL-reset bug, a checkpoint must never overlap a write
    transaction. Every write takes this lock, and so does every checkpoint. Waiting here also
    replaces SQLite's sleeping busy handler with a short, fine-grained wait.
    """

    def __init__(self, db_path: str):
        self.path = db_path + "-litequeue.lock"
        self._fd: Optional[int] = None
        self._held = 0

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    def acquire(self, timeout_s: float) -> None:
        if self._held:
            self._held += 1
            return
        fd = self._open()
        deadline = time.monotonic() + timeout_s
        pause_s = LOCK_POLL_MIN_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._held = 1
                return
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline:
                    raise sqlite3.OperationalError(
                        f"database is locked: the write lock {self.path} was held by another "
                        f"process for more than {timeout_s:g} s"
                    ) from None
                # Holders keep the lock for one short transaction, so poll finely at first.
                # A blocking flock would wake sooner but could not time out.
                time.sleep(pause_s)
                if now >= deadline - timeout_s + LOCK_FINE_POLL_S:
                    pause_s = min(pause_s * 2, LOCK_POLL_MAX_S)

    def release(self) -> None:
        self._held -= 1
        if self._held == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Database:
    """One SQLite connection to a queue database, owned by the process that opened it.

    Args:
        path: The database file. Created (owner read and write only) when missing.
        synchronous: "FULL" (a commit that returned survives power loss) or "NORMAL" (it
            survives a process crash, but the latest commits can be lost on power loss).
        busy_timeout_s: How long a write waits for another writer before it is retried.
        wal_guard: Force the WAL-reset guard on or off. None turns it on exactly for SQLite
            versions that have the bug.
    """

    def __init__(
        self,
        path: Optional[str] = None,
        *,
        synchronous: str = "FULL",
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        wal_guard: Optional[bool] = None,
    ):
        self.path = os.path.abspath(os.fspath(path if path is not None else default_path()))
        self.synchronous = _check_synchronous(synchronous)
        self.busy_timeout_s = _check_busy_timeout(busy_timeout_s)
        self.wal_guard = has_wal_reset_bug() if wal_guard is None else bool(wal_guard)
        self.pid = os.getpid()
        self._thread_lock = threading.RLock()
        self._lock = WriteLock(self.path) if self.wal_guard and fcntl is not None else None
        self._next_checkpoint_size = CHECKPOINT_THRESHOLD_BYTES
        self._conn: Optional[sqlite3.Connection] = None
        self._conn = self._connect()
        _open_databases.add(self)

    # --- opening ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise DatabaseError(
                f"SQLite {sqlite3.sqlite_version} is too old for litequeue: it needs "
                f"{'.'.join(map(str, MIN_SQLITE_VERSION))} or newer (for UPDATE ... RETURNING). "
                "Use a Python build linked against a newer SQLite."
            )
        directory = os.path.dirname(self.path)
        if os.path.isdir(self.path):
            raise DatabaseError(f"cannot open database {self.path}: it is a directory; pass the path of a database file")
        if not os.path.isdir(directory):
            raise DatabaseError(
                f"cannot open database {self.path}: directory {directory} does not exist; "
                "create it first"
            )
        created = not os.path.exists(self.path)
        if created:
            self._create_private_file()
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open database {self.path}: {exc}") from exc
        try:
            self._configure(conn)
            self._migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise DatabaseError(describe_error(self.path, exc)) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_private_file(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise DatabaseError(f"cannot create database {self.path}: {exc.strerror}") from exc

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.execute(sql.SET_BUSY_TIMEOUT.format(milliseconds=int(self.busy_timeout_s * 1000)))
        mode = conn.execute(sql.GET_JOURNAL_MODE).fetchone()[0]
        if mode.lower() != "wal":
            mode = self._with_write_lock(lambda: conn.execute(sql.SET_JOURNAL_MODE_WAL).fetchone()[0])
            if mode.lower() != "wal":
                raise DatabaseError(
                    f"cannot switch database {self.path} to WAL mode (journal mode is {mode}); "
                    "litequeue needs a local file system that supports shared memory"
                )
        conn.execute(sql.SET_SYNCHRONOUS.format(level=self.synchronous))
        conn.execute(sql.SET_JOURNAL_SIZE_LIMIT.format(size_bytes=JOURNAL_SIZE_LIMIT_BYTES))
        if self.wal_guard:
            conn.execute(sql.SET_AUTOCHECKPOINT.format(pages=0))
            if hasattr(conn, "setconfig"):  # Python 3.12+
                conn.setconfig(sqlite3.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, True)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute(sql.GET_USER_VERSION).fetchone()[0]
        if version == sql.SCHEMA_VERSION:
            return
        if version > sql.SCHEMA_VERSION:
            raise DatabaseError(
                f"database {self.path} has schema version {version}, newer than this litequeue "
                f"understands ({sql.SCHEMA_VERSION}); upgrade litequeue"
            )

        def upgrade() -> None:
            conn.execute(sql.BEGIN_IMMEDIATE)
            try:
                # Read again inside the transaction: another process may have migrated.
                current = conn.execute(sql.GET_USER_VERSION).fetchone()[0]
                for step in range(current, sql.SCHEMA_VERSION):
                    for statement in _split_statements(sql.MIGRATIONS[step]):
                        conn.execute(statement)
                conn.execute(sql.SET_USER_VERSION.format(version=sql.SCHEMA_VERSION))
                conn.execute(sql.COMMIT)
            except BaseException:
                conn.execute(sql.ROLLBACK)
                raise

        self._with_write_lock(upgrade)

    # --- use -------------------------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        """The sqlite3 connection, after checking that this process opened it."""
        if os.getpid() != self.pid:
            raise ConnectionProcessError(
                f"connection to {self.path} was opened in process {self.pid} and cannot be "
                f"used in process {os.getpid()}; open a new Queue or Database in this process"
            )
        if self._conn is None:
            raise DatabaseError(f"connection to {self.path} is closed")
        return self._conn

    @property
    def max_length(self) -> int:
        """The maximum length of a string or blob this connection accepts (SQLITE_LIMIT_LENGTH), in bytes."""
        conn = self.conn
        if hasattr(conn, "getlimit"):  # Python 3.11+
            return conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
        return SQLITE_DEFAULT_MAX_LENGTH

    def _with_write_lock(self, function: Callable[[], T]) -> T:
        if self._lock is None:
            return function()
        self._lock.acquire(self.busy_timeout_s)
        try:
            return function()
        finally:
            self._lock.release()

    def execute(self, name: str, statement: str, parameters=()) -> sqlite3.Cursor:
        """Run one named statement, calling the test fault hook first."""
        if statement_hook is not None:
            statement_hook(name)
        return self.conn.execute(statement, parameters)

    def write(self, name: str, function: Callable[["Database"], T]) -> T:
        """Run ``function(self)`` inside one ``BEGIN IMMEDIATE`` transaction and commit it.

        SQLITE_BUSY is retried with jittered back-off, up to BUSY_RETRIES times after SQLite's
        own busy wait. Any other error rolls back and propagates, so nothing is half-written.
        """
        return self._retry_when_busy(name, lambda: self._write_once(name, function))

    def _retry_when_busy(self, name: str, attempt_write: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return attempt_write()
            except sqlite3.OperationalError as exc:
                if not is_busy_error(exc) or attempt >= BUSY_RETRIES:
                    raise
                attempt += 1
                pause_s = random.uniform(0.01, 0.05) * attempt
                logger.debug("write %s busy (%s); retry %d in %.3f s", name, exc, attempt, pause_s)
                time.sleep(pause_s)

    def _write_once(self, name: str, function: Callable[["Database"], T]) -> T:
        conn = self.conn
        with self._writing(name):
            conn.execute(sql.BEGIN_IMMEDIATE)
            try:
                result = function(self)
                if statement_hook is not None:
                    statement_hook(name + ".commit")
                conn.execute(sql.COMMIT)
            except BaseException:
                if conn.in_transaction:
                    conn.execute(sql.ROLLBACK)
                raise
        return result

    @contextlib.contextmanager
    def _writing(self, name: str) -> Iterator[None]:
        """Hold this connection and the write lock around one write, then checkpoint a large
        WAL (still under the lock) and call the test commit hook."""
        with self._thread_lock:
            if self._lock is not None:
                self._lock.acquire(self.busy_timeout_s)
            try:
                yield
                self._checkpoint_if_large()
            finally:
                if self._lock is not None:
                    self._lock.release()
        if commit_hook is not None:
            commit_hook(name)

    def write_statement(self, name: str, statement: str, parameters=()) -> sqlite3.Cursor:
        """Run one write statement on its own, in SQLite's autocommit mode, under the write lock.

        A single statement takes the write lock before it reads, so it needs no BEGIN
        IMMEDIATE (that matters only when a transaction reads before it writes). SQLITE_BUSY
        is retried as in :meth:`write`.
        """
        return self._retry_when_busy(name, lambda: self._write_statement_once(name, statement, parameters))

    def _write_statement_once(self, name: str, statement: str, parameters) -> sqlite3.Cursor:
        conn = self.conn
        with self._writing(name):
            if statement_hook is not None:
                statement_hook(name)
            cursor = conn.execute(statement, parameters)
        return cursor

    def read(self, function: Callable[["Database"], T]) -> T:
        """Run ``function(self)`` inside one short read transaction, so its reads agree."""
        conn = self.conn
        with self._thread_lock:
            conn.execute("BEGIN")
            try:
                return function(self)
            finally:
                conn.execute(sql.COMMIT)

    # --- checkpoints -----------------------------------------------------------------------

    def wal_size(self) -> int:
        """Return the size of the WAL file in bytes (0 when there is none)."""
        try:
            return os.stat(self.path + "-wal").st_size
        except FileNotFoundError:
            return 0

    def _checkpoint_if_large(self) -> None:
        # A PASSIVE checkpoint (SQLite's automatic kind) never restarts the WAL while readers
        # overlap without pause, so the file would grow without bound. RESTART waits briefly
        # for the readers that still use the WAL (new readers read the database file then),
        # so the next writer starts the WAL over and trims the file to the size limit.
        size = self.wal_size()
        if size <= self._next_checkpoint_size:
            return
        busy = self._run_checkpoint("RESTART", wait_s=CHECKPOINT_WAIT_S)[0]
        # After a busy checkpoint (a long reader), wait for another threshold of growth
        # rather than stalling every commit on the same reader.
        self._next_checkpoint_size = size + CHECKPOINT_THRESHOLD_BYTES if busy else CHECKPOINT_THRESHOLD_BYTES

    def _run_checkpoint(self, mode: str, wait_s: Optional[float] = None) -> tuple:
        conn = self.conn
        if wait_s is not None:
            conn.execute(sql.SET_BUSY_TIMEOUT.format(milliseconds=int(wait_s * 1000)))
        try:
            busy, log_frames, done_frames = conn.execute(sql.CHECKPOINT.format(mode=mode)).fetchone()
        except sqlite3.OperationalError as exc:
            if not is_busy_error(exc):
                raise
            logger.debug("checkpoint %s of %s busy: %s; a later one will retry", mode, self.path, exc)
            return (1, -1, -1)
        finally:
            if wait_s is not None:
                conn.execute(sql.SET_BUSY_TIMEOUT.format(milliseconds=int(self.busy_timeout_s * 1000)))
        if busy:
            logger.debug("checkpoint %s of %s stopped at frame %s of %s: readers still use the WAL",
                         mode, self.path, done_frames, log_frames)
        return busy, log_frames, done_frames

    def checkpoint(self, mode: str = "PASSIVE", wait_s: Optional[float] = None) -> tuple:
        """Run a WAL checkpoint under the write lock and return SQLite's (busy, log, done) row.

        ``mode`` is PASSIVE, FULL, RESTART or TRUNCATE. A checkpoint that finds the database
        busy returns busy=1 instead of raising, so callers try again later. ``wait_s`` bounds
        how long RESTART and TRUNCATE wait for readers (default: the busy timeout).
        """
        if mode not in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            raise InvalidOptionError(f"invalid checkpoint mode {mode!r}; use PASSIVE, FULL, RESTART or TRUNCATE")
        with self._thread_lock:
            return self._with_write_lock(lambda: self._run_checkpoint(mode, wait_s))

    def autocheckpoint_pages(self) -> int:
        """Return this connection's wal_autocheckpoint setting (0 when the guard is on)."""
        return self.conn.execute(sql.GET_AUTOCHECKPOINT).fetchone()[0]

    # --- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection. Under the WAL guard, closing happens under the write lock,
        because the last connection to close checkpoints the WAL."""
        if self._conn is None:
            return
        _open_databases.discard(self)
        if os.getpid() != self.pid:
            self.abandon()
            return
        conn, self._conn = self._conn, None
        try:
            self._with_write_lock(conn.close)
        except sqlite3.OperationalError:
            logger.warning("closing %s without the write lock: another process kept it past the busy timeout", self.path)
            conn.close()
        if self._lock is not None:
            self._lock.close()

    def abandon(self) -> None:
        """Drop a connection inherited through fork without ever closing it."""
        if self._conn is not None:
            _leak(self._conn)
            self._conn = None
        if self._lock is not None:
            self._lock = None  # the parent's lock file descriptor; never unlock it from here
        _open_databases.discard(self)

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


_open_databases: "weakref.WeakSet[Database]" = weakref.WeakSet()


def _leak(obj) -> None:
    """Keep ``obj`` alive until the process ends, even through interpreter shutdown.

    SQLite is not fork-safe: a child that closes or writes through a connection its parent
    opened can corrupt the file, and garbage collection at the child's exit would close it.
    """
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


def _abandon_after_fork() -> None:
    for database in list(_open_databases):
        database.abandon()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_abandon_after_fork)


@atexit.register
def _close_open_databases() -> None:
    # Closing at exit under the write lock keeps the close-time checkpoint inside the guard.
    for database in list(_open_databases):
        if database.pid == os.getpid():
            with contextlib.suppress(Exception):
                database.close()


def _split_statements(script: str) -> Iterator[str]:
    """Split a migration script at semicolons that end a complete SQL statement."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer
            buffer = ""
    if buffer.strip():
        yield buffer


def _check_synchronous(level: str) -> str:
    normalized = str(level).upper()
    if normalized not in SYNCHRONOUS_LEVELS:
        raise InvalidOptionError(
            f"invalid synchronous level {level!r}; use 'FULL' (durable on power loss) or "
            "'NORMAL' (faster; the latest commits can be lost on power loss)"
        )
    return normalized


def _check_busy_timeout(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise InvalidOptionError(f"invalid busy_timeout_s {value!r}; use a finite number of seconds >= 0")
    return float(value)


def describe_error(path: str, error: sqlite3.Error) -> str:
    """Return a one-line message naming the database file, the SQLite error and a fix."""
    message = str(error)
    lowered = message.lower()
    if "readonly" in lowered or "read-only" in lowered or "attempt to write" in lowered:
        hint = "the file or its directory is read-only; give the process write access"
    elif "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        hint = ("the file is not a SQLite database: check the path, and if it is the right file, it is "
                "corrupted and needs restoring from a backup")
    elif "unable to open" in lowered:
        hint = "check that the path exists and is writable"
    elif "full" in lowered:
        hint = "the disk (or the database's max_page_count) is full; free space"
    else:
        hint = "see the SQLite error above"
    return f"database {path} failed: {message} ({hint})"
