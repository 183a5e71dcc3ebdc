"""The dashboard's JSON endpoints, served by a real ``litequeue dashboard`` process on a free
loopback port, against a real database that contains tasks in every status. Each document must
equal what the command line prints with --json for the same database."""

import os
import re
import signal
import time

import pytest

from conftest import DEADLINE_S, REPO_DIR
from dashboard_support import get_json, request, start_dashboard  # noqa: F401 (a fixture)
from litequeue import TaskStatus, inspection, liveness
from litequeue.dashboard import server
from test_cli_ops import (  # noqa: F401 (tasks is a fixture)
    FAILURE, claim_next, cli_json, complete, fail, register_worker, run_cli, tasks,
)

TOKEN = "a-test-token-that-is-long-enough"
STATIC_DIR = REPO_DIR / "litequeue" / "dashboard" / "static"


def without(document, *keys):
    """Return a copy of a dict without ``keys``: the values that change from one read to the next."""
    return {key: value for key, value in document.items() if key not in keys}


# --- the documents of the command line -----------------------------------------------------

def test_stats_equals_cli(db_path, tasks, db, start_dashboard):
    now = time.time()
    register_worker(db, 100, "supervisor", now)
    register_worker(db, 101, "worker", now)
    dashboard = start_dashboard()

    served = get_json(dashboard.url + "api/stats")
    printed = cli_json("stats", "--db", str(db_path))
    assert list(served) == list(printed)
    # Ages and the reading time differ between the two reads; everything else is equal.
    assert without(served, "time", "oldest_queued_age_s", "queues") == \
        without(printed, "time", "oldest_queued_age_s", "queues")
    assert served["queues"].keys() == printed["queues"].keys()
    for name, entry in served["queues"].items():
        assert without(entry, "oldest_queued_age_s") == without(printed["queues"][name], "oldest_queued_age_s")
        assert abs(entry["oldest_queued_age_s"] - printed["queues"][name]["oldest_queued_age_s"]) < DEADLINE_S
    assert served["database"] == str(db_path)
    assert served["counts"] == {"queued": 2, "progress": 1, "completed": 1, "failed": 1, "cancelled": 1}
    assert served["live_supervisors"] == 1
    assert served["live_worker_processes"] == 1


@pytest.mark.parametrize("query,arguments", [
    ("", []),
    ("?status=failed", ["--status", "failed"]),
    ("?queue=reports", ["--queue", "reports"]),
    ("?task=sample_tasks.square&status=queued", ["--task", "sample_tasks.square", "--status", "queued"]),
    ("?limit=2", ["--limit", "2"]),
    ("?limit=0", ["--limit", "0"]),
    ("?queue=nowhere", ["--queue", "nowhere"]),
    ("?status=&queue=", []),
])
def test_tasks_equals_cli_list(db_path, tasks, start_dashboard, query, arguments):
    dashboard = start_dashboard()
    served = get_json(dashboard.url + "api/tasks" + query)
    assert served == cli_json("list", *arguments, "--db", str(db_path))


def test_task_equals_cli_show(db_path, tasks, start_dashboard):
    dashboard = start_dashboard()
    for name, task_id in tasks.items():
        served = get_json(f"{dashboard.url}api/tasks/{task_id}")
        assert served == cli_json("show", str(task_id), "--db", str(db_path)), name

    failed = get_json(f"{dashboard.url}api/tasks/{tasks['failed']}")
    assert failed["error"] == FAILURE
    assert failed["output"] == "item 0\n"
    assert failed["log"] == "stderr: oops\n"


def test_workers_equals_cli(db_path, tasks, db, start_dashboard):
    now = time.time()
    register_worker(db, 100, "supervisor", now)
    register_worker(db, 101, "worker", now)
    register_worker(db, os.getpid(), "worker", now, host_id=liveness.host_id(),
                    start_token=liveness.own_start_token())
    dashboard = start_dashboard()

    served = get_json(dashboard.url + "api/workers")
    printed = cli_json("workers", "--db", str(db_path))

    def stable(workers):
        return [{**without(worker, "heartbeat_age_s"),
                 "tasks": [without(task, "elapsed_s") for task in worker["tasks"]]} for worker in workers]

    assert stable(served) == stable(printed)
    assert [worker["pid"] for worker in served] == [100, 101, os.getpid()]
    # This test process owns the task in progress.
    assert served[2]["tasks"][0]["id"] == tasks["progress"]


