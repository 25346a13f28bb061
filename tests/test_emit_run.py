"""Runs of events handed to the trace writer at once (machine._run_sink, used by
emit_charged for direct reclaim's empty passes, kernel/vmscan_empty.py).  That must be a
pure speed-up: the same events, and at the end of each run the machine state the last of
its events saw when each pass was made by shrink_node and recorded on its own."""

from __future__ import annotations

import hashlib
import io
import random

import pytest
from test_fault_batch import _state, run_with_machine
from test_vmscan_empty import TWO_NODES

from oomactors import machine, sim
from oomactors.config import load_config, parse_config
from oomactors.events import EVENT_ID
from oomactors.kernel import vmscan
from oomactors.trace.stream import TraceWriter


def _observe(cfg, seed: int, scheduler_seed: int | None, at_once: bool, monkeypatch):
    """Every event; the state digest at each event delivered alone and at the last event of
    each run (None for the others); the events delivered in runs; the end of the run."""
    box: dict = {}
    events: list[tuple] = []
    states: list[str | None] = []
    in_runs = [0]

    def digest() -> str:
        return hashlib.sha256(repr(_state(box["m"])).encode()).hexdigest()

    def sink(rec: tuple) -> None:
        events.append(rec)
        states.append(digest() if "m" in box else None)

    def run(recs: list[tuple], count: int) -> None:
        whole, rest = divmod(count, len(recs))
        recs = recs * whole + recs[:rest]
        events.extend(recs)
        states.extend([None] * (len(recs) - 1))
        states.append(digest())
        in_runs[0] += len(recs)

    if at_once:
        sink.run = run  # type: ignore[attr-defined]
    else:  # every pass made by shrink_node
        monkeypatch.setattr(vmscan, "empty_passes", lambda *a: 0)
    # no checkers (the test suite's default ones read every event, so no run could go)
    r = run_with_machine(cfg, seed, scheduler_seed, sink, box, monkeypatch, env_checks=False)
    m = box["m"]
    end = (_state(m), sorted(m.vmstat.items()), r.end_jiffies, r.decisions, r.events, m.nevents)
    monkeypatch.undo()
    return events, states, in_runs[0], end


@pytest.mark.parametrize("source,seed,sched", [
    ("configs/parallel-oom.toml", 0, None),
    ("configs/parallel-oom.toml", 1, 5),
    ("two-nodes", 0, None),                # rounds of two passes, cut short mid-round
    ("two-nodes", 1, 5),
])
def test_runs_of_empty_passes_change_nothing(source, seed, sched, monkeypatch):
    cfg = parse_config(TWO_NODES, "<two nodes>") if source == "two-nodes" else load_config(source)
    events, states, in_runs, end = _observe(cfg, seed, sched, True, monkeypatch)
    events_1, states_1, none, end_1 = _observe(cfg, seed, sched, False, monkeypatch)
    assert none == 0
    assert in_runs > 1000  # most passes went in runs
    assert events == events_1
    assert end == end_1
    assert all(s is None or s == s1 for s, s1 in zip(states, states_1))
    assert sum(s is not None for s in states) > len(states) - in_runs  # one per run, at least


def test_a_run_goes_to_the_trace_writer_alone():
    writer = TraceWriter(io.BytesIO(), seed=0, hz=250, config={})
    assert machine._run_sink([writer.write]) == writer.write.run
    assert machine._run_sink([writer.write, lambda rec: None]) is None  # another sink sees each
    assert machine._run_sink([lambda rec: None]) is None


def test_no_run_while_a_checker_reads_the_event(monkeypatch):
    """A checker of node_reclaim sees each pass: the writer then gets them one by one."""
    cfg = load_config("configs/parallel-oom.toml")
    writer = TraceWriter(io.BytesIO(), seed=0, hz=cfg.kernel.hz, config={})
    runs, seen = [0], [0]
    real = writer.write.run

    def run(recs, count):
        runs[0] += 1
        real(recs, count)

    writer.write.run = run

    def check(m, rec):
        seen[0] += 1

    check.event_ids = frozenset({EVENT_ID["vmscan:mm_vmscan_node_reclaim"]})
    sim.run(cfg, seed=0, sinks=[writer.write], checkers=[check], env_checks=False)
    assert seen[0] > 1000 and runs[0] == 0
    seen[0] = 0
    check.event_ids = frozenset({EVENT_ID["sim:oom_kill"]})
    sim.run(cfg, seed=0, sinks=[writer.write], checkers=[check], env_checks=False)
    assert runs[0] > 100


@pytest.mark.parametrize("flush_bytes", [64, 1000, 64 * 1024])
def test_a_run_writes_the_bytes_of_one_write_each(flush_bytes):
    """TraceWriter's write.run: the same file as writing each record, across blocks, for
    one record repeated (packed once) and for several cycled, among single writes."""
    rng = random.Random(flush_bytes)
    one, runs = io.BytesIO(), io.BytesIO()
    w1 = TraceWriter(one, seed=0, hz=250, config={}, flush_bytes=flush_bytes)
    w2 = TraceWriter(runs, seed=0, hz=250, config={}, flush_bytes=flush_bytes)
    for t in range(3000):
        recs = [(t, 1, rng.randrange(64), 7, "x" * rng.randrange(40), rng.randrange(1 << 40))
                for _ in range(rng.choice((1, 1, 2, 3)))]
        count = rng.choice((0, 1, 2, 5, 13, 200, 600, 2500))
        if rng.random() < 0.3:
            w1.write(recs[0])
            w2.write(recs[0])
        for i in range(count):
            w1.write(recs[i % len(recs)])
        w2.write.run(recs, count)
    w1.close()
    w2.close()
    assert one.getvalue() == runs.getvalue()
    assert one.getvalue().count(b"x" * 39) > 1000
