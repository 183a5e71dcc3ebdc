"""The worker process: claims one task at a time, runs it, and records the outcome.

SIGTERM and SIGINT mean "finish the current task, claim no more, exit": service managers and
terminals send them to every process of the group at once, and the supervisor decides what
happens next. SIGUSR1 from the supervisor means "abort the task you run now" (timeout or
cancel); it raises TaskAborted inside the task function, and the process then exits.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from typing import Optional

from . import liveness, progress_state, signals, storage, wakeup
from .config import WorkerConfig
from .connection import Database
from .errors import LitequeueError
from .execution import OutputSink, Outcome, TaskAborted, run_task
from .status import Task, TaskStatus
from .storage import Claim, Owner, RetryPolicy
from .wakeup import Listener

logger = logging.getLogger(__name__)

# Exit code of a worker process that could not record a finished task within
# WorkerConfig.terminal_write_deadline_s. Its supervisor then records the task as exited.
EXIT_TERMINAL_WRITE_FAILED = 75
LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"


@dataclasses.dataclass
class Finished:
    """A task that ran and whose outcome is not written yet."""

    task: Task
    claim: Claim
    outcome: Outcome


def worker_main(config: WorkerConfig, state, abort_target) -> None:
    """Entry point of a worker process (module level, so every start method can import it).

    ``state`` is the shared array of :mod:`litequeue.progress_state`; ``abort_target`` is a
    shared integer where the supervisor names the task SIGUSR1 is meant to abort.
    """
    code = WorkerProcess(config, state, abort_target).run()
    if code:
        sys.exit(code)


class WorkerProcess:
    def __init__(self, config: WorkerConfig, state, abort_target):
        self.config = config
        self.state = state
        self.abort_target = abort_target
        self.parent_pid = os.getppid()
        self.stop_requested = False
        self.current_task_id: Optional[int] = None
        self.published_task: Optional[int] = None
        self.in_user_code = False
        self.tasks_run = 0
        self.retry_policy = RetryPolicy(config.retry_base_s, config.retry_max_s)
        self.db: Optional[Database] = None
        self.listener: Optional[Listener] = None
        self._signal_read_fd: Optional[int] = None

    # --- set-up ----------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._signal_read_fd = wakeup.signal_wakeup_pipe()
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        if hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, self._abort)
        self._die_with_parent()

    def _die_with_parent(self) -> None:
        # On Linux, ask the kernel for SIGTERM when the supervisor dies, so an idle worker
        # process exits at once instead of at its next poll.
        liveness.signal_on_parent_death(signal.SIGTERM)
        if os.getppid() != self.parent_pid:
            self.stop_requested = True

    def _request_stop(self, signum, frame) -> None:
        self.stop_requested = True

    def _abort(self, signum, frame) -> None:
        target = self.abort_target.value
        if self.in_user_code and self.current_task_id is not None and target == self.current_task_id:
            raise TaskAborted(f"task {target} aborted by its supervisor")

    def _set_abortable(self, enabled: bool) -> None:
        self.in_user_code = enabled

    def _configure_logging(self) -> None:
        root = logging.getLogger()
        if not root.handlers:
            logging.basicConfig(level=self.config.log_level, format=LOG_FORMAT)

    # --- main loop -------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        self._configure_logging()
        for module in self.config.imports:
            importlib.import_module(module)  # the supervisor imported each one first, so they import
        self.db = Database(self.config.db_path, synchronous=self.config.synchronous,
                           busy_timeout_s=self.config.busy_timeout_s)
        self.owner = Owner(os.getpid(), liveness.host_name(), liveness.host_id(), liveness.own_start_token())
        self.listener = Listener(self.db.path)
        logger.info("worker process started (PID %s, queues %s)", os.getpid(), ", ".join(self.config.queues))
        try:
            return self._loop()
        except TaskAborted:
            return 0
        finally:
            logger.info("worker process stopped (PID %s, %d tasks run)", os.getpid(), self.tasks_run)
            self.listener.close()
            self.db.close()

    def _may_claim(self) -> bool:
        if self.stop_requested:
            return False
        if os.getppid() != self.parent_pid:
            self.stop_requested = True
            return False
        limit = self.config.max_tasks_per_child
        return not (limit and self.tasks_run >= limit)

    def _loop(self) -> int:
        finished: Optional[Finished] = None
        while True:
            may_claim = self._may_claim()
            if finished is None:
                if not may_claim:
                    return 0
                if not self._has_eligible_task():
                    if self.published_task is not None:
                        self._publish(None)
                    self._idle_wait()
                    continue
            task = self._record_and_claim(finished, may_claim)
            finished = None
            if task is None:
                continue
            finished = self._run(task)
            if finished is None:  # aborted by the supervisor
                return 0

    def _has_eligible_task(self) -> bool:
        try:
            return self.db.read(lambda db: storage.has_eligible_task(db, self.config.queues, time.time()))
        except sqlite3.OperationalError as exc:
            logger.warning("worker process %s cannot poll %s: %s", os.getpid(), self.db.path, exc)
            return False

    def _idle_wait(self) -> None:
        wait_s = self.config.poll_interval_s
        try:
            next_at = self.db.read(lambda db: storage.next_run_at(db, self.config.queues))
        except sqlite3.OperationalError:
            next_at = None
        if next_at is not None:
            wait_s = min(wait_s, max(0.001, next_at - time.time()))
        self.listener.wait(wait_s, extra_fd=self._signal_read_fd)

    # --- one task --------------------------------------------------------------------------

    def _run(self, task: Task) -> Optional[Finished]:
        claim = Claim(task.id, self.owner.pid, self.owner.host_id, task.attempts)
        self.current_task_id = task.id
        self._publish(task.id, task.attempts, self._timeout_of(task))
        logger.debug("task %s (%s) started, attempt %d", task.id, task.task, task.attempts)
        signals.before_job.send(task=task)
        sink = OutputSink(lambda text: self._save_output(claim, text), self.config.max_output_bytes)
        try:
            outcome = run_task(
                task, allowed=list(self.config.allow) if self.config.allow is not None else None,
                allow_setting=self.config.allow_setting, sink=sink,
                max_log_bytes=self.config.max_log_bytes, max_result_bytes=self.config.max_result_bytes,
                abortable=self._set_abortable,
            )
        except TaskAborted:
            logger.warning("task %s (%s) aborted by the supervisor; worker process %s exits",
                           task.id, task.task, os.getpid())
            return None
        finally:
            self.in_user_code = False
            self.current_task_id = None
        self.tasks_run += 1
        return Finished(task, claim, outcome)

    def _timeout_of(self, task: Task) -> float:
        return self.config.timeout_s if task.timeout_s is None else task.timeout_s

    def _save_output(self, claim: Claim, text: str) -> bool:
        saved = self.db.write("append_output", lambda db: storage.append_output_in(db, claim, text))
        if not saved:
            logger.warning("output of task %s not saved: the task is no longer owned by worker process %s",
                           claim.task_id, claim.pid)
        return saved

    # --- recording -------------------------------------------------------------------------

    def _record_and_claim(self, finished: Optional[Finished], may_claim: bool) -> Optional[Task]:
        """Write the outcome of ``finished`` and claim the next task in one transaction."""
        deadline = time.monotonic() + self.config.terminal_write_deadline_s
        pause_s = 0.05
        while True:
            try:
                status, task = self.db.write("finish_and_claim", lambda db: self._finish_and_claim_in(
                    db, finished, may_claim))
                break
            except (sqlite3.Error, LitequeueError) as exc:
                if finished is None:
                    logger.warning("claim in %s failed: %s; trying again", self.db.path, exc)
                    time.sleep(pause_s)
                    return None
                if time.monotonic() + pause_s > deadline:
                    logger.critical(
                        "cannot record task %s in %s for %.0f s (%s); worker process %s exits so that "
                        "its supervisor records the task", finished.task.id, self.db.path,
                        self.config.terminal_write_deadline_s, exc, os.getpid())
                    raise SystemExit(EXIT_TERMINAL_WRITE_FAILED) from exc
                logger.warning("recording task %s failed: %s; retrying in %.2f s", finished.task.id, exc, pause_s)
                time.sleep(pause_s)
                pause_s = min(pause_s * 2, 2.0)
        if finished is not None:
            self._after_record(finished, status)
        return task

    def _finish_and_claim_in(self, db: Database, finished: Optional[Finished], may_claim: bool):
        now = time.time()
        status = None
        if finished is not None:
            outcome = finished.outcome
            if outcome.succeeded:
                done = storage.complete_in(db, finished.claim, outcome.result_json, outcome.log, now)
                status = TaskStatus.COMPLETED if done else None
            else:
                status = storage.fail_or_retry_in(db, finished.claim, outcome.error, outcome.log, now,
                                                  self.retry_policy, finished.task.max_retries)
        task = storage.claim_in(db, self.owner, self.config.queues, now) if may_claim else None
        return status, task

    def _after_record(self, finished: Finished, status: Optional[TaskStatus]) -> None:
        task, outcome = finished.task, finished.outcome
        if status is None:
            logger.warning(
                "late write ignored: task %s (%s) is no longer in progress under worker process %s "
                "(attempt %d); it was cancelled, timed out or recovered as an orphan meanwhile",
                task.id, task.task, os.getpid(), finished.claim.attempts)
            return
        if status == TaskStatus.COMPLETED:
            logger.debug("task %s (%s) completed", task.id, task.task)
            if signals.on_success.receivers:
                done = dataclasses.replace(task, status=status, result=_loads(outcome.result_json), log=outcome.log)
                signals.on_success.send(task=done)
            return
        done = dataclasses.replace(task, status=status, error=outcome.error, log=outcome.log)
        first_line = (outcome.error or "").splitlines()[0] if outcome.error else ""
        if status == TaskStatus.QUEUED:
            logger.warning("task %s (%s) failed in worker process %s, will retry: %s",
                           task.id, task.task, os.getpid(), first_line)
            signals.on_retry.send(task=done, error=outcome.error)
        else:
            logger.error("task %s (%s) failed in worker process %s: %s",
                         task.id, task.task, os.getpid(), first_line)
            signals.on_failure.send(task=done, error=outcome.error)

    def _publish(self, task_id: Optional[int], attempts: int = 0, timeout_s: float = 0.0) -> None:
        progress_state.publish(self.state, task_id, attempts, timeout_s)
        self.published_task = task_id


def _loads(text: Optional[str]):
    return None if text is None else json.loads(text)