# --- the dashboard's own documents -----------------------------------------------------------

def test_throughput_buckets(db_path, queue, db):
    # Whole seconds keep `now - finished` exact, so each task falls into a known bucket.
    now = float(int(time.time()))
    finished = {"completed": [now, now - 59, now - 60, now - 61, now + 5, now - 299, now - 300, now - 7200],
                "failed": [now - 30, now - 250]}
    for status, times in finished.items():
        for at in times:
            queue.enqueue("sample_tasks.noop")
            (complete if status == "completed" else fail)(db, claim_next(db), now=at)

    document = inspection.throughput(db, now=now, minutes=5)
    assert document["time"] == now
    assert document["minutes"] == 5
    assert document["bucket_s"] == 60
    buckets = document["buckets"]
    assert [(bucket["start"], bucket["end"]) for bucket in buckets] == [
        (now - 300, now - 240), (now - 240, now - 180), (now - 180, now - 120), (now - 120, now - 60), (now - 60, now)]
    # A bucket counts the tasks with start < finished <= end. A finish after `now` counts in the
    # last one, and one at `now - 300` (the start of the first bucket) or earlier is left out.
    assert [bucket["completed"] for bucket in buckets] == [1, 0, 0, 2, 3]
    assert [bucket["failed"] for bucket in buckets] == [1, 0, 0, 0, 1]


def test_throughput_endpoint(db_path, queue, db, start_dashboard):
    queue.enqueue("sample_tasks.noop")
    complete(db, claim_next(db), now=time.time() - 150)
    dashboard = start_dashboard()

    document = get_json(dashboard.url + "api/throughput?minutes=5")
    assert len(document["buckets"]) == 5
    assert document["buckets"][-1]["end"] == document["time"]
    assert [bucket["completed"] for bucket in document["buckets"]] == [0, 0, 1, 0, 0]
    assert len(get_json(dashboard.url + "api/throughput")["buckets"]) == 15


def test_overview_contains_page_data(db_path, tasks, queue, start_dashboard):
    queue.pause("reports")
    dashboard = start_dashboard()

    overview = get_json(dashboard.url + "api/overview?minutes=10")
    stats = cli_json("stats", "--db", str(db_path))
    assert set(stats) <= set(overview)
    assert overview["counts"] == stats["counts"]
    assert overview["paused_queues"] == ["reports"]
    assert overview["actions_allowed"] is False
    assert len(overview["throughput"]["buckets"]) == 10

    [running] = overview["running"]
    assert running["id"] == tasks["progress"]
    assert running["worker_pid"] == os.getpid()
    assert running["elapsed_s"] >= 0
    [failure] = overview["failures"]
    assert failure["id"] == tasks["failed"]
    assert failure["error"] == FAILURE


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method,path,status,message", [
    ("GET", "api/tasks/999", 404, "task 999 not found in "),
    ("GET", "api/tasks/abc", 400, "invalid task id 'abc': use a positive integer"),
    ("GET", "api/tasks/0", 400, "invalid task id '0': use a positive integer"),
    ("GET", "api/tasks?status=done", 400,
     "query parameter 'status': invalid status 'done': use one of queued, progress, completed, failed, cancelled"),
    ("GET", "api/tasks?limit=-1", 400, "query parameter 'limit': invalid count '-1': use an integer >= 0"),
    ("GET", "api/tasks?staus=failed", 400, "unknown query parameter 'staus': use status, queue, task, limit"),
    ("GET", "api/tasks?status=failed&status=queued", 400, "query parameter 'status' is given 2 times; give it once"),
    ("GET", "api/stats?verbose=1", 400, "unknown query parameter 'verbose': this endpoint takes none"),
    ("GET", "api/throughput?minutes=0", 400, "invalid number of minutes '0': use an integer from 1 to 1440"),
    ("GET", "api/throughput?minutes=x", 400, "invalid number of minutes 'x'"),
    ("GET", "api/nothing", 404, "not found: /api/nothing"),
    ("GET", "static/../server.py", 404, "not found: /static/../server.py"),
    ("GET", "static/missing.js", 404, "not found: /static/missing.js"),
    ("GET", "api/tasks/1/cancel", 405, "GET is not allowed on /api/tasks/1/cancel; use POST"),
    ("POST", "api/stats", 405, "POST is not allowed on /api/stats; use GET"),
    ("DELETE", "api/tasks/1", 501, "Unsupported method ('DELETE')"),
])
def test_errors_are_json(db_path, tasks, start_dashboard, method, path, status, message):
    dashboard = start_dashboard()
    response = request(dashboard.url + path, method=method)
    assert response.status == status
    assert message in response.json()["error"]
    assert b"Traceback" not in response.body


