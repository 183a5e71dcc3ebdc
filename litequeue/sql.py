"""Every SQL statement litequeue runs, each under a name.

Statements that move a task name the status (and, for a claimed task, the owner and attempt)
they expect in their WHERE clause, so a late or repeated write matches no row instead of
overwriting a newer state.
"""

SCHEMA_VERSION = 3

# Each entry upgrades the schema from version (index) to version (index + 1).
MIGRATIONS = [
    """
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        task TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('queued', 'progress', 'completed', 'failed', 'cancelled')),
        priority INTEGER NOT NULL DEFAULT 0,
        run_at REAL NOT NULL,
        created REAL NOT NULL,
        modified REAL NOT NULL,
        started REAL,
        finished REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_retries INTEGER NOT NULL DEFAULT 0,
        timeout_s REAL,
        worker_pid INTEGER,
        worker_host TEXT,
        worker_host_id TEXT,
        worker_start TEXT,
        result TEXT,
        log TEXT,
        error TEXT,
        args TEXT NOT NULL
    );
    -- Claims read only this index, in claim order, so their cost does not grow with the
    -- number of finished tasks.
    CREATE INDEX tasks_claim_order ON tasks (queue, priority DESC, run_at, id)
        WHERE status = 'queued';
    CREATE INDEX tasks_in_progress ON tasks (worker_host_id, worker_pid)
        WHERE status = 'progress';
    CREATE INDEX tasks_status ON tasks (status, queue);
    -- Generator output is appended as rows, so a long stream never rewrites the task row.
    CREATE TABLE task_output (
        task_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        chunk TEXT NOT NULL,
        PRIMARY KEY (task_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE workers (
        host_id TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        start_token TEXT,
        role TEXT NOT NULL CHECK (role IN ('supervisor', 'worker')),
        supervisor_pid INTEGER,
        queues TEXT,
        started REAL NOT NULL,
        heartbeat REAL NOT NULL,
        PRIMARY KEY (host_id, pid)
    );
    """,
    # Version 2: unique keys, dependencies, paused queues and periodic schedules.
    """
    ALTER TABLE tasks ADD COLUMN unique_key TEXT;
    -- How many tasks this one still waits for; only tasks waiting for none can be claimed.
    ALTER TABLE tasks ADD COLUMN waiting_on INTEGER NOT NULL DEFAULT 0;
    DROP INDEX tasks_claim_order;
    CREATE INDEX tasks_claim_order ON tasks (queue, priority DESC, run_at, id)
        WHERE status = 'queued' AND waiting_on = 0;
    -- At most one queued or running task per unique key, enforced by the database.
    CREATE UNIQUE INDEX tasks_unique_active ON tasks (unique_key)
        WHERE unique_key IS NOT NULL AND status IN ('queued', 'progress');
    CREATE TABLE task_dependencies (
        depends_on INTEGER NOT NULL,
        task_id INTEGER NOT NULL,
        PRIMARY KEY (depends_on, task_id)
    ) WITHOUT ROWID;
    CREATE INDEX task_dependencies_by_task ON task_dependencies (task_id);
    CREATE TABLE paused_queues (
        queue TEXT PRIMARY KEY,
        paused_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        last_run_at REAL NOT NULL,
        modified REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # Version 3: the task that each schedule enqueued last, for `litequeue schedules`.
    """
    ALTER TABLE schedules ADD COLUMN last_task_id INTEGER;
    ALTER TABLE schedules ADD COLUMN last_task_run_at REAL;
    """,
]

# --- connection set-up -------------------------------------------------------------------

GET_USER_VERSION = "PRAGMA user_version"
SET_USER_VERSION = "PRAGMA user_version = {version:d}"
GET_JOURNAL_MODE = "PRAGMA journal_mode"
SET_JOURNAL_MODE_WAL = "PRAGMA journal_mode = WAL"
SET_SYNCHRONOUS = "PRAGMA synchronous = {level}"
SET_BUSY_TIMEOUT = "PRAGMA busy_timeout = {milliseconds:d}"
SET_AUTOCHECKPOINT = "PRAGMA wal_autocheckpoint = {pages:d}"
GET_AUTOCHECKPOINT = "PRAGMA wal_autocheckpoint"
SET_JOURNAL_SIZE_LIMIT = "PRAGMA journal_size_limit = {size_bytes:d}"
CHECKPOINT = "PRAGMA wal_checkpoint({mode})"
QUICK_CHECK = "PRAGMA quick_check"
BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"

# --- tasks -----------------------------------------------------------------------------------

TASK_COLUMNS = (
    "id, queue, task, args, status, priority, run_at, created, modified, started, finished, "
    "attempts, max_retries, timeout_s, worker_pid, worker_host, result, log, error, "
    "unique_key, waiting_on"
)

# A task whose unique key is taken by a queued or running task is not inserted (rowcount 0).
INSERT_TASK = """
    INSERT INTO tasks (queue, task, args, status, priority, run_at, created, modified,
                       max_retries, timeout_s, unique_key, waiting_on, error, finished)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT DO NOTHING
"""

# AUTOINCREMENT keeps the largest id ever handed out here.
GET_TASK_SEQUENCE = "SELECT seq FROM sqlite_sequence WHERE name = 'tasks'"

GET_ACTIVE_BY_UNIQUE_KEY = """
    SELECT id FROM tasks WHERE unique_key = ? AND status IN ('queued', 'progress')
"""

GET_STATUS = "SELECT status FROM tasks WHERE id = ?"

INSERT_DEPENDENCY = "INSERT OR IGNORE INTO task_dependencies (depends_on, task_id) VALUES (?, ?)"

# A completed task releases the tasks that wait for it. The unary + keeps SQLite from
# reading every queued task through the status index instead of the few dependents by id.
# This runs on every completion, so it must cost one index probe when there are none.
RELEASE_DEPENDENTS = """
    UPDATE tasks SET waiting_on = waiting_on - 1, modified = ?
    WHERE id IN (SELECT task_id FROM task_dependencies WHERE depends_on = ?)
      AND +status = 'queued' AND waiting_on > 0
"""

# A task that failed or was cancelled for good cancels the tasks still waiting for it.
CANCEL_DEPENDENTS = """
    UPDATE tasks
    SET status = 'cancelled', finished = ?, modified = ?,
        error = 'Cancelled: task ' || ? || ', which this task depends on, ended ' || ?
    WHERE id IN (SELECT task_id FROM task_dependencies WHERE depends_on = ?)
      AND +status = 'queued' AND waiting_on > 0
    RETURNING id
"""

LIST_DEPENDENCIES = "SELECT depends_on FROM task_dependencies WHERE task_id = ? ORDER BY depends_on"

PAUSE_QUEUE = "INSERT OR IGNORE INTO paused_queues (queue, paused_at) VALUES (?, ?)"
RESUME_QUEUE = "DELETE FROM paused_queues WHERE queue = ?"
LIST_PAUSED_QUEUES = "SELECT queue FROM paused_queues ORDER BY queue"

# One statement claims and records the owner, so a claimed task always has an owner.
CLAIM_TASK = f"""
    UPDATE tasks
    SET status = 'progress', worker_pid = :pid, worker_host = :host, worker_host_id = :host_id,
        worker_start = :start_token, started = :now, modified = :now, attempts = attempts + 1,
        finished = NULL
    WHERE id = (
        SELECT id FROM tasks
        WHERE status = 'queued' AND waiting_on = 0 AND queue = :queue AND run_at <= :now
          AND NOT EXISTS (SELECT 1 FROM paused_queues WHERE queue = :queue)
        ORDER BY priority DESC, run_at, id
        LIMIT 1
    )
    RETURNING {TASK_COLUMNS}
"""

# Read-only probe used while idle, so polling never takes the write lock.
HAS_ELIGIBLE_TASK = """
    SELECT 1 FROM tasks
    WHERE status = 'queued' AND waiting_on = 0 AND queue = :queue AND run_at <= :now
      AND NOT EXISTS (SELECT 1 FROM paused_queues WHERE queue = :queue)
    LIMIT 1
"""

NEXT_RUN_AT = """
    SELECT min(run_at) FROM tasks
    WHERE status = 'queued' AND waiting_on = 0 AND queue = :queue
      AND NOT EXISTS (SELECT 1 FROM paused_queues WHERE queue = :queue)
"""

OWNER_FENCE = """
    id = ? AND status = 'progress' AND worker_pid = ? AND worker_host_id = ? AND attempts = ?
"""

COMPLETE_TASK = f"""
    UPDATE tasks
    SET status = 'completed', result = ?, log = ?, error = NULL, finished = ?, modified = ?
    WHERE {OWNER_FENCE}
"""

FAIL_TASK_OWNED = f"""
    UPDATE tasks
    SET status = 'failed', error = ?, log = coalesce(?, log), finished = ?, modified = ?
    WHERE {OWNER_FENCE}
"""

RETRY_TASK_OWNED = f"""
    UPDATE tasks
    SET status = 'queued', error = ?, log = coalesce(?, log), run_at = ?, modified = ?,
        worker_pid = NULL, worker_host = NULL, worker_host_id = NULL, worker_start = NULL
    WHERE {OWNER_FENCE}
"""

# A graceful shutdown returns the task without spending the attempt it was claimed with.
RELEASE_TASK_OWNED = f"""
    UPDATE tasks
    SET status = 'queued', attempts = attempts - 1, modified = ?,
        worker_pid = NULL, worker_host = NULL, worker_host_id = NULL, worker_start = NULL
    WHERE {OWNER_FENCE}
"""

APPEND_OUTPUT = """
    INSERT INTO task_output (task_id, seq, chunk)
    SELECT ?, coalesce(max(seq), 0) + 1, ? FROM task_output WHERE task_id = ?
"""

OUTPUT_SIZE = "SELECT coalesce(sum(length(CAST(chunk AS BLOB))), 0) FROM task_output WHERE task_id = ?"

GET_OUTPUT = "SELECT chunk FROM task_output WHERE task_id = ? ORDER BY seq"

DELETE_OUTPUT = "DELETE FROM task_output WHERE task_id = ?"

GET_TASK = f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"

GET_TASK_STATE = """
    SELECT status, worker_pid, worker_host, worker_host_id, worker_start, attempts,
           max_retries, modified, task
    FROM tasks WHERE id = ?
"""

LIST_TASKS = f"""
    SELECT {TASK_COLUMNS} FROM tasks
    WHERE (:status IS NULL OR status = :status)
      AND (:queue IS NULL OR queue = :queue)
      AND (:task IS NULL OR task = :task)
    ORDER BY id DESC
    LIMIT :limit
"""

COUNT_BY_STATUS = "SELECT status, count(*) FROM tasks GROUP BY status"

CANCEL_QUEUED = """
    UPDATE tasks SET status = 'cancelled', finished = ?, modified = ?,
        error = 'Task cancelled'
    WHERE id = ? AND status = 'queued'
"""

CANCEL_RUNNING = """
    UPDATE tasks SET status = 'cancelled', finished = ?, modified = ?,
        error = 'Task cancelled while running'
    WHERE id = ? AND status = 'progress'
"""

REQUEUE_TASK = """
    UPDATE tasks
    SET status = 'queued', run_at = ?, modified = ?, finished = NULL, started = NULL,
        attempts = 0, waiting_on = 0, worker_pid = NULL, worker_host = NULL, worker_host_id = NULL, worker_start = NULL,
        error = NULL, result = NULL
    WHERE id = ? AND status IN ('failed', 'cancelled')
"""

# Failures recorded by a supervisor or an orphan check: fenced on the owner and attempt that
# were read inside the same transaction.
LIST_PROGRESS_TASKS = """
    SELECT id, worker_pid, worker_host_id, worker_start, attempts, modified
    FROM tasks WHERE status = 'progress'
"""

LIST_PROGRESS_OF_OWNER = """
    SELECT id, attempts FROM tasks
    WHERE status = 'progress' AND worker_host_id = ? AND worker_pid = ?
"""

PROGRESS_STATUS_OF = """
    SELECT id, status, worker_pid, attempts FROM tasks WHERE id IN ({placeholders})
"""

# --- workers -------------------------------------------------------------------------------

UPSERT_WORKER = """
    INSERT INTO workers (host_id, pid, host, start_token, role, supervisor_pid, queues,
                         started, heartbeat)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (host_id, pid) DO UPDATE SET
        host = excluded.host, start_token = excluded.start_token, role = excluded.role,
        supervisor_pid = excluded.supervisor_pid, queues = excluded.queues,
        started = excluded.started, heartbeat = excluded.heartbeat
"""

HEARTBEAT_WORKERS = """
    UPDATE workers SET heartbeat = ? WHERE host_id = ? AND pid IN ({placeholders})
"""

GET_WORKER_HEARTBEAT = """
    SELECT heartbeat, start_token FROM workers WHERE host_id = ? AND pid = ?
"""

# The supervisor of a worker process, with the start token that proves it is still that process.
GET_SUPERVISOR_OF_WORKER = """
    SELECT supervisor.pid, supervisor.start_token
    FROM workers AS worker
    JOIN workers AS supervisor
      ON supervisor.host_id = worker.host_id AND supervisor.pid = worker.supervisor_pid
    WHERE worker.host_id = ? AND worker.pid = ? AND worker.role = 'worker'
      AND supervisor.role = 'supervisor'
"""

DELETE_WORKER = "DELETE FROM workers WHERE host_id = ? AND pid = ?"

# A worker row goes only once no task names it as owner, so cleanup never hides an orphan.
DELETE_STALE_WORKERS = """
    DELETE FROM workers
    WHERE heartbeat < ?
      AND NOT EXISTS (
          SELECT 1 FROM tasks
          WHERE tasks.status = 'progress' AND tasks.worker_host_id = workers.host_id
            AND tasks.worker_pid = workers.pid
      )
"""

LIST_WORKERS = """
    SELECT host_id, pid, host, start_token, role, supervisor_pid, queues, started, heartbeat
    FROM workers ORDER BY host, supervisor_pid, role DESC, pid
"""

# --- operations: listing, statistics, workers, requeue history, purge ----------------------
# Statements behind the operations commands of the command line (litequeue.inspection and
# litequeue.retention) and the supervisor's periodic purge.

# Every task column except output and log, which can hold megabytes per task.
TASK_SUMMARY_COLUMNS = (
    "id, queue, task, args, status, priority, run_at, created, modified, started, finished, "
    "attempts, max_retries, timeout_s, worker_pid, worker_host, result, error"
)

# A negative :limit means no limit in SQLite.
LIST_TASK_SUMMARIES = f"""
    SELECT {TASK_SUMMARY_COLUMNS} FROM tasks
    WHERE (:status IS NULL OR status = :status)
      AND (:queue IS NULL OR queue = :queue)
      AND (:task IS NULL OR task = :task)
    ORDER BY id DESC
    LIMIT :limit
"""

COUNT_BY_QUEUE_AND_STATUS = "SELECT queue, status, count(*) FROM tasks GROUP BY queue, status"

OLDEST_QUEUED_BY_QUEUE = """
    SELECT queue, min(created) FROM tasks WHERE status = 'queued' GROUP BY queue
"""

# NOTE: no index covers `finished`, so this reads every completed and failed task. The
# periodic purge keeps that set to the retention period.
COUNT_FINISHED_SINCE = """
    SELECT status, count(*), coalesce(sum(finished >= :minute_ago), 0) FROM tasks
    WHERE status IN ('completed', 'failed') AND finished >= :hour_ago
    GROUP BY status
"""

# One row per worker with a recent heartbeat and per task it owns, joined through the
# tasks_in_progress index. A worker that runs nothing gets one row with NULL task columns. Each supervisor comes before
# its worker processes, because 'supervisor' sorts before 'worker'.
LIST_LIVE_WORKERS_WITH_TASKS = """
    SELECT workers.host, workers.host_id, workers.pid, workers.start_token, workers.role,
           workers.supervisor_pid, workers.queues, workers.started, workers.heartbeat,
           tasks.id, tasks.queue, tasks.task, tasks.started
    FROM workers
    LEFT JOIN tasks
        ON tasks.status = 'progress' AND tasks.worker_host_id = workers.host_id
       AND tasks.worker_pid = workers.pid
    WHERE workers.heartbeat >= ?
    ORDER BY workers.host, workers.supervisor_pid, workers.role, workers.pid, tasks.id
"""

LIST_RUNNING_TASKS = """
    SELECT id, queue, task, started, attempts, worker_pid, worker_host FROM tasks
    WHERE status = 'progress'
    ORDER BY started, id
    LIMIT ?
"""

# Sorts every failed task, because no index covers `finished` (see COUNT_FINISHED_SINCE).
LIST_LATEST_FAILURES = """
    SELECT id, queue, task, finished, error FROM tasks
    WHERE status = 'failed'
    ORDER BY finished DESC, id DESC
    LIMIT ?
"""

GET_TASK_HISTORY = """
    SELECT status, attempts, started, finished, error, log FROM tasks WHERE id = ?
"""

# Written just before REQUEUE_TASK in the same transaction, with the same status check.
SET_REQUEUED_LOG = """
    UPDATE tasks SET log = ? WHERE id = ? AND status IN ('failed', 'cancelled')
"""

LIST_FAILED_IDS = """
    SELECT id FROM tasks
    WHERE status = 'failed'
      AND (:queue IS NULL OR queue = :queue)
      AND (:task IS NULL OR task = :task)
    ORDER BY id
"""

# {statuses} is a list of placeholders for finished statuses. Without ORDER BY, SQLite stops
# at the first LIMIT matches instead of sorting every candidate. When fewer match, it reads
# every task in those statuses, because no index covers `finished`.
SELECT_PURGEABLE_IDS = """
    SELECT id FROM tasks
    WHERE status IN ({statuses}) AND coalesce(finished, modified) < ?
    LIMIT ?
"""

DELETE_OUTPUT_OF_TASKS = "DELETE FROM task_output WHERE task_id IN ({placeholders})"

DELETE_DEPENDENCIES_OF_TASKS = """
    DELETE FROM task_dependencies WHERE task_id IN ({placeholders}) OR depends_on IN ({placeholders})
"""

# The status check repeats here so that this statement alone never deletes a queued or
# running task. The unary + keeps SQLite from choosing the status index for this term, which
# would scan every finished task instead of looking up the listed ids.
DELETE_FINISHED_TASKS = """
    DELETE FROM tasks
    WHERE id IN ({placeholders}) AND +status IN ('completed', 'failed', 'cancelled')
"""

VACUUM = "VACUUM"


# --- dashboard -------------------------------------------------------------------------------
# Statements used only by the web dashboard (litequeue.dashboard), through litequeue.inspection.

# Completed and failed tasks per status and per bucket of :bucket_s seconds, counted back from
# :now: bucket 0 contains the tasks with :now - :bucket_s < finished <= :now, bucket 1 the
# :bucket_s seconds before, and so on. A finish time after :now (a clock that runs ahead on
# another host) counts in bucket 0. Like COUNT_FINISHED_SINCE, it reads every completed and
# failed task, because no index covers `finished`.
COUNT_FINISHED_PER_BUCKET = """
    SELECT status, max(0, CAST((:now - finished) / :bucket_s AS INTEGER)) AS bucket, count(*)
    FROM tasks
    WHERE status IN ('completed', 'failed') AND finished > :since
    GROUP BY status, bucket
"""

# --- periodic schedules ------------------------------------------------------------------
# Statements behind litequeue.schedule. A schedule's last_run_at is its position: the fire
# time of the latest run that a supervisor enqueued or skipped, or the time a supervisor first
# saw the schedule. The next run is the schedule's first fire time after it.

LIST_SCHEDULE_POSITIONS = "SELECT name, last_run_at FROM schedules"

GET_SCHEDULE_POSITION = "SELECT last_run_at FROM schedules WHERE name = ?"

# Two supervisors that see a new schedule at once insert one row; the second inserts nothing.
INSERT_SCHEDULE = """
    INSERT INTO schedules (name, last_run_at, modified) VALUES (?, ?, ?)
    ON CONFLICT (name) DO NOTHING
"""

# Moves the position only from the value that was read, so that a run is taken once even if
# two writers read the same position.
ADVANCE_SCHEDULE = """
    UPDATE schedules SET last_run_at = :position, modified = :now
    WHERE name = :name AND last_run_at = :expected
"""

SET_SCHEDULE_LAST_TASK = """
    UPDATE schedules SET last_task_id = :task_id, last_task_run_at = :run_at, modified = :now
    WHERE name = :name
"""

LIST_SCHEDULE_STATES = """
    SELECT name, last_run_at, modified, last_task_id, last_task_run_at FROM schedules ORDER BY name
"""
