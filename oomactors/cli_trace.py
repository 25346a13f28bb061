"""``oomactors trace``: read trace files (``show`` in three formats or its header, ``stats``).

Registered on the main command group by :mod:`oomactors.cli`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .cli_errors import fail
from .errors import InputError


@click.group()
def trace() -> None:
    """Read trace files."""


@trace.command("show")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (same as --format json).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "ftrace"]), default="text",
              show_default=True, help="text: dmesg-style lines; json: one object per line; "
                                      "ftrace: trace-cmd/trace_pipe-style lines.")
@click.option("--header", is_flag=True,
              help="Print what produced the trace (version, seed, policy, HZ, config) instead of its events.")
def trace_show(path: str, as_json: bool, fmt: str, header: bool) -> None:
    """Print the events of a trace file."""
    from .trace.stream import read_trace

    try:
        tr = read_trace(path)
        if header:
            from .trace.header import header_text
            from .trace.header import header_info
            click.echo(json.dumps(header_info(tr), indent=2) + "\n" if as_json or fmt == "json"
                       else header_text(tr), nl=False)
            return
        out = sys.stdout
        if as_json or fmt == "json":
            from .trace.render import render_trace_json
            render_trace_json(tr.names, tr.fields, tr.hz, tr.records(), out)
        elif fmt == "ftrace":
            from .trace.ftrace import render_ftrace
            render_ftrace(tr, out)
        else:
            from .trace.render import render_trace_text
            render_trace_text(tr.names, tr.fields, tr.hz, tr.records(), out)
        _trace_ending(tr)
    except InputError as err:
        sys.stdout.flush()
        fail(err)


def _trace_ending(tr: Any) -> None:
    """How the trace ended (docs/traces.md): a run stopped by Ctrl-C is a note on stderr
    (exit 0: every event up to then is there); no end-of-run record is exit 2."""
    ending = tr.ending()
    if ending is None:
        return
    sys.stdout.flush()
    if ending.startswith("interrupted"):
        click.echo(f"oomactors: {tr.path}: {ending}", err=True)
        return
    raise InputError(f"{tr.path}: {ending}")


@trace.command("stats")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def trace_stats_cmd(path: str, as_json: bool) -> None:
    """Events per kind, and the time each task spent in each state."""
    from .trace.stats import STATES, trace_stats
    from .trace.stream import read_trace

    try:
        st = trace_stats(read_trace(path))
    except InputError as err:
        fail(err)
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    from rich.table import Table

    from .textout import show
    kinds = Table(title=f"{st['total']} events in {st['seconds']:.3f} simulated s", title_justify="left")
    kinds.add_column("event")
    kinds.add_column("count", justify="right")
    kinds.add_column("share", justify="right")
    for name, n in st["events"].items():
        kinds.add_row(name, str(n), f"{100 * n / max(1, st['total']):.1f}%")
    tasks = Table(title="Time per task state (s; direct reclaim is inside the slow path)",
                  title_justify="left")
    for col in ("pid", "comm", "dispatches", *STATES):
        tasks.add_column(col, justify="left" if col == "comm" else "right")
    for pid, t in st["tasks"].items():
        tasks.add_row(str(pid), t["comm"], str(t["dispatches"]),
                      *(f"{t[s]:.3f}" if s in t else "-" for s in STATES))
    show(kinds, tasks)
