"""Smoke test of the benchmark runner: a --quick run completes and writes its report.

Timings are never asserted: they depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
RUNNER = REPO_DIR / "benchmarks" / "run.py"
# The quick run takes about 10 s on 2 cores; the margin covers a loaded machine.
RUN_TIMEOUT_S = 120


def hide_huey(directory: Path) -> str:
    """Create a package that shadows huey and fails to import, and return its parent folder.

    The runner must work without huey installed. Shadowing it makes this test take that path
    even in an environment that has huey.
    """
    package = directory / "huey"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise ImportError("huey hidden by test_benchmarks")\n')
    return str(directory)


def test_quick_run_writes_report(tmp_path: Path):
    output = tmp_path / "report" / "benchmarks.md"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [hide_huey(tmp_path / "shadow"), env.get("PYTHONPATH")]))
    env["TMPDIR"] = str(tmp_path)

    result = subprocess.run(
        [sys.executable, str(RUNNER), "--quick", "--output", str(output)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )

    assert result.returncode == 0, result.stderr
    assert output.exists()
    text = output.read_text()
    assert "## Targets" in text
    assert "## Figures" in text
    assert "## Why some targets are missed" in text
    assert "WAL frames per commit, litequeue's schema" in text
    assert "huey is not importable" in text
    assert "--quick" in text
