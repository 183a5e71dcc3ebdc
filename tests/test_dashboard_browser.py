"""The dashboard page in headless Chromium, driven through the DevTools protocol, against a
real ``litequeue dashboard`` process and a real database. Chromium is Debian's ``chromium``
package (or $LITEQUEUE_TEST_CHROMIUM); without it these tests are skipped.

LITEQUEUE_UPDATE_SCREENSHOT=1 makes test_screenshot save its image as docs/dashboard.png."""

import json
import os
import time

from conftest import DEADLINE_S, REPO_DIR, wait_for
from dashboard_support import browser, start_dashboard  # noqa: F401 (fixtures)
from litequeue import TaskStatus, storage
from litequeue.storage import RetryPolicy
from test_cli_ops import FAILURE, claim_next, complete, tasks  # noqa: F401 (tasks is a fixture)

TOKEN = "a-test-token-that-is-long-enough"
SCREENSHOT_PATH = REPO_DIR / "docs" / "dashboard.png"


def text_of(element_id: str) -> str:
    """A JavaScript expression for the text of the element with ``element_id``."""
    return f"document.getElementById({json.dumps(element_id)}).textContent"


def rows_of(table_id: str) -> str:
    """A JavaScript expression for the rows of a table's body, each a list of cell texts."""
    return (f"[...document.querySelectorAll('#{table_id} tbody tr')]"
            ".map((row) => [...row.cells].map((cell) => cell.textContent))")


def counts_are(expected: dict) -> str:
    """A JavaScript expression that is true once the count cards show ``expected``."""
    checks = [f"{text_of('count-' + status)} === {json.dumps(str(count))}" for status, count in expected.items()]
    return " && ".join(checks)


def test_page_shows_counts_and_failure(db_path, tasks, start_dashboard, browser):
    dashboard = start_dashboard()
    browser.navigate(dashboard.url)

    browser.wait_for_page(counts_are({"queued": 2, "progress": 1, "completed": 1, "failed": 1, "cancelled": 1}),
                          "the counts of every status")
    assert browser.evaluate(text_of("database")) == str(db_path)
    assert browser.evaluate(text_of("connection")).startswith("live · ")

    failures = browser.evaluate(rows_of("failures"))
    assert len(failures) == 1
    assert failures[0][:3] == [str(tasks["failed"]), "reports", "sample_tasks.fail"]
    assert failures[0][4] == "ValueError('boom')"

    running = browser.evaluate(rows_of("running"))
    assert running[0][:3] == [str(tasks["progress"]), "default", "sample_tasks.sleep"]
    assert running[0][5].startswith(f"PID {os.getpid()} on ")

    queues = browser.evaluate(rows_of("queues"))
    assert [row[:6] for row in queues] == [["default", "1", "1", "1", "0", "1"], ["reports", "1", "0", "0", "1", "0"]]
    assert browser.evaluate("document.getElementById('paused').hidden") is True
    assert browser.evaluate(rows_of("workers")) == [["no live supervisor or worker process"]]
    assert browser.page_errors() == []


def test_counts_follow_completed_task(db_path, tasks, queue, start_dashboard, start_supervisor, browser):
    dashboard = start_dashboard()
    browser.navigate(dashboard.url)
    browser.wait_for_page(counts_are({"queued": 2, "completed": 1}), "the first counts")

    # The supervisor serves only the default queue: it runs the queued square there and then
    # the new task, and leaves the task queued in reports alone.
    supervisor = start_supervisor("--concurrency", "1")
    added = queue.enqueue("sample_tasks.add", {"a": 2, "b": 3})
    assert queue.wait(added, timeout_s=DEADLINE_S).status == TaskStatus.COMPLETED

    browser.wait_for_page(counts_are({"queued": 1, "progress": 1, "completed": 3, "failed": 1, "cancelled": 1}),
                          "the counts after the supervisor completed two tasks")
    browser.wait_for_page(f"{rows_of('workers')}.some((row) => row[1] === {json.dumps(str(supervisor.pid))})",
                          "the supervisor in the workers table")
    recent = browser.evaluate(rows_of("tasks"))
    assert recent[0][:4] == [str(added), "default", "sample_tasks.add", "completed"]
    assert "completed" in browser.evaluate(text_of("throughput-summary"))
    assert browser.page_errors() == []


