"""Task functions for the crash-chaos and contention suites.

Each run records its side effect in a SQLite file of its own (``effects``), so the test can
count how often every task really ran."""

import os
import random
import sqlite3
import time

_connections = {}


def _effects(path):
    key = (os.getpid(), path)
    conn = _connections.get(key)
    if conn is None:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS effects (task_key INTEGER, pid INTEGER)")
        _connections[key] = conn
    return conn


def record(effects_path, key, max_sleep_s=0.05):
    """Sleep a little, then record that task ``key`` ran in this process."""
    time.sleep(random.uniform(0, max_sleep_s))
    _effects(effects_path).execute("INSERT INTO effects VALUES (?, ?)", (key, os.getpid()))
    return key
