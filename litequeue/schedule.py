"""Periodic tasks: the schedule registry, and the step that enqueues the runs that are due.

A module registers schedules when it is imported::

    from litequeue import schedule

    schedule.every("myapp.tasks.cleanup", seconds=300)
    schedule.cron("myapp.tasks.report", "0 6 * * mon-fri", args={"kind": "daily"})

and ``litequeue worker --import MODULE`` imports it. Every supervisor checks its registered
schedules about once a second and enqueues the runs that are due (:func:`enqueue_due`). The
``schedules`` table keeps each schedule's position (the fire time of its latest run), and a
run is taken in the same write transaction that advances the position, so each run is
enqueued once however many supervisors share the database.

Runs missed while no supervisor was running follow the schedule's ``missed`` policy:
``"once"`` enqueues one run for all of them at once, ``"skip"`` drops them. A run that a
supervisor finds less than :data:`ON_TIME_WINDOW_S` late, with no later fire time passed,
is not missed: it is enqueued as usual. A schedule without a row in the database starts
from the moment a supervisor first checks it, without runs for the past.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from . import sql, storage
from .connection import Database
from .cron import UTC, CronExpression, ZoneArgument, next_fire_time, resolve_zone, zone_name
from .errors import InvalidScheduleError, TaskNotAllowedError
from .validation import (
    check_allowed, check_max_retries, check_priority, check_queue_name, check_seconds, encode_args,
    task_path_of,
)

logger = logging.getLogger(__name__)

#: The policies for runs missed while no supervisor ran. "once" enqueues one run now for all
#: of them, and "skip" enqueues none and waits for the next fire time.
MISSED_POLICIES = ("once", "skip")

#: Seconds after its fire time during which a run still counts as on time, if the next fire
#: time has not passed. Such a run is enqueued as scheduled, and a later one counts as
#: missed. The window covers a supervisor restart or a busy database, not real downtime.
ON_TIME_WINDOW_S = 60.0

#: The maximum time in seconds between two checks of a supervisor. A check also runs just after the
#: earliest next fire time, so a run is enqueued within a few milliseconds of its time.
CHECK_INTERVAL_S = 1.0

# Intervals shorter than the check interval cannot be kept.
MIN_INTERVAL_S = CHECK_INTERVAL_S

_MAX_NAME_LENGTH = 200


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One periodic task: what to enqueue, and when. Create it with :func:`every` or :func:`cron`.

    Exactly one of ``interval_s`` and ``cron`` is set. ``args_json`` is ``args`` encoded as
    stored in the task.
    """

    name: str
    task: str
    args: Dict[str, Any]
    args_json: str
    queue: str
    priority: int
    timeout_s: Optional[float]
    max_retries: int
    missed: str
    interval_s: Optional[float] = None
    cron: Optional[CronExpression] = None
    zone: datetime.tzinfo = UTC

    def __hash__(self) -> int:
        # The generated hash would fail on the ``args`` dict; equal schedules share a name.
        return hash(self.name)

    def next_run_after(self, moment_s: float) -> float:
        """Return the first fire time after the Unix time ``moment_s``."""
        if self.cron is not None:
            return next_fire_time(self.cron, moment_s, self.zone)
        return moment_s + self.interval_s

    def describe(self) -> str:
        """Return the timing in words: ``every 300s``, or the cron expression and its zone."""
        if self.cron is not None:
            return f"{self.cron} {zone_name(self.zone)}"
        return f"every {self.interval_s:g}s"

    def to_dict(self) -> dict:
        """Return the definition as JSON values, the way ``litequeue schedules --json`` prints it."""
        return {
            "name": self.name, "task": self.task, "args": self.args, "queue": self.queue,
            "priority": self.priority, "timeout_s": self.timeout_s, "max_retries": self.max_retries,
            "missed": self.missed, "interval_s": self.interval_s,
            "cron": None if self.cron is None else str(self.cron),
            "timezone": None if self.cron is None else zone_name(self.zone),
        }


# --- the registry ------------------------------------------------------------------------------

_registry: Dict[str, Schedule] = {}


