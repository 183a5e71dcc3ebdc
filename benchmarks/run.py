"""Run every litequeue benchmark, its raw SQLite baselines and huey, and write the report.

    python benchmarks/run.py            # full run, 3 interleaved rounds (12 min in the recorded run, 2 cores)
    python benchmarks/run.py --quick    # smoke run on tiny counts

Each round runs every measurement once, in the same order, so that drift on the machine hits
all of them alike. Each measurement gets a fresh database file in a temporary directory. The
report gives the median and the min-max spread over the rounds, and the ratios against the
targets, each ratio taken within one round.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCHMARKS_DIR.parent
# The worker processes import litequeue from this checkout too (common.worker_env).
sys.path[:0] = [str(BENCHMARKS_DIR), str(REPO_DIR)]

import baselines  # noqa: E402
import huey_bench  # noqa: E402
import litequeue_bench  # noqa: E402
import report  # noqa: E402
from common import proc_available  # noqa: E402

DEFAULT_OUTPUT = REPO_DIR / "docs" / "benchmarks.md"


@dataclasses.dataclass(frozen=True)
class Counts:
    """How much work each measurement does."""

    rounds: int
    inserts: int
    batch_rows: int
    batch_size: int
    drain_tasks: int
    finished_rows: int
    pickups: int
    pickup_spacing_s: tuple
    idle_cpu_s: float
    long_idle_s: float
    wal_commits: int


FULL_COUNTS = Counts(rounds=3, inserts=5_000, batch_rows=100_000, batch_size=1_000, drain_tasks=20_000,
                     finished_rows=1_000_000, pickups=100, pickup_spacing_s=(0.05, 0.75),
                     idle_cpu_s=10.0, long_idle_s=60.0, wal_commits=500)
QUICK_COUNTS = Counts(rounds=1, inserts=200, batch_rows=2_000, batch_size=1_000, drain_tasks=300,
                      finished_rows=20_000, pickups=20, pickup_spacing_s=(0.01, 0.05),
                      idle_cpu_s=1.0, long_idle_s=3.0, wal_commits=100)


@dataclasses.dataclass(frozen=True)
class Step:
    """One measurement: ``run(path, counts, round_index)`` returns {figure key: value}."""

    name: str
    run: Callable[[Path, Counts, int], Dict[str, float]]
    needs_huey: bool = False


def _raw_steps() -> List[Step]:
    steps = []
    for level in ("FULL", "NORMAL"):
        steps += [
            Step(f"raw single inserts {level}", lambda path, c, r, level=level: {
                f"raw.insert.{level}": baselines.measure_single_inserts(path, level, c.inserts)}),
            Step(f"raw batched inserts {level}", lambda path, c, r, level=level: {
                f"raw.batch.{level}": baselines.measure_batched_inserts(path, level, c.batch_rows, c.batch_size)}),
            Step(f"raw claim and completion {level}", lambda path, c, r, level=level: {
                f"raw.claim.{level}": baselines.measure_claim_and_complete(path, level, c.drain_tasks)}),
            Step(f"litequeue-schema single inserts {level}", lambda path, c, r, level=level: {
                f"schema.insert.{level}": baselines.measure_schema_single_inserts(path, level, c.inserts)}),
            Step(f"litequeue-schema completion and claim {level}", lambda path, c, r, level=level: {
                f"schema.claim.{level}": baselines.measure_schema_finish_and_claim(path, level, c.drain_tasks)}),
        ]
    # Frames are counted at FULL only, the level at which every commit waits for an fsync of the WAL.
    steps.append(Step("WAL frames per commit FULL", lambda path, c, r: _prefixed(
        "wal.{}", baselines.measure_wal_frames(path, "FULL", c.wal_commits))))
    return steps


def _litequeue_steps() -> List[Step]:
    steps = []
    for level in ("FULL", "NORMAL"):
        steps += [
            Step(f"litequeue enqueue {level}", lambda path, c, r, level=level: {
                f"lq.enqueue.{level}": litequeue_bench.measure_enqueue(path, level, c.inserts)}),
            Step(f"litequeue enqueue_many {level}", lambda path, c, r, level=level: {
                f"lq.enqueue_many.{level}": litequeue_bench.measure_enqueue_many(
                    path, level, c.batch_rows, c.batch_size)}),
            Step(f"litequeue drain {level}", lambda path, c, r, level=level: _prefixed(
                f"lq.{{}}.{level}", litequeue_bench.measure_drain(path, level, c.drain_tasks))),
        ]
    steps.append(Step("litequeue drain NORMAL with finished tasks", lambda path, c, r: _prefixed(
        "lq.{}_large.NORMAL", litequeue_bench.measure_drain_large_table(
            path, "NORMAL", c.drain_tasks, c.finished_rows))))
    steps.append(Step("litequeue pickup and idle FULL", lambda path, c, r: _prefixed(
        "lq.{}", litequeue_bench.measure_idle_and_pickup(
            path, "FULL", c.pickups, c.pickup_spacing_s, c.idle_cpu_s, c.long_idle_s, seed=r))))
    return steps


def _huey_steps() -> List[Step]:
    steps = []
    for fsync in ("default", "off"):
        steps += [
            Step(f"huey enqueue fsync={fsync}", lambda path, c, r, fsync=fsync: {
                f"huey.enqueue.{fsync}": huey_bench.measure_enqueue(path, fsync, c.inserts)}, True),
            Step(f"huey drain fsync={fsync}", lambda path, c, r, fsync=fsync: {
                f"huey.drain.{fsync}": huey_bench.measure_drain(path, fsync, c.drain_tasks)}, True),
        ]
    steps.append(Step("huey pickup fsync=default", lambda path, c, r: _prefixed(
        "huey.{}", huey_bench.measure_pickup_series(path, "default", c.pickups, c.pickup_spacing_s, seed=r)), True))
    return steps


def _prefixed(pattern: str, figures: Dict[str, float]) -> Dict[str, float]:
    return {pattern.format(name): value for name, value in figures.items()}


def build_steps(include_huey: bool) -> List[Step]:
    """Return the measurements of one round, each baseline next to the figures it is compared with."""
    raw = {step.name: step for step in _raw_steps()}
    lq = {step.name: step for step in _litequeue_steps()}
    hy = {step.name: step for step in _huey_steps()}
    order = [
        raw["raw single inserts FULL"], raw["litequeue-schema single inserts FULL"],
        lq["litequeue enqueue FULL"], hy["huey enqueue fsync=default"],
        raw["raw single inserts NORMAL"], raw["litequeue-schema single inserts NORMAL"],
        lq["litequeue enqueue NORMAL"], hy["huey enqueue fsync=off"],
        raw["raw batched inserts FULL"], lq["litequeue enqueue_many FULL"],
        raw["raw batched inserts NORMAL"], lq["litequeue enqueue_many NORMAL"],
        raw["raw claim and completion FULL"], raw["litequeue-schema completion and claim FULL"],
        lq["litequeue drain FULL"], hy["huey drain fsync=default"],
        raw["raw claim and completion NORMAL"], raw["litequeue-schema completion and claim NORMAL"],
        lq["litequeue drain NORMAL"], hy["huey drain fsync=off"],
        lq["litequeue drain NORMAL with finished tasks"],
        raw["WAL frames per commit FULL"],
        lq["litequeue pickup and idle FULL"], hy["huey pickup fsync=default"],
    ]
    return [step for step in order if include_huey or not step.needs_huey]


def run_rounds(steps: List[Step], counts: Counts, workdir: Path) -> List[Dict[str, float]]:
    """Run every step once per round and return one {figure key: value} dict per round."""
    rounds = []
    for index in range(counts.rounds):
        figures: Dict[str, float] = {}
        for step in steps:
            step_dir = Path(tempfile.mkdtemp(prefix="step-", dir=workdir))
            started = time.monotonic()
            try:
                values = step.run(step_dir / "bench.db", counts, index)
            finally:
                shutil.rmtree(step_dir, ignore_errors=True)
            figures.update(values)
            summary = ", ".join(f"{key} {value:,.4g}" for key, value in values.items())
            print(f"round {index + 1}/{counts.rounds}: {step.name}: {summary} "
                  f"({time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True)
        rounds.append(figures)
    return rounds


def resolve_counts(args: argparse.Namespace) -> Counts:
    base = QUICK_COUNTS if args.quick else FULL_COUNTS
    overrides = {field.name: getattr(args, field.name) for field in dataclasses.fields(Counts)
                 if getattr(args, field.name, None) is not None}
    if "pickup_spacing_s" in overrides:
        overrides["pickup_spacing_s"] = tuple(overrides["pickup_spacing_s"])
    return dataclasses.replace(base, **overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Measure litequeue against raw SQLite baselines and huey, and write a Markdown report.",
        epilog="Counts default to the full run; --quick lowers them for a smoke run, and any "
               "option given explicitly overrides either.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round on tiny counts")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"report file to write (default: {DEFAULT_OUTPUT.relative_to(REPO_DIR)})")
    parser.add_argument("--skip-huey", action="store_true", help="do not measure huey even if it is installed")
    parser.add_argument("--rounds", type=int, metavar="N", help="interleaved rounds (full: 3)")
    parser.add_argument("--inserts", type=int, metavar="N",
                        help="tasks per single-insert and enqueue measurement (full: 5000)")
    parser.add_argument("--batch-rows", type=int, metavar="N",
                        help="rows per batched-insert and enqueue_many measurement (full: 100000)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="rows per batch (full: 1000)")
    parser.add_argument("--drain-tasks", type=int, metavar="N",
                        help="tasks per drain and raw claim measurement (full: 20000)")
    parser.add_argument("--finished-rows", type=int, metavar="N",
                        help="finished tasks already in the table for the large-table drain (full: 1000000)")
    parser.add_argument("--pickups", type=int, metavar="N", help="pickup latency samples per round (full: 100)")
    parser.add_argument("--pickup-spacing-s", type=float, nargs=2, metavar=("MIN", "MAX"),
                        help="random pause before each pickup sample, in seconds (full: 0.05 0.75)")
    parser.add_argument("--idle-cpu-s", type=float, metavar="S",
                        help="seconds over which idle CPU is measured (full: 10)")
    parser.add_argument("--long-idle-s", type=float, metavar="S",
                        help="idle seconds before the last pickup sample of a round (full: 60)")
    parser.add_argument("--wal-commits", type=int, metavar="N",
                        help="commits per statement when counting WAL frames per commit (full: 500)")
    return parser


def validate(counts: Counts) -> Optional[str]:
    for name in ("rounds", "inserts", "batch_rows", "batch_size", "drain_tasks", "pickups", "wal_commits"):
        if getattr(counts, name) < 1:
            return f"invalid --{name.replace('_', '-')} {getattr(counts, name)}: use an integer >= 1"
    if counts.finished_rows < 0:
        return f"invalid --finished-rows {counts.finished_rows}: use an integer >= 0"
    low, high = counts.pickup_spacing_s
    if not 0 <= low <= high:
        return f"invalid --pickup-spacing-s {low:g} {high:g}: use 0 <= MIN <= MAX"
    if counts.idle_cpu_s <= 0 or counts.long_idle_s < counts.idle_cpu_s:
        return (f"invalid --idle-cpu-s {counts.idle_cpu_s:g} / --long-idle-s {counts.long_idle_s:g}: "
                "use idle-cpu-s > 0 and long-idle-s >= idle-cpu-s")
    return None


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    counts = resolve_counts(args)
    problem = validate(counts)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if not proc_available():
        print("error: the benchmarks read CPU time and memory from /proc, so they run on Linux only",
              file=sys.stderr)
        return 2

    huey_note = "huey skipped: --skip-huey was given" if args.skip_huey else huey_bench.huey_unavailable()
    if huey_note:
        print(f"note: {huey_note}", file=sys.stderr)
    steps = build_steps(include_huey=huey_note is None)

    command = " ".join(shlex.quote(part) for part in [sys.executable, *sys.argv])
    started = time.time()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="litequeue-bench-") as workdir:
        rounds = run_rounds(steps, counts, Path(workdir))
        text = report.render(report.RunInfo(
            counts=dataclasses.asdict(counts), command=command, started=started,
            duration_s=time.time() - started, load_before=load_before, load_after=os.getloadavg(),
            workdir_parent=str(Path(workdir).parent), huey_note=huey_note,
            huey_version=None if huey_note else huey_bench.huey_version(),
            huey_synchronous=None if huey_note else {
                fsync: huey_bench.synchronous_setting(Path(workdir) / f"pragma-{fsync}.db", fsync)
                for fsync in ("default", "off")},
        ), rounds)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"report written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
