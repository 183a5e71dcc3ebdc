"""Text and JSON output of the command line: tasks, task lists, statistics and workers."""

from __future__ import annotations

import datetime
import json
from typing import Iterable, List, Optional, Sequence

from .status import Task, TaskStatus

# Width at which `list` cuts the first line of an error.
ERROR_WIDTH = 60


def to_json(value) -> str:
    """Return ``value`` as one indented JSON document."""
    return json.dumps(value, ensure_ascii=False, indent=2)


def format_time(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return datetime.datetime.fromtimestamp(value).astimezone().isoformat(timespec="milliseconds")


def format_age(seconds: Optional[float]) -> str:
    """Format a duration in seconds compactly: ``0.4s``, ``42s``, ``12m05s``, ``3h07m``, ``5d02h``."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def format_bytes(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


def shorten(text: Optional[str], width: int) -> str:
    """Return the first line of ``text``, cut to ``width`` characters with "..." when longer."""
    lines = (text or "").strip().splitlines()
    if not lines:
        return ""
    if len(lines[0]) <= width:
        return lines[0]
    return lines[0][: max(0, width - 3)] + "..."


def format_table(headers: Sequence[str], rows: Iterable[Sequence], right: Iterable[int] = ()) -> List[str]:
    """Align ``rows`` under ``headers`` in columns two spaces apart. The columns whose index is
    in ``right`` are right-aligned."""
    right = set(right)
    table = [list(headers)] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[index]) for row in table) for index in range(len(headers))]
    lines = []
    for row in table:
        cells = [cell.rjust(width) if index in right else cell.ljust(width)
                 for index, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


# --- tasks -----------------------------------------------------------------------------------

def format_task(task: Task) -> str:
    """Format every field of a task, one per line, with its error, output and log in full."""
    lines = [
        f"id:          {task.id}",
        f"task:        {task.task}",
        f"queue:       {task.queue}",
        f"status:      {task.status.value}",
        f"args:        {json.dumps(task.args, ensure_ascii=False)}",
        f"priority:    {task.priority}",
        f"attempts:    {task.attempts} (max retries {task.max_retries})",
        f"timeout_s:   {'-' if task.timeout_s is None else format(task.timeout_s, 'g')}",
        f"created:     {format_time(task.created)}",
        f"run_at:      {format_time(task.run_at)}",
        f"started:     {format_time(task.started)}",
        f"finished:    {format_time(task.finished)}",
        f"modified:    {format_time(task.modified)}",
        f"worker:      {'-' if task.worker_pid is None else f'PID {task.worker_pid} on {task.worker_host}'}",
        f"result:      {json.dumps(task.result, ensure_ascii=False)}",
    ]
    for name in ("error", "output", "log"):
        value = getattr(task, name)
        if value:
            lines.append(f"{name}:")
            lines.extend("  " + line for line in value.rstrip("\n").splitlines())
        else:
            lines.append(f"{name + ':':<12} -")
    return "\n".join(lines)


def format_task_list(records: List[dict], now: float) -> str:
    """Format task summaries as a table: id, queue, task, status, attempts, age and error."""
    if not records:
        return "no tasks match"
    rows = [
        (record["id"], record["queue"], record["task"], record["status"], record["attempts"],
         format_age(now - record["created"]), shorten(record["error"], ERROR_WIDTH))
        for record in records
    ]
    return "\n".join(format_table(("ID", "QUEUE", "TASK", "STATUS", "ATTEMPTS", "AGE", "ERROR"), rows,
                                  right=(0, 4, 5)))


# --- statistics and workers ------------------------------------------------------------------

def format_stats(stats: dict) -> str:
    """Format the result of :func:`litequeue.inspection.queue_stats` with its ``database``."""
    statuses = [status.value for status in TaskStatus]
    headers = ["QUEUE", *(status.upper() for status in statuses), "OLDEST QUEUED"]
    rows = [
        (name + (" (paused)" if entry.get("paused") else ""), *(entry["counts"][status] for status in statuses),
         format_age(entry["oldest_queued_age_s"]))
        for name, entry in stats["queues"].items()
    ]
    rows.append(("all queues", *(stats["counts"][status] for status in statuses),
                 format_age(stats["oldest_queued_age_s"])))
    lines = [f"database: {stats['database']}", ""]
    lines += format_table(headers, rows, right=range(1, len(headers)))

    minute, hour = stats["finished_last_minute"], stats["finished_last_hour"]
    lines.append("")
    lines += format_table(("FINISHED", "LAST MINUTE", "LAST HOUR"), [
        ("completed", minute["completed"], hour["completed"]),
        ("failed", minute["failed"], hour["failed"]),
    ], right=(1, 2))
    lines += ["", format_live_workers(stats)]
    return "\n".join(lines)


def format_live_workers(stats: dict) -> str:
    return (f"live: {_plural(stats['live_supervisors'], 'supervisor')}, "
            f"{_plural(stats['live_worker_processes'], 'worker process', 'worker processes')} "
            f"(heartbeat within {stats['lease_s']:g} s)")


def _plural(count: int, singular: str, plural: Optional[str] = None) -> str:
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def format_workers(workers: List[dict], lease_s: float) -> str:
    """Format the result of :func:`litequeue.inspection.live_workers` as a table."""
    if not workers:
        return f"no live supervisors or worker processes (lease {lease_s:g} s)"
    rows = []
    for worker in workers:
        tasks = ", ".join(
            f"{task['id']} {task['task']} ({format_age(task['elapsed_s'])})" for task in worker["tasks"]
        )
        rows.append((worker["host"], worker["pid"], worker["role"], worker["supervisor_pid"] or "-",
                     ",".join(worker["queues"]) or "-", format_age(worker["heartbeat_age_s"]),
                     tasks or "-"))
    return "\n".join(format_table(("HOST", "PID", "ROLE", "SUPERVISOR", "QUEUES", "HEARTBEAT", "TASK"),
                                  rows, right=(1, 3, 5)))


# --- schedules ---------------------------------------------------------------------------------

def format_schedules(entries: List[dict]) -> str:
    """Format the result of :func:`litequeue.schedule.list_states` as a table."""
    rows = []
    for entry in entries:
        timing = entry["cron"] + " " + entry["timezone"] if entry["cron"] else f"every {entry['interval_s']:g}s"
        last_run = "-"
        if entry["last_task_id"] is not None:
            last_run = f"{format_time(entry['last_task_run_at'])} (task {entry['last_task_id']})"
        if entry["last_run_at"] is None:
            next_note = " (no supervisor has checked it yet)"
        elif entry["missed_runs"]:
            next_note = f" (runs were missed; missed={entry['missed']})"
        else:
            next_note = ""
        rows.append((entry["name"], entry["task"], entry["queue"], timing, entry["missed"], last_run,
                     format_time(entry["next_run_at"]) + next_note))
    return "\n".join(format_table(("NAME", "TASK", "QUEUE", "SCHEDULE", "MISSED", "LAST RUN", "NEXT RUN"), rows))
