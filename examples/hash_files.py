"""Hash every file of a directory tree with litequeue worker processes.

Enqueues one task per file (by default the Python standard library's own source tree),
starts ``python -m litequeue worker`` beside it, shows progress, and prints a summary. It
also enqueues one task that times out and one that kills its worker process, and prints the
messages litequeue stored for them.

    python examples/hash_files.py [--root DIR] [--db PATH] [--concurrency N]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing, too

import litequeue  # noqa: E402

BATCH = 1000


SKIPPED_DIRECTORIES = {"site-packages", "dist-packages", "__pycache__"}


def list_files(root: Path) -> list:
    """Return the regular files under ``root``, leaving out installed packages and bytecode."""
    files = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if d not in SKIPPED_DIRECTORIES]
        for name in names:
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink():
                files.append(str(path))
    return sorted(files)


def enqueue_files(queue: litequeue.Queue, files: list) -> list:
    ids = []
    for start in range(0, len(files), BATCH):
        batch = files[start:start + BATCH]
        ids.extend(queue.enqueue_many([("file_tasks.hash_file", {"path": path}) for path in batch]))
    return ids


def start_worker(db_path: str, concurrency: int) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), str(HERE.parent), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "litequeue", "worker", "--db", db_path,
               "--concurrency", str(concurrency), "--abort-grace-s", "1", "--log-level", "WARNING"]
    return subprocess.Popen(command, env=env)


def show_progress(queue: litequeue.Queue, total: int, started: float) -> None:
    """Print progress until every task is final: one rewritten line on a terminal, else a
    line every two seconds."""
    interactive = sys.stdout.isatty()
    last_printed = 0.0
    while True:
        counts = queue.counts()
        done = counts["completed"] + counts["failed"] + counts["cancelled"]
        elapsed = time.monotonic() - started
        line = (f"{done}/{total} done, {counts['progress']} running, {counts['failed']} failed, "
                f"{elapsed:.1f} s")
        finished = done >= total
        if interactive:
            print("\r" + line, end="\n" if finished else "", flush=True)
        elif finished or elapsed - last_printed >= 2:
            print(line, flush=True)
            last_printed = elapsed
        if finished:
            return
        time.sleep(0.25)


def summarize(queue: litequeue.Queue, ids: list, elapsed: float) -> None:
    tasks = [queue.get(task_id) for task_id in ids]
    completed = [t for t in tasks if t.status == litequeue.TaskStatus.COMPLETED]
    total_bytes = sum(t.result["bytes"] for t in completed)
    total_lines = sum(t.result["lines"] for t in completed)
    failed = [t for t in tasks if t.status != litequeue.TaskStatus.COMPLETED]
    print(f"files:   {len(completed)} hashed, {len(failed)} failed")
    print(f"bytes:   {total_bytes:,}  lines: {total_lines:,}")
    print(f"time:    {elapsed:.2f} s  ({len(tasks) / elapsed:,.0f} tasks/s)")
    for task in failed[:5]:
        print(f"  failed: {task.args['path']}: {task.error.splitlines()[0]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=sysconfig.get_paths()["stdlib"],
                        help="directory tree to hash (default: the standard library)")
    parser.add_argument("--db", default=None, help="database file (default: a temporary one)")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2, help="worker processes")
    args = parser.parse_args()

    workdir = tempfile.TemporaryDirectory(prefix="litequeue-example-")
    db_path = args.db or os.path.join(workdir.name, "example.db")
    queue = litequeue.Queue(db_path)
    files = list_files(Path(args.root))
    print(f"enqueueing {len(files)} files under {args.root} into {db_path}")
    ids = enqueue_files(queue, files)
    stalled = queue.enqueue("file_tasks.stall", {"seconds": 60}, timeout_s=1)
    crashed = queue.enqueue("file_tasks.crash")

    started = time.monotonic()
    worker = start_worker(db_path, args.concurrency)
    try:
        show_progress(queue, len(ids) + 2, started)
        elapsed = time.monotonic() - started
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
    summarize(queue, ids, elapsed)
    print(f"timeout: task {stalled} is {queue.get(stalled).status.value}: {queue.get(stalled).error}")
    print(f"crash:   task {crashed} is {queue.get(crashed).status.value}: {queue.get(crashed).error}")
    print(f"worker exited with code {code}")
    queue.close()
    workdir.cleanup()
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
