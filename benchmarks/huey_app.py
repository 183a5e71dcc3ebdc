"""The huey application the huey benchmarks run: a SqliteHuey with the benchmark task functions.

The consumer imports it as ``huey_app.huey``; the database path and the fsync setting come from
BENCH_HUEY_DB and BENCH_HUEY_FSYNC ("default" leaves SQLite's synchronous setting alone, "off"
passes ``fsync=False``, which sets synchronous=OFF). The benchmark process calls
:func:`create_huey` with the same values.
"""

import os

from huey import SqliteHuey

import bench_tasks

DB_ENV = "BENCH_HUEY_DB"
FSYNC_ENV = "BENCH_HUEY_FSYNC"
FSYNC_SETTINGS = {"default": None, "off": False}


def create_huey(path: str, fsync: str):
    """Return (huey, noop task, monotonic_stamp task) for the database at ``path``."""
    app = SqliteHuey("bench", filename=path, fsync=FSYNC_SETTINGS[fsync])
    return app, app.task()(bench_tasks.noop), app.task()(bench_tasks.monotonic_stamp)


if os.environ.get(DB_ENV):
    huey, noop, monotonic_stamp = create_huey(os.environ[DB_ENV], os.environ.get(FSYNC_ENV, "default"))
