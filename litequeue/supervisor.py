"""The supervisor (``python -m litequeue worker``): starts worker processes and watches them.

It restarts worker processes that die, enforces task timeouts on its own monotonic clock,
terminates cancelled tasks, records the exit of a worker process that held a task, and
recovers orphans left by processes that are gone. It never imports or runs task functions.
It also enqueues the due runs of the periodic schedules that its --import modules register
(litequeue.schedule).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sqlite3
import sys
import time
from typing import Dict, List, Optional

from . import liveness, monitor, progress_state, retention, sql, storage
from . import schedule, wakeup
from .version import __version__
from .config import WorkerConfig
from .connection import Database, is_busy_error
from .errors import DatabaseError, InvalidOptionError, UnsupportedPlatformError
from .status import TaskStatus
from .storage import Claim, RetryPolicy
from .worker_process import worker_main

logger = logging.getLogger(__name__)

#: The supervisor stopped after a signal (or had nothing to do) and left no task behind.
EXIT_OK = 0
#: The database became unusable (deleted, corrupted, unreadable or unwritable).
EXIT_DATABASE_ERROR = 3
#: The supervisor cannot run on this platform.
EXIT_UNSUPPORTED_PLATFORM = 4

CANCEL_CHECK_INTERVAL_S = 0.5
# A schedule check waits this much past a fire time, so that it never runs just before it.
SCHEDULE_CHECK_MARGIN_S = 0.002
# How often the supervisor reads which task each worker process runs. A timeout fires at
# most this much later than the task's own seconds.
STATE_POLL_INTERVAL_S = 0.1
CHECKPOINT_INTERVAL_S = 5.0
# Finished tasks are purged this often, or every retention_s when that is shorter. One run
# deletes at most PURGE_MAX_BATCHES batches (short transactions), so it holds up the main
# loop only briefly. A run that stops at that limit runs again after PURGE_BACKLOG_INTERVAL_S.
PURGE_INTERVAL_S = 600.0
PURGE_MAX_BATCHES = 20
PURGE_BACKLOG_INTERVAL_S = 1.0
# A worker process that exits sooner than this after its start counts as a crash loop.
QUICK_EXIT_S = 1.0
MAX_RESTART_DELAY_S = 30.0
# Consecutive failures of the supervisor's own database writes before it gives up.
MAX_DATABASE_FAILURES = 3


@dataclasses.dataclass
class Child:
    """A worker process and the supervisor's record of it."""

    process: multiprocessing.Process
    state: object  # the shared array of litequeue.progress_state
    abort_target: object
    pid: int
    start_token: str
    spawned_at: float
    task_id: Optional[int] = None
    state_sequence: int = 0
    attempts: int = 0
    task_started_at: float = 0.0
    timeout_s: float = 0.0
    timeout_recorded: bool = False
    aborting_task: Optional[int] = None
    kill_at: Optional[float] = None

    def claim(self, host_id: str) -> Claim:
        return Claim(self.task_id, self.pid, host_id, self.attempts)