def test_method_not_allowed_names_allowed(db_path, tasks, start_dashboard):
    dashboard = start_dashboard()
    assert request(dashboard.url + "api/stats", method="POST").headers["Allow"] == "GET"


def test_unexpected_error_is_json_500(db_path, tasks, db, start_dashboard):
    dashboard = start_dashboard()
    # A table dropped under the running server makes its next read of it fail unexpectedly.
    db.write("drop", lambda d: d.execute("drop_workers", "DROP TABLE workers"))
    response = request(dashboard.url + "api/workers")
    assert response.status == 500
    assert response.json() == {"error": "internal server error; the dashboard's log on stderr has the details"}
    assert "GET /api/workers failed" in dashboard.log()
    assert "no such table: workers" in dashboard.log()
    # Other endpoints still work.
    assert request(dashboard.url + "api/tasks").status == 200


# --- actions and access control --------------------------------------------------------------

def test_read_only_by_default(db_path, tasks, queue, start_dashboard):
    dashboard = start_dashboard()
    assert dashboard.mode == "read-only"
    assert dashboard.token is None
    for action in ("cancel", "requeue"):
        task_id = tasks["queued"] if action == "cancel" else tasks["failed"]
        response = request(f"{dashboard.url}api/tasks/{task_id}/{action}", method="POST",
                           headers={"X-Litequeue-Token": TOKEN})
        assert response.status == 403
        assert response.json()["error"] == ("actions are disabled; start the dashboard with --allow-actions "
                                            "to cancel and requeue tasks")
    assert queue.get(tasks["queued"]).status == TaskStatus.QUEUED
    assert queue.get(tasks["failed"]).status == TaskStatus.FAILED
    assert get_json(dashboard.url + "api/overview")["actions_allowed"] is False


def test_actions_need_token(db_path, tasks, queue, start_dashboard):
    dashboard = start_dashboard("--allow-actions", env={"LITEQUEUE_DASHBOARD_TOKEN": TOKEN})
    cancel_url = f"{dashboard.url}api/tasks/{tasks['queued']}/cancel"

    for headers in ({}, {"X-Litequeue-Token": ""}, {"X-Litequeue-Token": TOKEN[:-1]},
                    {"X-Litequeue-Token": TOKEN + "x"}, {"X-Litequeue-Token": "é" * 32}):
        response = request(cancel_url, method="POST", headers=headers)
        assert response.status == 403, headers
        assert "missing or invalid X-Litequeue-Token header" in response.json()["error"]
    assert queue.get(tasks["queued"]).status == TaskStatus.QUEUED

    token = {"X-Litequeue-Token": TOKEN}
    response = request(cancel_url, method="POST", headers=token)
    assert response.status == 200, response.body
    assert response.json() == {"id": tasks["queued"], "previous_status": "queued", "status": "cancelled"}
    assert queue.get(tasks["queued"]).status == TaskStatus.CANCELLED

    response = request(f"{dashboard.url}api/tasks/{tasks['failed']}/requeue", method="POST", headers=token)
    assert response.status == 200, response.body
    assert response.json() == {"id": tasks["failed"], "status": "queued"}
    requeued = queue.get(tasks["failed"])
    assert requeued.status == TaskStatus.QUEUED
    assert "--- previous attempt, requeued at " in requeued.log

    assert get_json(dashboard.url + "api/overview")["actions_allowed"] is True
    assert "actions need the token from LITEQUEUE_DASHBOARD_TOKEN" not in dashboard.log()
    assert TOKEN not in dashboard.log()