def test_task_detail_shows_every_field(db_path, tasks, queue, start_dashboard, browser):
    payload = {"name": "<script>window.injected = 1</script>", "html": '<img src=x onerror="window.injected = 2">'}
    marked = queue.enqueue("sample_tasks.noop", payload)
    dashboard = start_dashboard()

    browser.navigate(f"{dashboard.url}#/tasks/{tasks['failed']}")
    browser.wait_for_page(f"{text_of('detail-error')} === {json.dumps(FAILURE)}", "the failed task's error")
    assert browser.evaluate(text_of("detail-output")) == "item 0\n"
    assert browser.evaluate(text_of("detail-log")) == "stderr: oops\n"
    assert browser.evaluate("document.getElementById('overview').hidden") is True
    fields = browser.evaluate("[...document.querySelectorAll('#fields dt')].map((node) => node.textContent)")
    assert fields == ["id", "task", "queue", "status", "args", "priority", "attempts", "max_retries", "timeout_s",
                      "created", "run_at", "started", "finished", "modified", "worker_pid", "worker_host",
                      "result", "unique_key", "waiting_on"]
    # Read-only: no action buttons.
    assert browser.evaluate("document.getElementById('actions').hidden") is True

    # Markup in args is shown as text: nothing is parsed into elements or run.
    browser.evaluate(f"location.hash = '#/tasks/{marked}'")
    browser.wait_for_page(f"{text_of('detail-title')}.includes('sample_tasks.noop')", "the task with markup in its args")
    args_text = browser.evaluate(
        "[...document.querySelectorAll('#fields dt')].find((node) => node.textContent === 'args')"
        ".nextElementSibling.textContent")
    assert json.loads(args_text) == payload
    assert browser.evaluate("document.querySelectorAll('#detail script, #detail img').length") == 0
    assert browser.evaluate("window.injected === undefined") is True

    # An unknown id shows the server's message; the overview link goes back.
    browser.evaluate("location.hash = '#/tasks/999'")
    browser.wait_for_page(f"{text_of('detail-message')}.includes('task 999 not found')", "the not-found message")
    browser.evaluate("location.hash = '#/'")
    browser.wait_for_page("!document.getElementById('overview').hidden", "the overview again")
    # Chromium reports the 404 of the unknown id as an error; nothing else may fail.
    assert [error for error in browser.page_errors() if "status of 404 (Not Found)" not in error] == []


def test_actions_from_page(db_path, tasks, queue, start_dashboard, browser):
    dashboard = start_dashboard("--allow-actions", env={"LITEQUEUE_DASHBOARD_TOKEN": TOKEN})
    browser.navigate(f"{dashboard.url}#token={TOKEN}")
    # The page keeps the token for this tab and takes it out of the address.
    browser.wait_for_page("location.hash === '#/'", "the token to leave the address")
    assert browser.evaluate("sessionStorage.getItem('litequeue-dashboard-token')") == TOKEN

    browser.evaluate(f"location.hash = '#/tasks/{tasks['queued']}'")
    browser.wait_for_page("!document.getElementById('actions').hidden && "
                          "!document.getElementById('cancel-button').disabled", "an enabled Cancel button")
    assert browser.evaluate("document.getElementById('requeue-button').disabled") is True
    assert browser.evaluate("document.getElementById('token-field').hidden") is True

    browser.evaluate("document.getElementById('cancel-button').click()")
    wait_for(lambda: queue.get(tasks["queued"]).status == TaskStatus.CANCELLED, message="the task to be cancelled")
    browser.wait_for_page(f"{text_of('action-result')} === 'task {tasks['queued']} is now cancelled'",
                          "the action's result")
    browser.wait_for_page("!document.getElementById('requeue-button').disabled", "an enabled Requeue button")

    browser.evaluate("document.getElementById('requeue-button').click()")
    wait_for(lambda: queue.get(tasks["queued"]).status == TaskStatus.QUEUED, message="the task to be requeued")
    assert browser.page_errors() == []


# --- the screenshot in the docs --------------------------------------------------------------