class Supervisor:
    """Runs ``config.concurrency`` worker processes until a signal stops it.

    ``clock`` is the monotonic clock used for timeouts and intervals; tests may pass their
    own.
    """

    def __init__(self, config: WorkerConfig, *, clock=time.monotonic):
        self.config = config
        self.clock = clock
        self.children: Dict[int, Child] = {}
        self.retry_policy = RetryPolicy(config.retry_base_s, config.retry_max_s)
        self.signal_count = 0
        self.stop_deadline: Optional[float] = None
        self.fatal_error: Optional[str] = None
        self.database_failures = 0
        self.quick_exits = 0
        self.workers_started = 0
        self.next_spawn_at = 0.0
        self.next_due: Dict[str, float] = {}
        self.db: Optional[Database] = None
        self.host_id = liveness.host_id()
        self.host = liveness.host_name()
        self._signal_read_fd: Optional[int] = None
        self._db_inode: Optional[int] = None
        self.context = multiprocessing.get_context(config.start_method)
        self.parent_pid = os.getppid()
        self.schedule_notifier: Optional[wakeup.Notifier] = None

    # --- start and stop --------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped and return the exit code (EXIT_OK or EXIT_DATABASE_ERROR)."""
        if sys.platform.startswith("win"):
            raise UnsupportedPlatformError(
                "the litequeue worker needs POSIX signals and process control, which Windows lacks; "
                "run it on Linux or macOS (enqueueing and inspecting tasks work on Windows)"
            )
        self._install_signals()
        import_modules(self.config.imports)
        schedule.check_allowed_tasks(self.config.allow, self.config.allow_setting)
        self.db = Database(self.config.db_path, synchronous=self.config.synchronous,
                           busy_timeout_s=self.config.busy_timeout_s)
        self._db_inode = _inode(self.db.path)
        self._log_banner()
        self._log_schedules()
        try:
            self._register_self()
            self._run_step("orphan check", self._detect_orphans)
            self._loop()
        finally:
            self._stop_children()
            self._unregister_self()
            self.db.close()
        if self.fatal_error:
            logger.critical("supervisor %s exits: %s", os.getpid(), self.fatal_error)
            return EXIT_DATABASE_ERROR
        logger.info("supervisor %s stopped", os.getpid())
        return EXIT_OK

    def _log_banner(self) -> None:
        logger.info(
            "litequeue %s supervisor started: PID %s, database %s, concurrency %d, queues %s, "
            "task timeout %s, start method %s, finished tasks kept %s",
            __version__, os.getpid(), self.db.path, self.config.concurrency,
            ", ".join(self.config.queues),
            f"{self.config.timeout_s:g} s" if self.config.timeout_s else "off",
            self.context.get_start_method(),
            retention.format_duration(self.config.retention_s) if self.config.retention_s else "forever",
        )
        logger.info(
            "SQLite %s; WAL-reset guard %s", sqlite3.sqlite_version,
            "on (automatic checkpoints off, checkpoints under a file lock)" if self.db.wal_guard
            else "off (this SQLite version is not affected)",
        )

    def _install_signals(self) -> None:
        self._signal_read_fd = wakeup.signal_wakeup_pipe()
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        if self.config.exit_with_parent:
            liveness.signal_on_parent_death(signal.SIGTERM)

    def _check_parent(self) -> None:
        # Embedded use (litequeue.Worker): when the application that started this supervisor
        # is gone, stop as after a first signal. The main loop wakes at least once a second.
        if self.config.exit_with_parent and not self.stopping and os.getppid() != self.parent_pid:
            logger.warning("supervisor %s: its parent process %s is gone; stopping", os.getpid(), self.parent_pid)
            self.signal_count += 1

    def _on_stop_signal(self, signum, frame) -> None:
        # Only count: the main loop acts on it.
        self.signal_count += 1

    @property
    def stopping(self) -> bool:
        return self.signal_count > 0 or self.fatal_error is not None

    # --- main loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            self._check_parent()
            if self.stopping and self.stop_deadline is None:
                self._begin_stop()
            if self.stop_deadline is not None and (
                    not self.children or self.signal_count > 1 or self.clock() >= self.stop_deadline
                    or self.fatal_error):
                return
            if not self.stopping:
                self._spawn_missing()
            self._wait_for_events(self._next_wakeup())
            self._reap_children()
            self._enforce_deadlines()
            self._run_periodic()

    def _begin_stop(self) -> None:
        grace_s = 0.0 if self.fatal_error else self.config.grace_s
        self.stop_deadline = self.clock() + grace_s
        running = [child.task_id for child in self.children.values() if child.task_id is not None]
        logger.info("supervisor %s stopping: claiming no more tasks; waiting up to %g s for %d running "
                    "task(s); a second signal skips the wait", os.getpid(), grace_s, len(running))
        for child in self.children.values():
            _send_signal(child.pid, signal.SIGTERM)

    def _next_wakeup(self) -> float:
        now = self.clock()
        moments = list(self.next_due.values())
        for child in self.children.values():
            if child.kill_at is not None:
                moments.append(child.kill_at)
            elif child.task_id is not None and child.timeout_s > 0 and not child.timeout_recorded:
                moments.append(child.task_started_at + child.timeout_s)
        if self.stop_deadline is not None:
            moments.append(self.stop_deadline)
        if not self.stopping and len(self.children) < self.config.concurrency:
            moments.append(self.next_spawn_at)
        if self.children:
            moments.append(now + STATE_POLL_INTERVAL_S)
        return max(0.0, min([now + 1.0] + moments) - now)

    def _wait_for_events(self, timeout_s: float) -> None:
        waitables = [self._signal_read_fd]
        for child in self.children.values():
            waitables.append(child.process.sentinel)
        ready = multiprocessing.connection.wait(waitables, timeout_s)
        if self._signal_read_fd in ready:
            _drain(self._signal_read_fd)
        for child in list(self.children.values()):
            self._read_state(child)

    def _read_state(self, child: Child) -> None:
        running = progress_state.read(child.state)
        if running.sequence == child.state_sequence:
            return
        child.state_sequence = running.sequence
        if running.task_id is not None and (running.task_id, running.attempts) != (child.task_id, child.attempts):
            # Timed from now, on this process's clock: the moment the supervisor learned of it.
            child.task_started_at = self.clock()
            child.timeout_recorded = False
        child.task_id, child.attempts, child.timeout_s = running.task_id, running.attempts, running.timeout_s
        if child.aborting_task is not None and child.task_id != child.aborting_task:
            # The process moved past the task it was asked to abort.
            child.aborting_task = None
            child.kill_at = None

    # --- worker processes ------------------------------------------------------------------

    def _spawn_missing(self) -> None:
        if self.clock() < self.next_spawn_at:
            return
        while len(self.children) < self.config.concurrency:
            self._spawn()

    def _spawn(self) -> None:
        state = progress_state.create(self.context)
        abort_target = self.context.RawValue("q", 0)
        process = self.context.Process(
            target=worker_main, args=(self.config, state, abort_target),
            name=f"litequeue-worker-{self._next_worker_number()}",
        )
        process.start()
        info = liveness.process_info(process.pid)
        child = Child(process, state, abort_target, process.pid,
                      info.start_token if info else "", self.clock())
        self.children[process.pid] = child
        self._run_step("register worker process", lambda: self._register(child.pid, child.start_token, "worker"))
        logger.debug("worker process %s started", process.pid)

    def _next_worker_number(self) -> int:
        # Numbers are never reused, so a replacement process gets a name of its own in logs.
        self.workers_started += 1
        return self.workers_started

    def _reap_children(self) -> None:
        for child in list(self.children.values()):
            if child.process.exitcode is None and child.process.is_alive():
                continue
            child.process.join()
            del self.children[child.pid]
            self._settle_exit(child, child.process.exitcode)

    def _settle_exit(self, child: Child, exit_code: int, *, release: bool = False) -> None:
        """Record or release the tasks a gone worker process still held, then forget it."""
        level = logging.INFO if exit_code == 0 else logging.WARNING
        logger.log(level, "worker process %s exited with code %s", child.pid, exit_code)
        self._run_step("settle exit", lambda: self._settle_tasks_of(child.pid, exit_code, release))
        self._run_step("unregister worker process", lambda: self.db.write(
            "delete_worker", lambda db: db.execute("delete_worker", sql.DELETE_WORKER, (self.host_id, child.pid))))
        self._count_quick_exit(child, exit_code)

    def _settle_tasks_of(self, pid: int, exit_code: int, release: bool) -> None:
        claims = self.db.read(lambda db: storage.progress_of_owner_in(db, self.host_id, pid))
        for claim in claims:
            if release:
                released = self.db.write("release_task", lambda db: storage.release_in(db, claim, time.time()))
                if released:
                    logger.info("task %s returned to queued: worker process %s was stopped at shutdown",
                                claim.task_id, pid)
                continue
            monitor.handle_subprocess_exit(claim.task_id, exit_code, self.db, expected=claim,
                                           retry_policy=self.retry_policy)

    def _count_quick_exit(self, child: Child, exit_code: int) -> None:
        if self.stopping:
            return
        if exit_code != 0 and self.clock() - child.spawned_at < QUICK_EXIT_S:
            self.quick_exits += 1
            delay_s = min(MAX_RESTART_DELAY_S, 0.5 * 2 ** (self.quick_exits - 1))
            self.next_spawn_at = self.clock() + delay_s
            logger.warning("worker process %s exited %.2f s after starting (%d in a row); next start in %.1f s",
                           child.pid, self.clock() - child.spawned_at, self.quick_exits, delay_s)
        else:
            self.quick_exits = 0

    def _stop_children(self) -> None:
        """Kill what is left after the grace period and put its tasks back to queued."""
        for child in list(self.children.values()):
            if child.process.is_alive():
                logger.warning("worker process %s still running task %s after the grace period; killing it",
                               child.pid, child.task_id)
                _send_signal(child.pid, signal.SIGKILL)
            child.process.join()
            del self.children[child.pid]
            release = child.process.exitcode == -signal.SIGKILL
            self._settle_exit(child, child.process.exitcode, release=release)

    # --- timeouts and cancels --------------------------------------------------------------

    def _enforce_deadlines(self) -> None:
        now = self.clock()
        for child in list(self.children.values()):
            if child.kill_at is not None and now >= child.kill_at:
                logger.warning("worker process %s did not stop task %s within %g s; sending SIGKILL",
                               child.pid, child.aborting_task, self.config.abort_grace_s)
                _send_signal(child.pid, signal.SIGKILL)
                child.kill_at = None
            elif (child.task_id is not None and child.timeout_s > 0 and not child.timeout_recorded
                    and now - child.task_started_at >= child.timeout_s):
                self._time_out(child)

    def _time_out(self, child: Child) -> None:
        child.timeout_recorded = True
        claim = child.claim(self.host_id)
        logger.warning("task %s timed out after %g s in worker process %s", child.task_id, child.timeout_s, child.pid)
        # Record first, so a completion that arrives during the grace period is fenced out.
        status = self._run_step("record timeout", lambda: monitor.handle_task_timeout(
            claim.task_id, child.timeout_s, self.db, expected=claim, retry_policy=self.retry_policy))
        if status is not None:
            self._abort(child, claim.task_id)

    def _abort(self, child: Child, task_id: int) -> None:
        child.abort_target.value = task_id
        child.aborting_task = task_id
        child.kill_at = self.clock() + self.config.abort_grace_s
        _send_signal(child.pid, signal.SIGUSR1)

    def _check_cancels(self) -> None:
        running = {child.task_id: child for child in self.children.values()
                   if child.task_id is not None and child.aborting_task is None}
        if not running:
            return
        statement = sql.PROGRESS_STATUS_OF.format(placeholders=",".join("?" * len(running)))
        rows = self.db.read(lambda db: db.execute("progress_status_of", statement, tuple(running)).fetchall())
        for task_id, status, _pid, _attempts in rows:
            if status == TaskStatus.CANCELLED.value:
                child = running[task_id]
                logger.warning("task %s was cancelled; stopping worker process %s", task_id, child.pid)
                self._abort(child, task_id)

    # --- periodic work ---------------------------------------------------------------------

    def _run_periodic(self) -> None:
        intervals = {
            "heartbeat": self.config.heartbeat_interval_s,
            "orphan check": self.config.orphan_check_interval_s,
            "cancel check": CANCEL_CHECK_INTERVAL_S,
            "checkpoint": CHECKPOINT_INTERVAL_S,
        }
        actions = {
            "heartbeat": self._heartbeat,
            "orphan check": self._detect_orphans,
            "cancel check": self._check_cancels,
            "checkpoint": self._checkpoint,
        }
        if self.config.retention_s > 0:
            intervals["purge"] = min(PURGE_INTERVAL_S, self.config.retention_s)
            actions["purge"] = self._purge
        if schedule.registered():
            intervals["schedules"] = schedule.CHECK_INTERVAL_S
            actions["schedules"] = self._enqueue_scheduled_runs
        now = self.clock()
        for name, interval_s in intervals.items():
            due = self.next_due.setdefault(name, now + interval_s)
            if now < due:
                continue
            self.next_due[name] = now + interval_s
            if self.stopping and name == "orphan check":
                continue
            self._run_step(name, actions[name])

    def _run_step(self, name: str, action):
        """Run one database step; a failure is logged, and repeated failures stop the supervisor."""
        try:
            result = action()
        except (sqlite3.Error, DatabaseError, OSError) as exc:
            if isinstance(exc, sqlite3.OperationalError) and is_busy_error(exc):
                logger.warning("%s skipped: database %s is busy (%s); it runs again later",
                               name, self.config.db_path, exc)
                return None
            self.database_failures += 1
            logger.error("%s failed on database %s: %s", name, self.config.db_path, exc)
            if self.database_failures >= MAX_DATABASE_FAILURES:
                self.fatal_error = (f"database {self.config.db_path} is unusable after {self.database_failures} "
                                    f"failures in a row (last: {exc})")
            return None
        self.database_failures = 0
        return result

    def _heartbeat(self) -> None:
        self._check_database_file()
        pids = [os.getpid(), *self.children]
        statement = sql.HEARTBEAT_WORKERS.format(placeholders=",".join("?" * len(pids)))
        now = time.time()

        def write(db: Database) -> None:
            db.execute("heartbeat_workers", statement, (now, self.host_id, *pids))
            storage.delete_stale_workers_in(db, now - self.config.lease_s)

        self.db.write("heartbeat", write)

    def _check_database_file(self) -> None:
        inode = _inode(self.db.path)
        if inode != self._db_inode:
            self.fatal_error = (f"database file {self.db.path} was deleted or replaced while the supervisor "
                                "ran; restart the worker once the file is back")

    def _detect_orphans(self) -> None:
        excluded = {(self.host_id, pid) for pid in self.children}
        monitor.detect_orphaned_tasks(self.db, exclude=excluded, lease_s=self.config.lease_s,
                                      retry_policy=self.retry_policy)

    def _purge(self) -> None:
        result = retention.purge_finished(self.db, self.config.retention_s, max_batches=PURGE_MAX_BATCHES)
        if result.deleted:
            logger.info("purged %d finished task(s) older than %s", result.deleted,
                        retention.format_duration(self.config.retention_s))
        if result.more:
            self.next_due["purge"] = self.clock() + PURGE_BACKLOG_INTERVAL_S

    def _checkpoint(self) -> None:
        # Commits restart a large WAL themselves. This copies what a quiet queue leaves in the
        # WAL into the database file, without waiting for readers.
        if self.db.wal_size() > 0:
            self.db.checkpoint("PASSIVE")

    def _enqueue_scheduled_runs(self) -> None:
        result = schedule.enqueue_due(self.db, time.time())
        if result.runs:
            if self.schedule_notifier is None:
                self.schedule_notifier = wakeup.Notifier(self.db.path)
            self.schedule_notifier.notify()
        if result.next_run_at is not None:
            # Check again just after the earliest next fire time, so that its run is enqueued
            # on time instead of up to CHECK_INTERVAL_S late.
            delay_s = min(schedule.CHECK_INTERVAL_S, max(0.0, result.next_run_at - time.time()))
            self.next_due["schedules"] = self.clock() + delay_s + SCHEDULE_CHECK_MARGIN_S

    def _log_schedules(self) -> None:
        for definition in schedule.registered():
            logger.info("schedule %s: task %s, %s, queue %s, missed=%s", definition.name, definition.task,
                        definition.describe(), definition.queue, definition.missed)

    # --- workers table ---------------------------------------------------------------------

    def _register(self, pid: int, start_token: str, role: str) -> None:
        now = time.time()
        self.db.write("register_worker", lambda db: db.execute("upsert_worker", sql.UPSERT_WORKER, (
            self.host_id, pid, self.host, start_token, role, os.getpid(),
            ",".join(self.config.queues), now, now)))

    def _register_self(self) -> None:
        self._register(os.getpid(), liveness.own_start_token(), "supervisor")

    def _unregister_self(self) -> None:
        self._run_step("unregister supervisor", lambda: self.db.write(
            "delete_worker", lambda db: db.execute("delete_worker", sql.DELETE_WORKER, (self.host_id, os.getpid()))))


def import_modules(names) -> None:
    """Import the modules given with --import, or raise InvalidOptionError naming the one that failed."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise InvalidOptionError(
                f"cannot import module {name!r} given with --import: {exc}; check its name, and that it "
                f"is importable from the working directory ({os.getcwd()}) or PYTHONPATH"
            ) from exc


def _send_signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _inode(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None