def every(
    task: Union[str, Callable],
    *,
    seconds: float,
    name: Optional[str] = None,
    args: Optional[dict] = None,
    queue: str = "default",
    priority: int = 0,
    timeout_s: Optional[float] = None,
    max_retries: int = 0,
    missed: str = "once",
) -> Schedule:
    """Register a task to enqueue every ``seconds`` seconds, and return its schedule.

    The first run comes ``seconds`` after a supervisor first checks the schedule, and each
    later one ``seconds`` after the fire time of the one before, so runs do not drift. After
    missed runs, the interval counts from the moment the supervisor caught up.

    Args:
        task: A dotted path ("package.module.function") or a module-level function.
        seconds: The interval, at least 1 (supervisors check schedules once a second).
        name: A unique name; the default is the task path and the interval, such as
            ``"myapp.tasks.cleanup every 300s"``. The name keys the schedule's position in
            the database, so a new name starts a new schedule.
        args: Keyword arguments for the task function, as a dict of JSON values.
        queue, priority, timeout_s, max_retries: As for :meth:`Queue.enqueue`, for each run.
        missed: ``"once"`` or ``"skip"``; see the module docstring.

    Raises:
        InvalidScheduleError: ``seconds``, ``name`` or ``missed`` is invalid, or another
            schedule already has this name.
        InvalidTaskError, InvalidArgsError, InvalidOptionError: As for :meth:`Queue.enqueue`.
    """
    interval_s = _check_interval(seconds)
    path = task_path_of(task)
    default_name = f"{path} every {interval_s:g}s"
    return _register(name, default_name, path, args, queue, priority, timeout_s, max_retries, missed,
                     interval_s=interval_s)


def cron(
    task: Union[str, Callable],
    expression: str,
    *,
    timezone: ZoneArgument = "UTC",
    name: Optional[str] = None,
    args: Optional[dict] = None,
    queue: str = "default",
    priority: int = 0,
    timeout_s: Optional[float] = None,
    max_retries: int = 0,
    missed: str = "once",
) -> Schedule:
    """Register a task to enqueue at the times a cron expression selects, and return its schedule.

    Args:
        task: A dotted path ("package.module.function") or a module-level function.
        expression: Five fields (minute hour day-of-month month day-of-week) or a macro
            such as ``@daily``; :mod:`litequeue.cron` describes the syntax.
        timezone: The zone whose wall clock the expression reads: ``"UTC"`` (default),
            ``"local"`` (the supervisor host's zone), an IANA name such as
            ``"Europe/Berlin"``, or a ``tzinfo``. :func:`litequeue.cron.next_fire_time`
            describes what happens when daylight-saving time changes the clock.
        name: A unique name; the default is the task path and the expression, followed by
            the zone unless it is UTC, such as ``"myapp.tasks.report 0 6 * * mon-fri"``.
        args, queue, priority, timeout_s, max_retries, missed: As for :func:`every`.

    Raises:
        InvalidScheduleError: The expression, time zone, ``name`` or ``missed`` is invalid,
            or another schedule already has this name.
        InvalidTaskError, InvalidArgsError, InvalidOptionError: As for :meth:`Queue.enqueue`.
    """
    parsed = CronExpression(expression)
    zone = resolve_zone(timezone)
    path = task_path_of(task)
    default_name = f"{path} {parsed}" + ("" if zone is UTC else f" {zone_name(zone)}")
    return _register(name, default_name, path, args, queue, priority, timeout_s, max_retries, missed,
                     cron=parsed, zone=zone)


def registered() -> List[Schedule]:
    """Return every registered schedule, ordered by name."""
    return [_registry[name] for name in sorted(_registry)]


def unregister(name: str) -> None:
    """Remove a schedule from this process's registry. Its position stays in the database,
    so registering the same name again continues where it stopped."""
    _registry.pop(name, None)


def _register(name: Optional[str], default_name: str, task: str, args: Optional[dict], queue: str,
              priority: int, timeout_s: Optional[float], max_retries: int, missed: str,
              **timing) -> Schedule:
    args_json = encode_args(args)
    definition = Schedule(
        name=default_name if name is None else _check_name(name), task=task, args=json.loads(args_json),
        args_json=args_json, queue=check_queue_name(queue), priority=check_priority(priority),
        timeout_s=check_seconds("timeout_s", timeout_s, allow_none=True),
        max_retries=check_max_retries(max_retries), missed=_check_missed(missed), **timing,
    )
    existing = _registry.get(definition.name)
    if existing is not None and existing != definition:
        raise InvalidScheduleError(
            f"schedule name {definition.name!r} is already registered for {existing.task} "
            f"({existing.describe()}); pass a different name= to one of them")
    # Importing the same module twice registers an identical schedule again, which is harmless.
    _registry[definition.name] = definition
    return definition