def finish(db, queue_name: str, at: float, error: str = None) -> None:
    """Claim the task just enqueued in ``queue_name`` and record it as finished at ``at``:
    failed with ``error`` when given, else completed."""
    claim = claim_next(db, queue_name)
    if error is None:
        complete(db, claim, now=at)
        return
    status = db.write("fail", lambda d: storage.fail_or_retry_in(d, claim, error, "", at, RetryPolicy(), 0))
    assert status == TaskStatus.FAILED


IMAGE_ERROR = ("OSError(\"cannot identify image file 'uploads/4711.png'\")\n"
               "Traceback (most recent call last):\n"
               '  File "myapp/tasks.py", line 21, in resize_image\n'
               "OSError: cannot identify image file 'uploads/4711.png'\n")
EMAIL_ERROR = ("ConnectionError('SMTP server refused ops@example.com')\n"
               "Traceback (most recent call last):\n"
               '  File "myapp/tasks.py", line 10, in send_email\n'
               "ConnectionError: SMTP server refused ops@example.com\n")


def fill_demo_queue(queue, db, now: float) -> None:
    """Store a quarter of an hour of history in three queues: completed and failed tasks,
    queued ones, a cancelled one and a paused queue."""
    per_minute = [3, 2, 4, 1, 3, 5, 2, 3, 2, 4, 3, 1, 2, 3, 2]
    for minutes_ago, count in enumerate(per_minute):
        for index in range(count):
            queue.enqueue("myapp.tasks.resize_image", {"path": f"uploads/{minutes_ago}-{index}.png", "width": 640},
                          queue="images")
            finish(db, "images", now - minutes_ago * 60 - 5 - index * 9)
        if minutes_ago % 4 == 1:
            queue.enqueue("myapp.tasks.send_email", {"to": "ops@example.com"}, queue="emails")
            finish(db, "emails", now - minutes_ago * 60 - 20, EMAIL_ERROR)
        if minutes_ago % 3 == 0:
            queue.enqueue("myapp.tasks.send_email", {"to": "sales@example.com"}, queue="emails")
            finish(db, "emails", now - minutes_ago * 60 - 40)
    queue.enqueue("myapp.tasks.resize_image", {"path": "uploads/4711.png", "width": 640}, queue="images")
    finish(db, "images", now - 70, IMAGE_ERROR)

    for index in range(3):
        queue.enqueue("myapp.tasks.resize_image", {"path": f"uploads/new-{index}.png", "width": 640}, queue="images")
    for address in ("ops@example.com", "billing@example.com"):
        queue.enqueue("myapp.tasks.send_email", {"to": address}, queue="emails")
    queue.pause("emails")
    queue.cancel(queue.enqueue("myapp.tasks.build_report", {"month": "2026-11"}, queue="reports"))


def test_screenshot(db_path, queue, db, start_dashboard, start_supervisor, browser, tmp_path):
    fill_demo_queue(queue, db, time.time())
    supervisor = start_supervisor("--concurrency", "2")
    for seconds in (300, 240):
        queue.enqueue("sample_tasks.sleep", {"seconds": seconds})
    dashboard = start_dashboard()

    browser.navigate(dashboard.url)
    browser.wait_for_page(f"{rows_of('running')}.length === 2 && {rows_of('running')}[0].length === 6",
                          "two running tasks")
    browser.wait_for_page(f"{rows_of('workers')}.length === 3", "the supervisor and its two worker processes")
    assert "emails" in browser.evaluate(text_of("paused"))
    assert browser.evaluate(rows_of("failures"))[0][4] == "OSError(\"cannot identify image file 'uploads/4711.png'\")"
    assert supervisor.process.poll() is None
    # The chart has bars: pixels in the completed color, a green.
    green_pixels = browser.evaluate("""(() => {
        const canvas = document.getElementById('chart');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let count = 0;
        for (let index = 0; index < data.length; index += 4) {
          if (data[index + 3] > 0 && data[index + 1] > data[index] + 60) {
            count += 1;
          }
        }
        return count;
      })()""")
    assert green_pixels > 1000

    image = browser.screenshot()
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "dashboard.png").write_bytes(image)
    if os.environ.get("LITEQUEUE_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT_PATH.write_bytes(image)
    assert browser.page_errors() == []
