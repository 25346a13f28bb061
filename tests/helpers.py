"""Small readers over a run's event records (see :mod:`oomactors.events`).

Records are ``(t, event_id, cpu, pid, *fields)``; these helpers decode them into dicts
``{"t", "event", "cpu", "pid", **fields}`` using the event table, so tests can name
fields instead of tuple positions.
"""

from __future__ import annotations

from typing import Any, Iterable

from oomactors.events import EVENT_ID, EVENTS


def decode(rec: tuple) -> dict[str, Any]:
    kind = EVENTS[rec[1]]
    ev: dict[str, Any] = {"t": rec[0], "event": kind.name, "cpu": rec[2], "pid": rec[3]}
    ev.update(zip(kind.fields, rec[4:]))
    return ev


def _records(result_or_records: Any) -> list[tuple]:
    return result_or_records.records if hasattr(result_or_records, "records") else result_or_records


def events(result: Any, *names: str) -> list[dict[str, Any]]:
    """Every event of the given kinds (all events if no name), decoded, in stream order.

    Each dict also carries ``"i"``, the event's index in the stream, so the order of
    events that share a jiffy can be compared."""
    ids = {EVENT_ID[n] for n in names}
    out = []
    for i, rec in enumerate(_records(result)):
        if not ids or rec[1] in ids:
            ev = decode(rec)
            ev["i"] = i
            out.append(ev)
    return out


def first(result: Any, name: str, **match: Any) -> dict[str, Any] | None:
    """The first event of kind ``name`` whose fields equal ``match``, or None."""
    for ev in events(result, name):
        if all(ev.get(k) == v for k, v in match.items()):
            return ev
    return None


def where(evs: Iterable[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [ev for ev in evs if all(ev.get(k) == v for k, v in match.items())]


def pids_of(result: Any, comm: str) -> list[int]:
    """Pids of the tasks (processes and threads) named ``comm``, from sim:task_new."""
    return [ev["pid"] for ev in events(result, "sim:task_new") if ev["comm"] == comm]


def comm_of(result: Any) -> dict[int, str]:
    """pid -> comm for every task the run created."""
    return {ev["pid"]: ev["comm"] for ev in events(result, "sim:task_new")}


def check_one_victim_at_a_time(result: Any) -> None:
    """The OOM killer's "one victim at a time" rule, read from the event stream alone.

    A victim is pending from its ``oom:mark_victim`` until its mm can no longer hold the
    killer back: the victim exited (``sched:sched_process_exit`` of that pid) or its mm
    got MMF_OOM_SKIP (``sim:mmf_oom_skip``, reported under the victim's pid by the reaper
    and by exit_mmap).  While one is pending, no other task may be marked.
    """
    pending: dict[int, int] = {}  # pid -> t marked
    release = {EVENT_ID["sched:sched_process_exit"], EVENT_ID["sim:mmf_oom_skip"]}
    mark = EVENT_ID["oom:mark_victim"]
    for rec in _records(result):
        eid, pid = rec[1], rec[3]
        if eid == mark:
            others = {p: t for p, t in pending.items() if p != pid}
            assert not others, (f"t={rec[0]}: pid {pid} marked as OOM victim while "
                                f"{sorted(others)} still pending")
            pending[pid] = rec[0]
        elif eid in release:
            pending.pop(pid, None)


def drive(coro) -> Any:
    """Run a kernel-model coroutine that never really suspends (its scheduling points do
    not preempt) to its end; returns its value."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the coroutine suspended")


def count_returns(monkeypatch, owner: Any, name: str) -> list[int]:
    """Wrap ``owner.name``, a function returning a count (a shortcut's passes or
    faults made), with ``monkeypatch``; the box returned adds up what it returned."""
    real = getattr(owner, name)
    made = [0]

    def counted(*a):
        k = real(*a)
        made[0] += k
        return k

    monkeypatch.setattr(owner, name, counted)
    return made
