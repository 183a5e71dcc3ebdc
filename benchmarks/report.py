"""The Markdown report: figures with median and spread over rounds, target ratios, machine and commands."""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import litequeue

LITEQUEUE_SOURCE = Path(litequeue.__file__).resolve().parent

# (figure key, label, unit). Rows whose key no round measured are left out.
FIGURES: List[Tuple[str, str, str]] = [
    ("raw.insert.FULL", "raw SQLite, minimal table: single-row INSERT, one commit each, FULL", "tasks/s"),
    ("raw.insert.NORMAL", "raw SQLite, minimal table: single-row INSERT, one commit each, NORMAL", "tasks/s"),
    ("raw.batch.FULL", "raw SQLite, minimal table: INSERT in transactions of 1,000 rows, FULL", "tasks/s"),
    ("raw.batch.NORMAL", "raw SQLite, minimal table: INSERT in transactions of 1,000 rows, NORMAL", "tasks/s"),
    ("raw.claim.FULL", "raw SQLite, minimal table: claim + completion transactions, 2 processes, FULL", "tasks/s"),
    ("raw.claim.NORMAL", "raw SQLite, minimal table: claim + completion transactions, 2 processes, NORMAL",
     "tasks/s"),
    ("schema.insert.FULL", "raw SQLite, litequeue's schema: `INSERT_TASK`, one commit each, FULL", "tasks/s"),
    ("schema.insert.NORMAL", "raw SQLite, litequeue's schema: `INSERT_TASK`, one commit each, NORMAL", "tasks/s"),
    ("schema.claim.FULL", "raw SQLite, litequeue's schema: completion + claim in one transaction, 2 processes, FULL",
     "tasks/s"),
    ("schema.claim.NORMAL",
     "raw SQLite, litequeue's schema: completion + claim in one transaction, 2 processes, NORMAL", "tasks/s"),
    ("wal.raw.insert", "WAL frames per commit, minimal table: single-row INSERT", "frames"),
    ("wal.raw.claim", "WAL frames per commit, minimal table: claim or completion (2 commits per task)", "frames"),
    ("wal.schema.insert", "WAL frames per commit, litequeue's schema: `INSERT_TASK`", "frames"),
    ("wal.schema.claim", "WAL frames per commit, litequeue's schema: completion + claim (1 commit per task)",
     "frames"),
    ("lq.enqueue.FULL", "litequeue: `enqueue`, one task per call, FULL", "tasks/s"),
    ("lq.enqueue.NORMAL", "litequeue: `enqueue`, one task per call, NORMAL", "tasks/s"),
    ("lq.enqueue_many.FULL", "litequeue: `enqueue_many`, batches of 1,000, FULL", "tasks/s"),
    ("lq.enqueue_many.NORMAL", "litequeue: `enqueue_many`, batches of 1,000, NORMAL", "tasks/s"),
    ("lq.drain.FULL", "litequeue: drain, 2 worker processes, FULL (supervisor start to last completion)", "tasks/s"),
    ("lq.drain.NORMAL", "litequeue: drain, 2 worker processes, NORMAL (supervisor start to last completion)",
     "tasks/s"),
    ("lq.steady.FULL", "litequeue: drain, FULL, first claim to last completion", "tasks/s"),
    ("lq.steady.NORMAL", "litequeue: drain, NORMAL, first claim to last completion", "tasks/s"),
    ("lq.drain_large.NORMAL", "litequeue: drain, NORMAL, table already holding the finished tasks", "tasks/s"),
    ("lq.steady_large.NORMAL", "litequeue: drain, NORMAL, finished tasks in table, first claim to last completion",
     "tasks/s"),
    ("lq.pickup_p50_ms", "litequeue: pickup latency p50, idle worker, FULL", "ms"),
    ("lq.pickup_p99_ms", "litequeue: pickup latency p99, idle worker, FULL", "ms"),
    ("lq.pickup_after_idle_ms", "litequeue: pickup latency after the long idle period, FULL", "ms"),
    ("lq.idle_cpu_percent", "litequeue: CPU of an idle supervisor and its 2 worker processes", "% of one core"),
    ("lq.worker_rss_mib.FULL", "litequeue: peak RSS (VmHWM) of a worker process after the FULL drain", "MiB"),
    ("lq.worker_rss_mib.NORMAL", "litequeue: peak RSS (VmHWM) of a worker process after the NORMAL drain", "MiB"),
    ("lq.supervisor_rss_mib.FULL", "litequeue: peak RSS (VmHWM) of the supervisor after the FULL drain", "MiB"),
    ("huey.enqueue.default", "huey: enqueue, one task per call, default (synchronous=FULL)", "tasks/s"),
    ("huey.enqueue.off", "huey: enqueue, `fsync=False` (synchronous=OFF, less durable than NORMAL)", "tasks/s"),
    ("huey.drain.default", "huey: drain, `-k process -w 2`, default (synchronous=FULL)", "tasks/s"),
    ("huey.drain.off", "huey: drain, `-k process -w 2`, `fsync=False` (synchronous=OFF, less durable than NORMAL)",
     "tasks/s"),
    ("huey.pickup_p50_ms", "huey: pickup latency p50, idle consumer, default", "ms"),
    ("huey.pickup_p99_ms", "huey: pickup latency p99, idle consumer, default", "ms"),
]


