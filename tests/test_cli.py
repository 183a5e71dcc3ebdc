"""The command line, run as a subprocess against real database files."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

import litequeue
from conftest import DEADLINE_S, REPO_DIR, subprocess_env


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "litequeue", *args], capture_output=True, text=True,
                          env=subprocess_env(env), timeout=DEADLINE_S)


def test_enqueue_then_show(db_path):
    result = run_cli("enqueue", "sample_tasks.add", "--args", '{"a": 1, "b": 2}', "--db", str(db_path),
                     "--priority", "3", "--max-retries", "2", "--timeout-s", "5")
    assert result.returncode == 0, result.stderr
    task_id = int(result.stdout.strip())

    shown = run_cli("show", str(task_id), "--db", str(db_path))
    assert shown.returncode == 0, shown.stderr
    assert "task:        sample_tasks.add" in shown.stdout
    assert "status:      queued" in shown.stdout
    assert 'args:        {"a": 1, "b": 2}' in shown.stdout

    as_json = json.loads(run_cli("show", str(task_id), "--json", "--db", str(db_path)).stdout)
    assert as_json["id"] == task_id
    assert as_json["status"] == "queued"
    assert as_json["priority"] == 3
    assert as_json["max_retries"] == 2
    assert as_json["timeout_s"] == 5


def test_show_unknown_id(db_path, queue):
    result = run_cli("show", "999", "--db", str(db_path))
    assert result.returncode == 5
    assert result.stderr.strip() == f"litequeue: error: task 999 not found in {db_path}"
    assert "Traceback" not in result.stderr


def test_show_missing_database(tmp_path):
    missing = tmp_path / "nope.db"
    result = run_cli("show", "1", "--db", str(missing))
    assert result.returncode == 3
    assert f"database {missing} not found" in result.stderr
    assert not missing.exists()


@pytest.mark.parametrize("args,fragment", [
    (["--args", "{not json"], "not JSON"),
    (["--args", "[1, 2]"], "JSON object"),
    (["--timeout-s", "-1"], "timeout_s"),
])
def test_enqueue_bad_input(db_path, args, fragment):
    result = run_cli("enqueue", "sample_tasks.add", "--db", str(db_path), *args)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_enqueue_bad_task_path(db_path):
    result = run_cli("enqueue", "not-a-path", "--db", str(db_path))
    assert result.returncode == 2
    assert "invalid task path 'not-a-path'" in result.stderr


def test_enqueue_reads_litequeue_db(tmp_path):
    path = tmp_path / "env.db"
    result = run_cli("enqueue", "sample_tasks.noop", env={"LITEQUEUE_DB": str(path)})
    assert result.returncode == 0, result.stderr
    assert path.exists()


def test_worker_help_shows_defaults():
    result = run_cli("worker", "--help")
    assert result.returncode == 0
    for option in ("--concurrency", "--queue", "--timeout-s", "--grace-s", "--import", "--allow",
                   "--max-tasks-per-child", "--db"):
        assert option in result.stdout
    assert "default: 30.0" in result.stdout


def test_invalid_timeout_environment(db_path):
    result = run_cli("worker", "--db", str(db_path), env={"LITEQUEUE_TASK_TIMEOUT": "soon"})
    assert result.returncode == 2
    assert "invalid LITEQUEUE_TASK_TIMEOUT='soon'" in result.stderr


def installed_script():
    """The ``litequeue`` console script of the running environment, if it is installed."""
    candidate = os.path.join(os.path.dirname(sys.executable), "litequeue")
    return candidate if os.access(candidate, os.X_OK) else shutil.which("litequeue")


def test_console_script_imports_from_working_directory(tmp_path):
    script = installed_script()
    if script is None:
        pytest.skip("the litequeue console script is not installed in this environment")
    project = tmp_path / "project"
    project.mkdir()
    (project / "project_tasks.py").write_text("def triple(x):\n    return 3 * x\n")
    db_path = project / "jobs.db"
    queue = litequeue.Queue(db_path)
    task_id = queue.enqueue("project_tasks.triple", {"x": 5})
    env = subprocess_env()
    env["PYTHONPATH"] = str(REPO_DIR)  # litequeue itself, but not the project directory
    worker = subprocess.Popen([script, "worker", "--db", str(db_path), "--concurrency", "1"], cwd=project,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert queue.wait(task_id, timeout_s=DEADLINE_S).result == 15
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=DEADLINE_S)
    queue.close()


def test_worker_import_of_missing_module(db_path):
    result = run_cli("worker", "--db", str(db_path), "--import", "no_such_module_xyz")
    assert result.returncode == 2
    assert "cannot import module 'no_such_module_xyz' given with --import" in result.stderr
    assert "Traceback" not in result.stderr
