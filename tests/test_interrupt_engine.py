"""The engine's side of Ctrl-C (oomactors.interrupt): a request ends the run where it is.

The CLI's SIGINT handler only calls ``interrupt.request()``; these tests call it from a sink
at a chosen event and check that the run ends right there: one more event, sim:run_end
with reason "interrupted", stamped at the current virtual time (not the configured
duration), and ``sim.run`` returns normally with that reason.
"""

from __future__ import annotations

import pytest

from oomactors import interrupt, sim
from oomactors.config import load_default, parse_config
from oomactors.events import EVENT_ID
from oomactors.units import to_jiffies

RUN_END = EVENT_ID["sim:run_end"]


@pytest.fixture(autouse=True)
def _clear_interrupt():
    interrupt.clear()
    yield
    interrupt.clear()


def _interrupted_at(cfg, backend: str, when) -> tuple[list[tuple], sim.RunResult, int]:
    """Run ``cfg`` and request an interrupt from a sink at the first event ``when`` accepts;
    returns every event seen, the result and the index of that event."""
    seen: list[tuple] = []
    at: list[int] = []

    def sink(rec: tuple) -> None:
        seen.append(rec)
        if not at and when(rec):
            at.append(len(seen) - 1)
            interrupt.request()

    result = sim.run(cfg, backend=backend, sinks=[sink])
    assert at, "the chosen event never happened"
    return seen, result, at[0]


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_an_interrupt_ends_the_run_at_that_event(backend):
    cfg = load_default()
    duration = to_jiffies(cfg.run.duration, cfg.kernel.hz)
    # the first OOM kill of the quickstart, well before the configured end
    seen, result, i = _interrupted_at(cfg, backend, lambda rec: rec[1] == EVENT_ID["sim:oom_kill"])
    t = seen[i][0]
    assert 0 < t < duration
    assert result.reason == "interrupted"
    assert result.end_jiffies == t
    # exactly one event after the request: sim:run_end, "interrupted", at the current time
    assert len(seen) == i + 2
    assert seen[-1][:2] == (t, RUN_END) and seen[-1][4] == "interrupted"
    assert result.events == len(seen)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_an_interrupt_while_time_jumps_stops_at_the_current_jiffy(backend):
    """A request made at an event that is the last of its jiffy: the clock must not jump to
    the next deadline (nor to the configured duration) before the run ends."""
    cfg = parse_config("""
[run]
duration = "600s"
[[tasks]]
name = "sleeper"
program = [ { op = "repeat", steps = [ { op = "sleep", time = "7s" }, { op = "compute", time = "1ms" } ] } ]
""")
    step = EVENT_ID["sched:sched_switch"]
    seen, result, i = _interrupted_at(cfg, backend, lambda rec: rec[1] == step and rec[0] >= 3 * 7 * 250)
    t = seen[i][0]
    assert result.reason == "interrupted" and result.end_jiffies == t < 600 * 250
    assert [r[1] for r in seen[i + 1:]] == [RUN_END] and seen[-1][0] == t


def test_an_interrupt_during_boot_ends_the_run_at_time_zero():
    text = "[machine]\ncpus = 4\nmemory = \"64GiB\"\n[[tasks]]\nname = \"t\"\ncount = 2000\n" \
           "program = [ { op = \"sleep\", time = \"1s\" } ]\n"
    seen, result, i = _interrupted_at(parse_config(text), "trio",
                                      lambda rec: rec[1] == EVENT_ID["sim:task_new"] and rec[3] == 100)
    assert result.reason == "interrupted" and result.end_jiffies == 0
    assert [r[1] for r in seen[i + 1:]] == [RUN_END]
    # boot stopped: far fewer than the 2,000 tasks were created
    assert len(result.machine.tasks) < 200


def test_a_request_made_before_the_run_gives_an_empty_interrupted_run():
    interrupt.request()
    seen: list[tuple] = []
    result = sim.run(load_default(), sinks=[seen.append])
    assert result.reason == "interrupted" and result.end_jiffies == 0
    assert [r[1] for r in seen] == [RUN_END]


def test_an_interrupted_strict_replay_is_not_a_divergence():
    """Half a run proves nothing about the choices it never reached: a strict replay cut
    short by Ctrl-C ends 'interrupted', not with a ScheduleDivergence."""
    from oomactors.schedule import ReplayScheduler, make_scheduler
    cfg = load_default()
    drawn = sim.run(cfg, scheduler=make_scheduler("random", seed=3, p=0.01))
    assert drawn.schedule  # choices all through the run
    last = max(c.index for c in drawn.schedule)
    seen: list[tuple] = []

    def sink(rec):
        seen.append(rec)
        if len(seen) == 50:
            interrupt.request()

    result = sim.run(cfg, sinks=[sink], scheduler=ReplayScheduler(drawn.schedule, strict=True))
    assert result.reason == "interrupted" and result.decisions < last
    assert [r[1] for r in seen[50:]] == [RUN_END]


def test_an_interrupt_inside_a_jiffy_that_wakes_thousands_stops_stepping_them():
    """3,000 tasks all wake at t=1 s: one batch of the stepper.  Ctrl-C at the first of them
    must not step the other ~3,000 through to their next sleep (at 100,000 tasks that took
    seconds, past the 2 s promise, and the command died by the watchdog with its trace
    unmarked); the run ends after the actor running now parks."""
    text = "[machine]\ncpus = 8\nmemory = \"16GiB\"\n[kernel]\npid_max = 65536\n[[tasks]]\n" \
           "name = \"w\"\ncount = 3000\nrss = \"64KiB\"\nprogram = [ { op = \"repeat\", steps = [ " \
           "{ op = \"sleep\", time = \"1s\" }, { op = \"alloc\", size = \"64KiB\" }, " \
           "{ op = \"free\", size = \"64KiB\" } ] } ]\n"
    cfg = parse_config(text)
    hz = cfg.kernel.hz
    at: list[tuple[int, int]] = []  # (the event's time, decisions taken so far)

    def check(m, rec) -> None:
        if not at and rec[0] >= hz and rec[3] > 0:  # the first task's event at t=1s
            at.append((rec[0], m.sched.decisions))
            interrupt.request()

    result = sim.run(cfg, checkers=[check], env_checks=False)
    assert at, "no task ran at t=1s"
    t, decisions = at[0]
    assert result.reason == "interrupted" and result.end_jiffies == t == hz
    # the woken tasks took one sleep decision each before: now at most a few, not ~3,000
    assert result.machine.sched.decisions - decisions < 10