@pytest.mark.parametrize("action,name,status,message", [
    ("cancel", "completed", 409, "is already completed and cannot be cancelled"),
    ("requeue", "queued", 409, "is queued and cannot be requeued"),
    ("cancel", None, 404, "task 999 not found in "),
    ("requeue", None, 404, "task 999 not found in "),
])
def test_action_errors(db_path, tasks, start_dashboard, action, name, status, message):
    dashboard = start_dashboard("--allow-actions", env={"LITEQUEUE_DASHBOARD_TOKEN": TOKEN})
    task_id = tasks[name] if name else 999
    response = request(f"{dashboard.url}api/tasks/{task_id}/{action}", method="POST",
                       headers={"X-Litequeue-Token": TOKEN})
    assert response.status == status
    assert message in response.json()["error"]


def test_generated_token_printed(db_path, tasks, queue, start_dashboard):
    dashboard = start_dashboard("--allow-actions")
    assert dashboard.mode == "actions allowed"
    assert dashboard.token is not None and len(dashboard.token) >= server.MIN_TOKEN_LENGTH
    response = request(f"{dashboard.url}api/tasks/{tasks['queued']}/cancel", method="POST",
                       headers={"X-Litequeue-Token": dashboard.token})
    assert response.status == 200, response.body
    assert queue.get(tasks["queued"]).status == TaskStatus.CANCELLED


def test_cross_origin_rejected(db_path, tasks, queue, start_dashboard):
    dashboard = start_dashboard("--allow-actions", env={"LITEQUEUE_DASHBOARD_TOKEN": TOKEN})
    own_origin = dashboard.url.rstrip("/")
    cancel_url = f"{dashboard.url}api/tasks/{tasks['queued']}/cancel"

    for origin in ("http://evil.example", "null", own_origin.replace("http://", "https://"), own_origin + "0"):
        response = request(cancel_url, method="POST", headers={"X-Litequeue-Token": TOKEN, "Origin": origin})
        assert response.status == 403, origin
        assert response.json()["error"] == (f"cross-origin request from {origin!r} rejected; the dashboard "
                                            "answers only its own page")
        assert request(dashboard.url + "api/stats", headers={"Origin": origin}).status == 403
    assert queue.get(tasks["queued"]).status == TaskStatus.QUEUED

    assert request(dashboard.url + "api/stats", headers={"Origin": own_origin}).status == 200
    response = request(cancel_url, method="POST", headers={"X-Litequeue-Token": TOKEN, "Origin": own_origin})
    assert response.status == 200, response.body
    assert queue.get(tasks["queued"]).status == TaskStatus.CANCELLED


def test_foreign_host_header_rejected(db_path, tasks, start_dashboard):
    # A page whose own name resolves to 127.0.0.1 (DNS rebinding) sends its name in Host.
    dashboard = start_dashboard()
    port = dashboard.url.rstrip("/").rsplit(":", 1)[1]
    response = request(dashboard.url + "api/stats", headers={"Host": f"rebind.example:{port}"})
    assert response.status == 403
    assert response.json()["error"] == (f"Host 'rebind.example:{port}' is not this dashboard's; open it at "
                                        f"http://127.0.0.1:{port}/")
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"LOCALHOST:{port}"):
        assert request(dashboard.url + "api/stats", headers={"Host": host}).status == 200, host
    assert request(dashboard.url + "api/stats", headers={"Host": "localhost:1"}).status == 403


@pytest.mark.parametrize("header,name,port", [
    ("localhost:8080", "localhost", "8080"), ("[::1]:8080", "[::1]", "8080"), ("[::1]", "[::1]", ""),
    ("Example.COM", "example.com", ""),
])
def test_split_host(header, name, port):
    assert server._split_host(header) == (name, port)


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("", False), ("192.168.1.10", False), ("example.com", False),
])
def test_is_loopback(host, loopback):
    assert server.is_loopback(host) is loopback


def test_non_loopback_host_warns(db_path, tasks, start_dashboard):
    dashboard = start_dashboard("--host", "0.0.0.0")
    assert dashboard.stop() == 0
    assert ("dashboard listens on 0.0.0.0 port " in dashboard.log()
            and "which is not a loopback address: anyone who can reach it can read every task's args, "
                "result, output and log" in dashboard.log())


