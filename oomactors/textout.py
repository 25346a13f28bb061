"""Text for people: the run summary, and rich tables that read well off a terminal too.

On a terminal rich fits tables to the window.  Piped into a file or another program the
output is data: no line is wrapped at 80 columns mid-sentence and no line carries trailing
padding (rich pads a table title to the table's width), so :func:`show` renders off a
terminal at the table's natural width and strips each line's end.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Iterator

import click

SIGNALS = {9: "SIGKILL", 15: "SIGTERM"}


def show(*renderables: Any) -> None:
    """Print rich renderables: fitted to a terminal, or unwrapped and unpadded otherwise."""
    with text_console() as console:
        console.print(*renderables)


@contextlib.contextmanager
def text_console() -> Iterator[Any]:
    """A rich Console for stdout.  Off a terminal it renders into a buffer as wide as the
    text needs, and each line goes out with its trailing padding stripped."""
    from rich.console import Console

    out = Console(highlight=False)
    if out.is_terminal:
        yield out
        return
    buf = Console(file=io.StringIO(), width=100_000, highlight=False, color_system=None,
                  force_terminal=False, soft_wrap=False)
    yield buf
    text = buf.file.getvalue()  # type: ignore[attr-defined]
    if text:
        click.echo("\n".join(line.rstrip() for line in text.splitlines()))


def _table(title: str, columns: tuple[str, ...], right: tuple[str, ...] = ()) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left")
    return table


def summary_line(s: dict[str, Any]) -> str:
    """The one-line account of a run."""
    userspace = s.get("userspace", {})
    ukills = len(userspace.get("kills", ())) + len(userspace.get("cgroup_kills", ()))
    return (f"simulated {s['simulated_seconds']:.3f}s (seed {s['seed']}, policy {s['policy']}"
            + (f" + {s['daemon']}" if s["daemon"] else "") + f", ended by {s['end_reason']}): "
            f"{s['events']} events, {s['oom_invocations']} out_of_memory calls, "
            f"{s['oom_lock_contended']} oom_lock contentions, {s['alloc_failures']} allocation failures"
            + (f", {len(s['kills'])} OOM kills" if s["kills"] else "")
            + (f", {ukills} userspace kills" if ukills else "")
            + (f", {s['overcommit_refusals']} overcommit refusals" if s.get("overcommit_refusals") else "")
            + (f", PANIC: {s['panic']}" if s["panic"] else ""))


def print_summary(s: dict[str, Any], refusals: "RefusalLog | None" = None) -> None:
    """The run summary: its line, then the kernel's kills, the userspace killer's kills and
    the overcommit refusals side by side, then the tasks."""
    click.echo("\n" + summary_line(s))
    tables = []
    if s["kills"]:
        table = _table("OOM kills (kernel)", ("t (s)", "pid", "comm", "points"), ("t (s)", "pid", "points"))
        for k in s["kills"]:
            table.add_row(f"{k['t']:.3f}", str(k["pid"]), k["comm"], str(k["points"]))
        tables.append(table)
    userspace = s.get("userspace", {})
    if userspace.get("kills"):
        table = _table("Userspace kills", ("t (s)", "daemon", "pid", "comm", "signal", "result", "why"),
                       ("t (s)", "pid"))
        for k in userspace["kills"]:
            result = "ok" if k["result"] == 0 else ("ESRCH" if k["result"] == -3 else str(k["result"]))
            table.add_row(f"{k['t']:.3f}", k["daemon"], str(k["pid"]), k["comm"],
                          SIGNALS.get(k["sig"], str(k["sig"])), result, k["reason"])
        tables.append(table)
    if userspace.get("cgroup_kills"):
        table = _table("Userspace cgroup kills", ("t (s)", "daemon", "cgroup", "processes", "why"),
                       ("t (s)", "processes"))
        for k in userspace["cgroup_kills"]:
            table.add_row(f"{k['t']:.3f}", k["daemon"], k["path"], str(k["nr_tasks"]), k["reason"])
        tables.append(table)
    if refusals is not None and refusals.rows:
        more = refusals.count - len(refusals.rows)
        table = _table(f"Overcommit refusals (-ENOMEM): {refusals.count}"
                       + (f", the first {len(refusals.rows)} shown" if more else ""),
                       ("t (s)", "pid", "comm", "pages", "mode", "committed", "allowed"),
                       ("t (s)", "pid", "pages", "committed", "allowed"))
        for r in refusals.rows:
            table.add_row(f"{r['t']:.3f}", str(r["pid"]), r["comm"], str(r["pages"]), str(r["mode"]),
                          str(r["committed"]), str(r["allowed"]))
        tables.append(table)
    tables.append(tasks_table(s["tasks"]))
    show(*tables)


def tasks_table(tasks: list[dict[str, Any]]) -> Any:
    """The Tasks table of a summary (``run``, ``vm run``)."""
    table = _table("Tasks", ("pid", "comm", "outcome"))
    for t in tasks:
        table.add_row(str(t["pid"]), t["comm"], t["outcome"])
    return table


class RefusalLog:
    """An event sink that keeps the first ``limit`` overcommit refusals (who, how much,
    against which bound) and counts them all; the summary shows them next to the kills."""

    def __init__(self, limit: int = 10) -> None:
        from .events import EVENT_ID, EVENTS

        self.limit = limit
        self.count = 0
        self.rows: list[dict[str, Any]] = []
        self.hz = 0
        self._comm: dict[int, str] = {}
        self._check, self._new = EVENT_ID["sim:vm_enough_memory"], EVENT_ID["sim:task_new"]
        self._fork, self._start = EVENT_ID["sched:sched_process_fork"], EVENT_ID["sim:run_start"]
        self._fields = EVENTS[self._check].fields

        def at(event: str, field: str) -> int:  # a field's index in a record
            return 4 + EVENTS[EVENT_ID[event]].fields.index(field)
        self._new_comm = at("sim:task_new", "comm")
        self._child, self._child_comm = at("sched:sched_process_fork", "child_pid"), at(
            "sched:sched_process_fork", "child_comm")
        self._hz = at("sim:run_start", "hz")

    def __call__(self, rec: tuple) -> None:
        eid = rec[1]
        if eid == self._check:
            ev = dict(zip(self._fields, rec[4:]))
            if ev["result"] == 0:
                return
            self.count += 1
            if len(self.rows) < self.limit:
                self.rows.append({"t": rec[0] / self.hz if self.hz else 0.0, "pid": rec[3],
                                  "comm": self._comm.get(rec[3], "?"), **ev})
        elif eid == self._new:
            self._comm[rec[3]] = rec[self._new_comm]
        elif eid == self._fork:
            self._comm[rec[self._child]] = rec[self._child_comm]
        elif eid == self._start:
            self.hz = rec[self._hz]