@dataclasses.dataclass(frozen=True)
class Target:
    """A target: ``key`` (divided by ``baseline`` when given) compared with ``threshold``."""

    label: str
    key: str
    baseline: Optional[str]
    at_least: bool
    threshold: float
    unit: str = "×"


TARGETS = [
    Target("enqueue vs raw single insert, FULL", "lq.enqueue.FULL", "raw.insert.FULL", True, 0.85),
    Target("enqueue vs raw single insert, NORMAL", "lq.enqueue.NORMAL", "raw.insert.NORMAL", True, 0.85),
    Target("enqueue_many vs raw batched insert, FULL", "lq.enqueue_many.FULL", "raw.batch.FULL", True, 0.7),
    Target("enqueue_many vs raw batched insert, NORMAL", "lq.enqueue_many.NORMAL", "raw.batch.NORMAL", True, 0.7),
    Target("drain vs raw claim + completion, FULL", "lq.drain.FULL", "raw.claim.FULL", True, 1.2),
    Target("drain vs raw claim + completion, NORMAL", "lq.drain.NORMAL", "raw.claim.NORMAL", True, 0.8),
    Target("pickup latency p50", "lq.pickup_p50_ms", None, False, 2.0, " ms"),
    Target("pickup latency p99", "lq.pickup_p99_ms", None, False, 10.0, " ms"),
    Target("idle CPU", "lq.idle_cpu_percent", None, False, 0.5, " % of one core"),
    Target("worker process peak RSS after the drain", "lq.worker_rss_mib.FULL", None, False, 20.0, " MiB"),
    Target("drain with finished tasks vs empty table, NORMAL", "lq.drain_large.NORMAL", "lq.drain.NORMAL",
           True, 0.9),
]

@dataclasses.dataclass(frozen=True)
class SchemaSplit:
    """A target's ratio split at a baseline that runs litequeue's statements on litequeue's schema.

    litequeue / minimal table = (litequeue / same schema) × (same schema / minimal table).
    """

    label: str
    key: str
    schema_baseline: str
    baseline: str


SCHEMA_SPLITS = [
    SchemaSplit("enqueue, FULL", "lq.enqueue.FULL", "schema.insert.FULL", "raw.insert.FULL"),
    SchemaSplit("enqueue, NORMAL", "lq.enqueue.NORMAL", "schema.insert.NORMAL", "raw.insert.NORMAL"),
    SchemaSplit("drain, FULL", "lq.drain.FULL", "schema.claim.FULL", "raw.claim.FULL"),
    SchemaSplit("drain, NORMAL", "lq.drain.NORMAL", "schema.claim.NORMAL", "raw.claim.NORMAL"),
]

