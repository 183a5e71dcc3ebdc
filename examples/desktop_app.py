"""A small desktop-style program that runs its background work with litequeue.

It keeps its tasks in a database file in your home directory (or --db), runs an embedded
litequeue.Worker while it is open, and shows each task's progress from the lines the task
yields. Close it while work is pending and open it again: the pending tasks are still there
and resume (a task cut off by the close starts again from the beginning).

With Tk available it opens a window; otherwise (or with --console) it reads commands from
standard input:

    add NAME [STEPS]   enqueue a render task
    list               show every task with its progress
    wait               wait until no task is pending, then list
    quit               stop the worker and exit (pending tasks stay for next time)

    python examples/desktop_app.py [--db PATH] [--console]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing, too

import litequeue  # noqa: E402

DEFAULT_DB = Path.home() / ".litequeue-desktop-demo" / "tasks.db"
CLOSE_GRACE_S = 2.0


def progress_of(task: litequeue.Task) -> str:
    """Return the last progress line a task yielded, or its status when it has none."""
    lines = task.output.strip().splitlines()
    if task.status == litequeue.TaskStatus.FAILED:
        return "failed: " + (task.error or "").splitlines()[0]
    if lines:
        return lines[-1]
    return task.status.value


def describe(task: litequeue.Task) -> str:
    return f"#{task.id:<4} {task.args.get('name', '?'):<16} {task.status.value:<10} {progress_of(task)}"


def start_worker(db_path: Path) -> litequeue.Worker:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), str(HERE.parent), env.get("PYTHONPATH")]))
    worker = litequeue.Worker(str(db_path), concurrency=2, env=env, grace_s=CLOSE_GRACE_S,
                              log_path=str(db_path) + ".worker.log", extra_args=["--log-level", "WARNING"])
    return worker.start()


def run_console(queue: litequeue.Queue) -> None:
    print("commands: add NAME [STEPS] | list | wait | quit", flush=True)
    pending = [t for t in queue.list(limit=1000) if not t.is_final]
    if pending:
        print(f"{len(pending)} task(s) pending from last time; they resume now", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        command = words[0].lower()
        if command == "add" and len(words) >= 2:
            steps = int(words[2]) if len(words) > 2 else 10
            task_id = queue.enqueue("photo_tasks.render", {"name": words[1], "steps": steps})
            print(f"added task {task_id}", flush=True)
        elif command == "list":
            for task in reversed(queue.list(limit=50)):
                print(describe(task), flush=True)
        elif command == "wait":
            for task in queue.list(limit=1000):
                if not task.is_final:
                    queue.wait(task.id, timeout_s=3600)
            for task in reversed(queue.list(limit=50)):
                print(describe(task), flush=True)
        elif command == "quit":
            break
        else:
            print(f"unknown command {line.strip()!r}; use add NAME [STEPS], list, wait or quit", flush=True)


def run_window(queue: litequeue.Queue) -> None:
    import tkinter as tk
    from tkinter import ttk

    root = tk.Tk()
    root.title("litequeue desktop demo")
    frame = ttk.Frame(root, padding=8)
    frame.pack(fill="both", expand=True)
    name = tk.StringVar(value="holiday.jpg")
    ttk.Entry(frame, textvariable=name, width=30).grid(row=0, column=0, sticky="we")
    ttk.Button(frame, text="Render",
               command=lambda: queue.enqueue("photo_tasks.render", {"name": name.get() or "untitled"})
               ).grid(row=0, column=1, padx=4)
    listing = tk.Listbox(frame, width=80, height=16, font="TkFixedFont")
    listing.grid(row=1, column=0, columnspan=2, sticky="nsew", pady=(8, 0))
    frame.columnconfigure(0, weight=1)
    frame.rowconfigure(1, weight=1)

    def refresh() -> None:
        listing.delete(0, "end")
        for task in reversed(queue.list(limit=200)):
            listing.insert("end", describe(task))
        root.after(500, refresh)

    refresh()
    root.mainloop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help=f"task database (default: {DEFAULT_DB})")
    parser.add_argument("--console", action="store_true", help="use the command-line loop even if Tk works")
    args = parser.parse_args()
    args.db.parent.mkdir(parents=True, exist_ok=True)

    queue = litequeue.Queue(args.db)
    worker = start_worker(args.db)
    try:
        use_window = not args.console and _tk_available()
        run_window(queue) if use_window else run_console(queue)
    finally:
        # Tasks still running after the grace period go back to queued for the next start.
        worker.stop(grace_s=CLOSE_GRACE_S)
        queue.close()
    return 0


def _tk_available() -> bool:
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return False
    try:
        import tkinter

        tkinter.Tk().destroy()
        return True
    except Exception:  # no Tk, or no display to open a window on
        return False


if __name__ == "__main__":
    sys.exit(main())
