"""The example programs, run as a user would run them."""

import subprocess
import sys

from conftest import DEADLINE_S, REPO_DIR, subprocess_env


def test_hash_files_example(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    for index in range(20):
        (tree / f"file{index}.txt").write_text("line\n" * index)
    result = subprocess.run(
        [sys.executable, str(REPO_DIR / "examples" / "hash_files.py"), "--root", str(tree), "--concurrency", "2"],
        capture_output=True, text=True, timeout=DEADLINE_S * 2, env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "files:   20 hashed, 0 failed" in result.stdout
    assert f"lines: {sum(range(20)):,}" in result.stdout
    assert "is failed: Task timed out after 1 seconds" in result.stdout
    assert "is failed: Worker subprocess exited with code -9" in result.stdout
    assert "worker exited with code 0" in result.stdout


def run_desktop(db_path, commands: str) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO_DIR / "examples" / "desktop_app.py"), "--db", str(db_path), "--console"],
        input=commands, capture_output=True, text=True, timeout=DEADLINE_S * 2, env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_desktop_example_resumes_pending_work(tmp_path):
    db_path = tmp_path / "desktop.db"
    first = run_desktop(db_path, "add quick 2\nadd long 8\nquit\n")
    assert "added task 1" in first
    assert "added task 2" in first
    second = run_desktop(db_path, "wait\nquit\n")
    assert "task(s) pending from last time" in second
    assert "quick            completed  quick: step 2/2" in second
    assert "long             completed  long: step 8/8" in second