# litequeue against huey at comparable durability (huey's "off" is less durable than NORMAL).
COMPARISONS = [
    ("enqueue, FULL vs huey default", "lq.enqueue.FULL", "huey.enqueue.default"),
    ("enqueue, NORMAL vs huey fsync=False", "lq.enqueue.NORMAL", "huey.enqueue.off"),
    ("drain, FULL vs huey default", "lq.drain.FULL", "huey.drain.default"),
    ("drain, NORMAL vs huey fsync=False", "lq.drain.NORMAL", "huey.drain.off"),
    ("pickup p50, huey / litequeue", "huey.pickup_p50_ms", "lq.pickup_p50_ms"),
]


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """Facts about the run that the report states besides the figures."""

    counts: dict
    command: str
    started: float
    duration_s: float
    load_before: tuple
    load_after: tuple
    workdir_parent: str
    huey_note: Optional[str]
    huey_version: Optional[str]
    huey_synchronous: Optional[dict]


# --- numbers ---------------------------------------------------------------------------------

def values_of(rounds: List[Dict[str, float]], key: str) -> List[float]:
    return [figures[key] for figures in rounds if key in figures and not math.isnan(figures[key])]


def ratios_of(rounds: List[Dict[str, float]], key: str, baseline: str) -> List[float]:
    """Return ``key / baseline`` for each round that measured both."""
    return [figures[key] / figures[baseline] for figures in rounds
            if key in figures and baseline in figures and figures[baseline] > 0]


def format_number(value: float) -> str:
    if math.isinf(value):
        return "inf"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def summarize(values: Sequence[float]) -> Tuple[str, str]:
    """Return the median and the min-max spread, formatted."""
    median = statistics.median(values)
    return format_number(median), f"{format_number(min(values))}–{format_number(max(values))}"


# --- sections --------------------------------------------------------------------------------

def figures_table(rounds: List[Dict[str, float]]) -> List[str]:
    lines = ["| figure | median | min–max | unit |", "| --- | ---: | ---: | --- |"]
    for key, label, unit in FIGURES:
        values = values_of(rounds, key)
        if values:
            median, spread = summarize(values)
            lines.append(f"| {label} | {median} | {spread} | {unit} |")
    return lines


def targets_table(rounds: List[Dict[str, float]]) -> List[str]:
    lines = ["| target | measured (median) | min–max | required | result |",
             "| --- | ---: | ---: | ---: | --- |"]
    for target in TARGETS:
        values = (ratios_of(rounds, target.key, target.baseline) if target.baseline
                  else values_of(rounds, target.key))
        required = f"{'≥' if target.at_least else '≤'} {format_number(target.threshold)}{target.unit}"
        if not values:
            lines.append(f"| {target.label} | not measured | | {required} | – |")
            continue
        median = statistics.median(values)
        met = median >= target.threshold if target.at_least else median <= target.threshold
        median_text, spread = summarize(values)
        lines.append(f"| {target.label} | {median_text}{target.unit} | {spread} | {required} | "
                     f"{'met' if met else '**missed**'} |")
    return lines


def comparisons_table(rounds: List[Dict[str, float]]) -> List[str]:
    lines = ["| comparison | ratio (median) | min–max |", "| --- | ---: | ---: |"]
    for label, key, baseline in COMPARISONS:
        values = ratios_of(rounds, key, baseline)
        if values:
            median, spread = summarize(values)
            lines.append(f"| {label} | {median}× | {spread} |")
    return lines


def target_of(key: str, baseline: str) -> Optional[Target]:
    return next((target for target in TARGETS if target.key == key and target.baseline == baseline), None)


def median_of(rounds: List[Dict[str, float]], key: str) -> Optional[float]:
    values = values_of(rounds, key)
    return statistics.median(values) if values else None


