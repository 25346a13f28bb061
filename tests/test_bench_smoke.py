"""The benchmarks' own code, run at toy sizes: bench/ prints the project's speed and memory
figures, and nothing else runs it, so a change to what it drives (sim._drive, Sched, the
allocator) could break a figure unnoticed until the next `make bench`.  These tests only
check that each figure's code runs and measures what it says; they time nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(autouse=True)
def bench_path():
    sys.path.insert(0, str(BENCH))
    yield
    sys.path.remove(str(BENCH))


def test_virtual_sleeps_count_every_actor_each_jiffy():
    import vsleep
    r = vsleep.virtual_sleeps(3, 40)
    assert r["reason"] == "duration"
    assert 3 * 40 <= r["sleeps"] <= 3 * 41
    assert vsleep.bare_checkpoints(100)["per_s"] > 0


def test_fast_path_never_enters_the_slow_path():
    import fastpath
    for nr in (1, 32):
        r = fastpath.bench(500, nr)
        assert r["failed"] == 0 and r["slowpath"] == 0 and r["pages"] == 500 * nr


def test_pressure_workload_runs_to_its_duration_with_a_trace():
    import pressure
    r = pressure.bench(2)
    assert r["reason"] == "duration" and r["sim_s"] == 2.0
    assert r["tasks"] >= 1000 and r["cpus"] == 64 and r["events"] > 1000


def test_peak_rss_figures_are_the_measured_process_own():
    # ru_maxrss would report at least this process's size for any child it starts (Linux
    # keeps the pre-exec peak); the benches read the child's own high-water mark instead
    import memory
    import observe
    ballast = b"x" * 200_000_000  # this process is now over 200 MB resident
    big, _ = observe._child([sys.executable, "-c", "x = b'x' * 150_000_000"])
    small, _ = observe._child([sys.executable, "-c", "pass"])
    del ballast
    assert 150 <= big < 200 and small < 100
    r = memory.measure("pressure", 2)
    assert r["reason"] == "duration" and 0 < r["max_rss_mib"] < 150
