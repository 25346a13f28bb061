"""sim.run raises the collector's young-generation threshold for the run and puts it back
exactly afterwards, however the run ends and however runs overlap (oomactors/run_gc.py);
garbage with reference cycles made during a run is still collected, a bounded amount at
a time."""

from __future__ import annotations

import gc
import threading

import pytest

from oomactors import sim
from oomactors.config import load_default
from oomactors.run_gc import RUN_THRESHOLD

MS = 250  # jiffies per second of the default config (hz = 250)


@pytest.fixture
def thresholds():
    """Odd thresholds of the caller's own, put back after the test whatever happens."""
    before = gc.get_threshold()
    gc.set_threshold(901, 11, 12)
    yield (901, 11, 12)
    gc.set_threshold(*before)


def _seen_threshold(seen: list):
    def sink(rec: tuple) -> None:
        if not seen:
            seen.append(gc.get_threshold())
    return sink


def test_raised_during_the_run_and_put_back(thresholds):
    seen: list = []
    sim.run(load_default(), duration=MS, sinks=[_seen_threshold(seen)])
    assert seen == [(RUN_THRESHOLD, 11, 12)]   # only the young generation's, raised
    assert gc.get_threshold() == thresholds


class Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_put_back_when_the_run_raises(thresholds, exc):
    def sink(rec: tuple) -> None:
        if rec[0] > 10:
            raise exc("stop")
    with pytest.raises(exc):
        sim.run(load_default(), duration=MS, sinks=[sink])
    assert gc.get_threshold() == thresholds


def test_callers_choices_stay():
    before = gc.get_threshold()
    try:
        for young in (0, RUN_THRESHOLD * 3):   # collection off; a larger threshold of theirs
            gc.set_threshold(young, 10, 10)
            seen: list = []
            sim.run(load_default(), duration=MS, sinks=[_seen_threshold(seen)])
            assert seen == [(young, 10, 10)]
            assert gc.get_threshold() == (young, 10, 10)
        gc.set_threshold(700, 10, 10)

        def sink(rec: tuple) -> None:   # someone sets thresholds of their own during the run
            if rec[0] > 10 and gc.get_threshold() != (555, 5, 5):
                gc.set_threshold(555, 5, 5)
                seen.append(rec)
        seen = []
        sim.run(load_default(), duration=MS, sinks=[sink])
        assert len(seen) == 1
        assert gc.get_threshold() == (555, 5, 5)   # theirs, not the ones from before the run
    finally:
        gc.set_threshold(*before)


def test_overlapping_runs_in_threads(thresholds):
    """The threshold is one per process: the first run in raises it, the last one out puts
    it back (here the first to start ends last)."""
    b_started, a_done = threading.Event(), threading.Event()
    seen_b: list = []

    def sink_b(rec: tuple) -> None:
        if not b_started.is_set():
            b_started.set()
            assert a_done.wait(60)
            seen_b.append(gc.get_threshold())   # A has ended: still raised for B

    errors: list = []

    def run_b() -> None:
        try:
            sim.run(load_default(), duration=MS, sinks=[sink_b])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
    tb = threading.Thread(target=run_b)
    tb.start()
    try:
        assert b_started.wait(60)
        seen_a: list = []
        sim.run(load_default(), duration=MS, sinks=[_seen_threshold(seen_a)])
        assert seen_a == [(RUN_THRESHOLD, 11, 12)]
        assert gc.get_threshold() == (RUN_THRESHOLD, 11, 12)   # B still runs
    finally:
        a_done.set()
        tb.join(120)
    assert not errors
    assert seen_b == [(RUN_THRESHOLD, 11, 12)]
    assert gc.get_threshold() == thresholds


class _Cycle:
    alive = 0
    peak = 0

    def __init__(self) -> None:
        self.me = self
        _Cycle.alive += 1
        _Cycle.peak = max(_Cycle.peak, _Cycle.alive)

    def __del__(self) -> None:
        _Cycle.alive -= 1


def test_cycles_made_during_a_run_are_collected():
    """A sink that leaves three objects in reference cycles per event: reference counts never
    free them, the collector must, and no more than RUN_THRESHOLD of them pile up."""
    _Cycle.alive = _Cycle.peak = 0
    def sink(rec: tuple) -> None:
        for _ in range(3):
            _Cycle()
    r = sim.run(load_default(), sinks=[sink])
    left = _Cycle.alive
    gc.collect()
    assert r.events > RUN_THRESHOLD   # three cycles each: garbage enough for collections
    assert _Cycle.peak <= RUN_THRESHOLD + 1
    assert left < RUN_THRESHOLD
    assert _Cycle.alive == 0