def schema_finding(label: str, threshold: str, schema_ratio: float, own_ratio: float, schema_misses: bool) -> str:
    """Return the bullet that states whether the schema alone already misses a missed target."""
    schema_text, own_text = format_number(schema_ratio), format_number(own_ratio)
    if schema_misses:
        return (f"- {label}: the same-schema baseline alone reaches {schema_text}× of the minimal-table "
                f"rate, under the {threshold}× target, so with this schema the target is missed before any "
                f"of litequeue's own code runs. litequeue then keeps {own_text}× of the same-schema rate.")
    return (f"- {label}: the same-schema baseline reaches {schema_text}× of the minimal-table rate, which "
            f"meets the {threshold}× target, so the schema does not explain the miss. litequeue keeps "
            f"{own_text}× of the same-schema rate.")


def frames_lines(rounds: List[Dict[str, float]], wal_commits: int) -> List[str]:
    """Return the paragraph with the median WAL frames per commit, or no lines if they were not counted."""
    frames = {key: median_of(rounds, key) for key in
              ("wal.raw.insert", "wal.schema.insert", "wal.raw.claim", "wal.schema.claim")}
    if any(value is None for value in frames.values()):
        return []
    text = {key: format_number(value) for key, value in frames.items()}
    return [
        f"WAL frames per commit, counted over {wal_commits:,} commits at FULL with checkpoints off: "
        f"{text['wal.raw.insert']} for a minimal-table insert and {text['wal.schema.insert']} for "
        f"`INSERT_TASK` on litequeue's schema. A minimal-table claim or completion, one commit each, "
        f"writes {text['wal.raw.claim']}, and litequeue's completion and claim, which share one commit, "
        f"write {text['wal.schema.claim']}. At FULL every commit waits for an fsync of the WAL, and at "
        "NORMAL only checkpoints fsync it.",
        "",
    ]


def schema_section(rounds: List[Dict[str, float]], wal_commits: int) -> List[str]:
    """Return the section that splits the enqueue and drain targets into the schema's part and
    litequeue's own part, with a finding for each missed one. Return no lines when the
    same-schema baselines were not measured."""
    rows, findings = [], []
    for split in SCHEMA_SPLITS:
        total = ratios_of(rounds, split.key, split.baseline)
        schema = ratios_of(rounds, split.schema_baseline, split.baseline)
        own = ratios_of(rounds, split.key, split.schema_baseline)
        target = target_of(split.key, split.baseline)
        if not (total and schema and own and target):
            continue
        total_median, schema_median, own_median = (statistics.median(values) for values in (total, schema, own))
        threshold = format_number(target.threshold)
        rows.append(f"| {split.label} | {format_number(total_median)}× | {format_number(schema_median)}× | "
                    f"{format_number(own_median)}× | ≥ {threshold}× |")
        if total_median < target.threshold:
            findings.append(schema_finding(split.label, threshold, schema_median, own_median,
                                           schema_misses=schema_median < target.threshold))
    if not rows:
        return []

    return [
        "## Why some targets are missed",
        "",
        "The targets compare litequeue with raw SQLite on a minimal task table with one partial index. "
        "litequeue's table has more indexes and uses AUTOINCREMENT. The same-schema baselines run "
        "litequeue's own statements (`INSERT_TASK`, and `COMPLETE_TASK`, `RELEASE_DEPENDENTS` and "
        "`CLAIM_TASK` in one transaction) on litequeue's schema, from a plain sqlite3 connection with "
        "litequeue's settings and no queue code. Each ratio of a target then splits into the schema's "
        "part (same schema / minimal table) and the part of everything litequeue does around those "
        "statements, including worker start-up in the drain (litequeue / same schema). The figures are "
        "medians of per-round ratios, so the two parts need not multiply to exactly the first column.",
        "",
        "| target | litequeue / minimal table | same schema / minimal table | litequeue / same schema | required |",
        "| --- | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        *frames_lines(rounds, wal_commits),
        *(findings or ["No target that this section covers was missed in this run."]),
        "",
    ]


