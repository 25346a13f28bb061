"""A sleep's sched_switch records go straight to a run's one sink when no checker reads
them (Sched.switch_sink, set by Machine.fast_switches): the same records, the same event
count and the same end as through Machine.emit_switch, also when the machine halts in the
middle -- a panic, Ctrl-C, an invariant that breaks."""

from __future__ import annotations

import pytest

from oomactors import interrupt, machine, sim
from oomactors.config import load_config
from oomactors.errors import OomactorsError
from oomactors.events import EVENT_ID

SWITCH = EVENT_ID["sched:sched_switch"]
STEP = EVENT_ID["sim:step"]


class Broke(OomactorsError):
    pass


def _run(path: str, monkeypatch, *, fast: bool, ctrl_c_at: int = 0, break_at: int = 0) -> tuple:
    """One run with a single collecting sink: its records, event count, end and whether the
    switch sink was in use.  ``ctrl_c_at``: Ctrl-C asked at that sched_switch record;
    ``break_at``: a checker of sim:step raises at that step."""
    cfg = load_config(path)
    used = []
    real = machine.Machine.fast_switches

    def fast_switches(m):
        real(m)
        used.append(m.sched.switch_sink is not None)

    monkeypatch.setattr(machine.Machine, "fast_switches", fast_switches if fast else lambda m: None)
    got: list = []
    switches = [0]

    def sink(rec):
        got.append(rec)
        if rec[1] == SWITCH:
            switches[0] += 1
            if switches[0] == ctrl_c_at:
                interrupt.request()

    steps = [0]

    def check(m, rec):
        steps[0] += 1
        if steps[0] == break_at:
            raise Broke("broke")

    check.event_ids = frozenset({STEP})
    try:
        r = sim.run(cfg, seed=1, sinks=[sink], checkers=[check], env_checks=False)
        end = (r.reason, r.events, r.end_jiffies)
    except Broke:
        end = ("broke",)
    finally:
        interrupt.clear()
        monkeypatch.undo()
    return got, end, used


def _both(path: str, monkeypatch, **kw) -> tuple:
    """The run with the switch sink, checked against the same run without it."""
    fast = _run(path, monkeypatch, fast=True, **kw)
    slow = _run(path, monkeypatch, fast=False, **kw)
    assert fast[:2] == slow[:2]
    return fast


CONFIGS = ["configs/quickstart.toml", "configs/parallel-oom.toml", "configs/unkillable-panic.toml",
           "configs/thrashing.toml"]


@pytest.mark.parametrize("path", CONFIGS)
def test_switch_sink_gives_the_same_run(path, monkeypatch):
    fast = _run(path, monkeypatch, fast=True)
    slow = _run(path, monkeypatch, fast=False)
    assert fast[2] == [True] and slow[2] == []
    assert fast[:2] == slow[:2]
    assert fast[1][1] == len(fast[0])  # every record counted, those the sink took directly too
    assert sum(rec[1] == SWITCH for rec in fast[0]) > 100


@pytest.mark.parametrize("k", [1, 2, 57, 3000])
def test_ctrl_c_at_a_switch(k, monkeypatch):
    """Ctrl-C asked at the k-th sched_switch: nothing but the end mark after it."""
    records, end, _ = _both("configs/quickstart.toml", monkeypatch, ctrl_c_at=k)
    assert end[0] == "interrupted"
    at = [i for i, rec in enumerate(records) if rec[1] == SWITCH][k - 1]
    assert [rec[1] for rec in records[at + 1:]] == [EVENT_ID["sim:run_end"]]


@pytest.mark.parametrize("k", [1, 3, 40])
def test_a_broken_invariant_ends_the_records(k, monkeypatch):
    """A checker that raises at the k-th sim:step: no sched_switch is recorded after it."""
    records, end, _ = _both("configs/parallel-oom.toml", monkeypatch, break_at=k)
    assert end == ("broke",)
    assert [i for i, rec in enumerate(records) if rec[1] == STEP][k - 1] == len(records) - 1


def test_a_panic_ends_the_records(monkeypatch):
    records, end, used = _both("configs/unkillable-panic.toml", monkeypatch)
    assert end[0] == "panic" and used == [True]
    panic = [i for i, rec in enumerate(records) if rec[1] == EVENT_ID["sim:panic"]][0]
    assert [rec[1] for rec in records[panic + 1:]] == [EVENT_ID["sim:run_end"]]