def _check_interval(seconds: Any) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        raise InvalidScheduleError(f"invalid seconds {seconds!r}: use a finite number of seconds")
    if seconds < MIN_INTERVAL_S:
        raise InvalidScheduleError(
            f"invalid seconds {seconds!r}: use at least {MIN_INTERVAL_S:g}, because supervisors check "
            "schedules once a second")
    return float(seconds)


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidScheduleError(f"invalid schedule name {name!r}: use a non-empty string")
    if len(name) > _MAX_NAME_LENGTH or any(ord(character) < 32 for character in name):
        raise InvalidScheduleError(
            f"invalid schedule name {name!r}: use at most {_MAX_NAME_LENGTH} printable characters")
    return name


def _check_missed(missed: Any) -> str:
    if missed not in MISSED_POLICIES:
        raise InvalidScheduleError(
            f"invalid missed {missed!r}: use 'once' (enqueue one run for all missed runs) or 'skip'")
    return missed


def check_allowed_tasks(patterns: Optional[Sequence[str]], setting: str,
                        schedules: Optional[Sequence[Schedule]] = None) -> None:
    """Raise TaskNotAllowedError naming the first schedule whose task the allow-list rejects.

    A supervisor runs this at start. Without it, each run of such a schedule would be
    enqueued and then failed by the worker process, which checks the allow-list before import.
    """
    for definition in registered() if schedules is None else schedules:
        try:
            check_allowed(definition.task, None if patterns is None else list(patterns), setting)
        except TaskNotAllowedError as exc:
            raise TaskNotAllowedError(
                f"schedule {definition.name!r}: {exc}, or remove the schedule") from exc


# --- deciding and enqueueing runs --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Decision:
    """The action of a check on one schedule whose next run is due.

    Fields: ``position``, the schedule's new position. ``run_at``, the run_at of the task to
    enqueue (None: enqueue nothing). ``due``, the fire time that was due. ``missed``, whether
    runs were missed.
    """

    position: float
    run_at: Optional[float]
    due: float
    missed: bool


def decide(definition: Schedule, position: float, now: float) -> Optional[Decision]:
    """Return what a check at the Unix time ``now`` does, or None when no run is due.

    ``position`` is the schedule's last_run_at. A due run whose fire time is less than
    ON_TIME_WINDOW_S old, with no later fire time passed, is enqueued for its fire time.
    Otherwise runs were missed, and the schedule's ``missed`` policy decides whether one run
    is enqueued now. Either way the position moves to ``now``, so the run after that is the
    first fire time after ``now``.
    """
    # NOTE: when the wall clock moves back past the position, no run is due until the clock
    # reaches the position's next fire time again, so the runs in between are not enqueued.
    due = definition.next_run_after(position)
    if due > now:
        return None
    if now - due <= ON_TIME_WINDOW_S and definition.next_run_after(due) > now:
        return Decision(position=due, run_at=due, due=due, missed=False)
    run_at = now if definition.missed == "once" else None
    return Decision(position=now, run_at=run_at, due=due, missed=True)


@dataclasses.dataclass(frozen=True)
class Run:
    """A run that a check enqueued: the schedule's name, the task id and the task's run_at."""

    name: str
    task_id: int
    run_at: float


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The runs one check enqueued, and the earliest next fire time (None: no schedules)."""

    runs: List[Run]
    next_run_at: Optional[float]


def enqueue_due(db: Database, now: float, schedules: Optional[Sequence[Schedule]] = None) -> CheckResult:
    """Enqueue the runs of ``schedules`` (default: every registered one) that are due at ``now``.

    One read transaction finds the schedules that are new or due. Each of those then gets
    its own short write transaction, which reads the position again, advances it with a
    conditional UPDATE and inserts the task only when that UPDATE changed the row. Two
    supervisors that check at the same moment therefore enqueue each run once.
    """
    schedules = registered() if schedules is None else list(schedules)
    if not schedules:
        return CheckResult([], None)
    positions = db.read(lambda db: dict(db.execute("list_schedule_positions", sql.LIST_SCHEDULE_POSITIONS)))

    runs = []
    next_times = []
    for definition in schedules:
        position = positions.get(definition.name)
        if position is None or definition.next_run_after(position) <= now:
            outcome = db.write("schedule_run", lambda db: _take_run_in(db, definition, now))
            # Logged after the commit, so that a retried transaction logs once.
            _log_outcome(definition, outcome)
            position = outcome.position
            if outcome.run is not None:
                runs.append(outcome.run)
        next_times.append(definition.next_run_after(position))
    return CheckResult(runs, min(next_times))


@dataclasses.dataclass(frozen=True)
class _Outcome:
    """The result of one write transaction on a schedule: its position afterwards, whether it
    inserted the schedule's row, the decision it applied and the run it enqueued."""

    position: float
    new: bool = False
    decision: Optional[Decision] = None
    run: Optional[Run] = None