def machine_lines(info: RunInfo) -> List[str]:
    lines = [
        f"- CPU: {os.cpu_count()} cores ({cpu_model()}), memory {memory_gib():.0f} GiB",
        f"- OS: {platform.platform()}",
        f"- Python: {platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        f"- SQLite: {sqlite3.sqlite_version} (the library Python's sqlite3 module is linked against)",
        f"- litequeue: {litequeue.__version__} from {LITEQUEUE_SOURCE}, {describe_revision()}",
        f"- huey: {info.huey_version or 'not measured'}",
        f"- database files: a fresh temporary directory per measurement under {info.workdir_parent}",
        f"- load average (1, 5, 15 min): {format_load(info.load_before)} at the start, "
        f"{format_load(info.load_after)} at the end",
        f"- run started {datetime.datetime.fromtimestamp(info.started).astimezone().isoformat(timespec='seconds')},"
        f" took {info.duration_s / 60:.1f} min",
    ]
    if info.huey_synchronous:
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        lines.append("- huey's connections read back PRAGMA synchronous = "
                     + ", ".join(f"{names.get(level, level)} with fsync={fsync}"
                                 for fsync, level in info.huey_synchronous.items()))
    return lines


def counts_lines(counts: dict) -> List[str]:
    low, high = counts["pickup_spacing_s"]
    return [
        f"- rounds: {counts['rounds']}",
        f"- single inserts and `enqueue` calls per measurement: {counts['inserts']:,}",
        f"- batched inserts and `enqueue_many`: {counts['batch_rows']:,} rows in batches of {counts['batch_size']:,}",
        f"- tasks per drain (and per raw claim + completion run, on either table): {counts['drain_tasks']:,}",
        f"- finished tasks already in the table for the large-table drain: {counts['finished_rows']:,}",
        f"- pickup samples per round: {counts['pickups']}, each after a random pause of "
        f"{low:g}–{high:g} s, plus one after {counts['long_idle_s']:g} s without tasks",
        f"- idle CPU measured over {counts['idle_cpu_s']:g} s, starting about 1 s after the last pickup",
        f"- commits per statement when counting WAL frames: {counts['wal_commits']:,}",
    ]


def method_lines(idle_cpu_s: float) -> List[str]:
    tick_s = 1 / os.sysconf("SC_CLK_TCK")
    return [
        "- Every measurement uses a fresh database file in WAL mode. Each round runs every "
        "measurement once, in the same order, and ratios are taken within a round.",
        "- The raw baselines use Python's sqlite3 on a minimal task table (id, task, args, status, "
        "times, result) with a partial index on queued rows. The claim is one `UPDATE ... WHERE id = "
        "(SELECT ... LIMIT 1) RETURNING ...` transaction and the completion a second one, driven by "
        "2 processes whose clock starts once both have connected.",
        "- The same-schema baselines create the database with `litequeue.Queue`, then use a plain "
        "sqlite3 connection with the settings litequeue sets: `synchronous`, `journal_size_limit`, "
        "a RESTART checkpoint after a commit that leaves the WAL over 4 MiB, and "
        "`wal_autocheckpoint = 0` on SQLite versions with the WAL-reset bug. They do not take "
        "litequeue's lock file. The insert runs `INSERT_TASK` in autocommit mode. In the drain, each of "
        "2 processes runs one `BEGIN IMMEDIATE` transaction per task that completes its previous task "
        "and claims the next, and no task function runs.",
        "- WAL frames per commit are the growth of the WAL file divided by (page size + 24 bytes), "
        "in one process on a separate database with checkpoints off.",
        "- litequeue drains run `python -m litequeue worker --concurrency 2 --synchronous LEVEL` on "
        "a queue filled beforehand. The clock runs from starting the supervisor to the moment no task "
        "is queued or in progress, checked every 50 ms from the benchmark process. The drain "
        "figure therefore includes interpreter and worker start-up, and the first-claim-to-last-"
        "completion figure does not. The check counts only unfinished rows, because `Queue.counts()` "
        "groups every row and takes tens of milliseconds on a table of 1,000,000 finished tasks.",
        "- The large-table drain first writes the finished tasks into litequeue's schema with one "
        "`INSERT ... SELECT` from a recursive CTE, then enqueues the tasks to drain.",
        "- Pickup latency is the time from `enqueue` returning to the task function reading "
        "`time.monotonic()`, a clock shared by all processes on Linux. Two warm-up pickups, 1 s "
        "apart, are not counted: the producer's first wake-up came before any worker process "
        "listened, and litequeue's notifier then skips wake-ups for 0.5 s.",
        "- Idle CPU is utime + stime of the supervisor and its worker processes from `/proc/<pid>/stat`, "
        f"counted in clock ticks of {tick_s * 1000:g} ms, so over {idle_cpu_s:g} s the resolution is "
        f"{100 * tick_s / idle_cpu_s:.2g} % of one core. "
        "Peak RSS is `VmHWM` from `/proc/<pid>/status`, read before the supervisor stops. It "
        "includes pages shared with the supervisor, because the worker processes are forked from it.",
        "- huey runs `huey_consumer huey_app.huey -k process -w 2 -q` (`-q` so that no line is "
        "logged per task, as litequeue logs none at its default level). Its drain ends when its task "
        "table is empty, when at most one no-op task per worker process may still be running. huey "
        "stores nothing for a task that returns None, while litequeue records every completion. "
        "`fsync=False` sets synchronous=OFF, which is less durable than NORMAL: a power loss can "
        "corrupt the database, not only lose the latest commits.",
        "- Other processes ran on the same machine during the run, so single figures are noisy. "
        "Read the spread, and compare ratios taken within one round.",
    ]


def render(info: RunInfo, rounds: List[Dict[str, float]]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `benchmarks/run.py`; rerun it rather than editing this file. Figures are the "
        f"median over {len(rounds)} interleaved round(s), with the min–max spread.",
        "",
        "## Commands",
        "",
        "```sh",
        "python3 -m venv /tmp/bench-venv",
        "/tmp/bench-venv/bin/pip install -r benchmarks/requirements.txt -e .",
        info.command,
        "```",
        "",
        "## Machine",
        "",
        *machine_lines(info),
        "",
        "## Counts",
        "",
        *counts_lines(info.counts),
        "",
    ]
    if info.huey_note:
        lines += [f"**{info.huey_note}.** The huey rows are left out.", ""]
    lines += ["## Targets", "", *targets_table(rounds), ""]
    lines += schema_section(rounds, info.counts["wal_commits"])
    lines += ["## Figures", "", *figures_table(rounds), ""]
    if not info.huey_note:
        lines += ["## litequeue against huey", "", "A ratio above 1 favors litequeue.", "",
                  *comparisons_table(rounds), ""]
    lines += ["## Method", "", *method_lines(info.counts["idle_cpu_s"]), ""]
    return "\n".join(lines)


# --- machine facts ---------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown model"


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def describe_revision() -> str:
    """Return the git commit of the measured litequeue source, and whether it has local changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=LITEQUEUE_SOURCE, capture_output=True, text=True,
                              timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changes = git("status", "--porcelain", "--untracked-files=all", "--", ".")
    except (OSError, subprocess.SubprocessError):
        commit, changes = "", ""
    if not commit:
        return "not in a git checkout"
    if changes:
        return f"commit {commit} with uncommitted changes in {LITEQUEUE_SOURCE.name}/"
    return f"commit {commit}"


def format_load(load: tuple) -> str:
    return ", ".join(f"{value:.2f}" for value in load)