def test_loopback_host_does_not_warn(db_path, tasks, start_dashboard):
    dashboard = start_dashboard()
    assert dashboard.url.startswith("http://127.0.0.1:")
    assert dashboard.stop() == 0
    assert "WARNING" not in dashboard.log()


# --- the page and its headers ----------------------------------------------------------------

def test_page_and_static_files(db_path, tasks, start_dashboard):
    dashboard = start_dashboard()
    page = request(dashboard.url)
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.body == (STATIC_DIR / "index.html").read_bytes()
    for name, content_type in [("app.js", "text/javascript; charset=utf-8"), ("style.css", "text/css; charset=utf-8"),
                               ("favicon.svg", "image/svg+xml")]:
        response = request(dashboard.url + "static/" + name)
        assert response.status == 200, name
        assert response.headers["Content-Type"] == content_type
        assert response.body == (STATIC_DIR / name).read_bytes()
    # Everything the page loads comes from this server.
    assert not re.search(rb"(src|href)=\"(https?:)?//", page.body)


@pytest.mark.parametrize("path", ["", "static/app.js", "api/stats", "api/tasks/999", "api/nothing"])
def test_security_headers(db_path, tasks, start_dashboard, path):
    dashboard = start_dashboard()
    response = request(dashboard.url + path)
    assert response.headers["Content-Security-Policy"] == "default-src 'self'; frame-ancestors 'none'"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


def test_script_in_args_stays_text(db_path, queue, start_dashboard):
    payload = {"name": "<script>alert('x')</script>", "html": '<img src=x onerror="alert(1)">'}
    task_id = queue.enqueue("sample_tasks.noop", payload)
    dashboard = start_dashboard()

    response = request(f"{dashboard.url}api/tasks/{task_id}")
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.json()["args"] == payload
    assert get_json(dashboard.url + "api/tasks")[0]["args"] == payload

    # The page puts data into the document only as text.
    script = (STATIC_DIR / "app.js").read_text()
    assert "textContent" in script
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


# --- start and stop --------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stops_on_signal(db_path, tasks, start_dashboard, signum):
    dashboard = start_dashboard()
    assert get_json(dashboard.url + "api/stats")["counts"]["failed"] == 1
    assert dashboard.stop(signum) == 0
    assert "dashboard stopped" in dashboard.log()
    assert "Traceback" not in dashboard.log()


def test_missing_database_not_created(tmp_path):
    missing = tmp_path / "missing.db"
    result = run_cli("dashboard", "--port", "0", "--db", str(missing))
    assert result.returncode == 3
    assert result.stderr == f"litequeue: error: database {missing} not found; pass --db or set LITEQUEUE_DB\n"
    assert not missing.exists()


@pytest.mark.parametrize("arguments,env,message", [
    (["--port", "70000"], {}, "argument --port: invalid port '70000': use an integer from 0 to 65535"),
    (["--port", "http"], {}, "argument --port: invalid port 'http'"),
    (["--allow-actions"], {"LITEQUEUE_DASHBOARD_TOKEN": "short"},
     "invalid LITEQUEUE_DASHBOARD_TOKEN: it has 5 characters and needs at least 16"),
    # 192.0.2.1 is reserved for documentation, so no machine has it and no DNS query is needed.
    (["--host", "192.0.2.1"], {}, "cannot listen on 192.0.2.1 port 0: "),
])
def test_bad_options_one_line(db_path, tasks, arguments, env, message):
    result = run_cli("dashboard", "--port", "0", "--db", str(db_path), *arguments, env=env)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr


def test_port_in_use_one_line(db_path, tasks, start_dashboard):
    dashboard = start_dashboard()
    port = dashboard.url.rstrip("/").rsplit(":", 1)[1]
    result = run_cli("dashboard", "--port", port, "--db", str(db_path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"litequeue: error: cannot listen on 127.0.0.1 port {port}: ")
    assert "choose another --host or --port (0 picks a free port)" in result.stderr


def test_help_has_examples():
    result = run_cli("dashboard", "--help")
    assert result.returncode == 0
    assert "examples:\n  litequeue dashboard" in result.stdout
    assert "--allow-actions" in result.stdout