def _take_run_in(db: Database, definition: Schedule, now: float) -> _Outcome:
    """Advance one schedule if a run is due, and enqueue its task in the same transaction."""
    row = db.execute("get_schedule_position", sql.GET_SCHEDULE_POSITION, (definition.name,)).fetchone()
    if row is None:
        db.execute("insert_schedule", sql.INSERT_SCHEDULE, (definition.name, now, now))
        return _Outcome(now, new=True)

    position = row[0]
    decision = decide(definition, position, now)
    if decision is None:
        return _Outcome(position)
    advanced = db.execute("advance_schedule", sql.ADVANCE_SCHEDULE, {
        "position": decision.position, "now": now, "name": definition.name, "expected": position,
    }).rowcount == 1
    if not advanced:
        return _Outcome(position)
    if decision.run_at is None:
        return _Outcome(decision.position, decision=decision)

    task_id = storage.insert_tasks_in(db, [_new_task(definition, decision.run_at)], now)[0]
    db.execute("set_schedule_last_task", sql.SET_SCHEDULE_LAST_TASK, {
        "task_id": task_id, "run_at": decision.run_at, "now": now, "name": definition.name,
    })
    return _Outcome(decision.position, decision=decision, run=Run(definition.name, task_id, decision.run_at))


def _new_task(definition: Schedule, run_at: float) -> storage.NewTask:
    return storage.NewTask(
        queue=definition.queue, task=definition.task, args_json=definition.args_json,
        priority=definition.priority, run_at=run_at, max_retries=definition.max_retries,
        timeout_s=definition.timeout_s,
    )


def _log_outcome(definition: Schedule, outcome: _Outcome) -> None:
    if outcome.new:
        logger.info("schedule %s (%s, task %s) is new to this database; first run at %s", definition.name,
                    definition.describe(), definition.task, _utc(definition.next_run_after(outcome.position)))
    decision = outcome.decision
    if decision is not None and decision.missed:
        if decision.run_at is None:
            action = "skipped them (missed='skip')"
        else:
            action = "enqueued one run now for all of them (missed='once')"
        logger.warning("schedule %s: runs from %s on were missed, probably while no supervisor ran; %s; "
                       "next run at %s", definition.name, _utc(decision.due), action,
                       _utc(definition.next_run_after(decision.position)))
    if outcome.run is not None:
        logger.info("schedule %s: enqueued task %s (%s) for %s", definition.name, outcome.run.task_id,
                    definition.task, _utc(outcome.run.run_at))


def _utc(moment_s: float) -> str:
    return datetime.datetime.fromtimestamp(moment_s, UTC).isoformat(timespec="milliseconds")


# --- listing -----------------------------------------------------------------------------------

def list_states(db: Database, now: float, schedules: Optional[Sequence[Schedule]] = None) -> List[dict]:
    """Return each schedule's definition with its state in the database, for ``litequeue schedules``.

    Each entry has the keys of :meth:`Schedule.to_dict` plus:

    - ``last_run_at``: the position, or None for a schedule that no supervisor checked yet.
    - ``last_task_id`` and ``last_task_run_at``: the task the latest run enqueued, or None.
    - ``next_run_at``: when a supervisor running now would enqueue the next run.
    - ``missed_runs``: whether runs were missed, so that the next check applies the
      ``missed`` policy.
    """
    schedules = registered() if schedules is None else list(schedules)
    rows = db.read(lambda db: db.execute("list_schedule_states", sql.LIST_SCHEDULE_STATES).fetchall())
    states = {name: (position, task_id, task_run_at) for name, position, _modified, task_id, task_run_at in rows}

    entries = []
    for definition in schedules:
        position, task_id, task_run_at = states.get(definition.name, (None, None, None))
        decision = None if position is None else decide(definition, position, now)
        if position is None:
            next_run_at = definition.next_run_after(now)
        elif decision is None:
            next_run_at = definition.next_run_after(position)
        elif decision.run_at is not None:
            next_run_at = decision.run_at
        else:
            next_run_at = definition.next_run_after(decision.position)
        entries.append({
            **definition.to_dict(), "last_run_at": position, "last_task_id": task_id,
            "last_task_run_at": task_run_at, "next_run_at": next_run_at,
            "missed_runs": bool(decision and decision.missed),
        })
    return entries
