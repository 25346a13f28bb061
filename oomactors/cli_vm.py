"""``oomactors vm run|compare``: a config's workload on a real kernel in QEMU.

Bad input -- a config the VM cannot express, a kernel that does not boot, a workload
that hangs past the timeout, missing tools -- is one line and exit status 2; a guest
panic is an outcome and is reported.  Ctrl-C stops the VM (no QEMU is left behind) and
exits 130.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .cli_errors import EXIT_INTERRUPTED, fail, not_an_input
from .errors import InputError


def _interrupted() -> None:
    click.echo("oomactors: interrupted (the VM was stopped)", err=True)
    sys.exit(EXIT_INTERRUPTED)


def _attempt(action: Any, config: str, kernel: str | None, timeout_s: float | None,
             console_path: str | None) -> Any:
    """``action(cfg, kernel, timeout_s, console_path)`` on the loaded CONFIG; bad input is
    one line and exit 2, Ctrl-C (the VM already stopped) exit 130.  A --console path that
    is one of the inputs is refused before anything boots (writing it would destroy it)."""
    from .config import load_config

    try:
        not_an_input(console_path, "--console", {"the config": config, "the kernel": kernel})
        return action(load_config(config), kernel, timeout_s, console_path)
    except InputError as err:
        fail(err)
    except KeyboardInterrupt:
        _interrupted()


_common = [
    click.argument("config", type=click.Path(dir_okay=False)),
    click.option("--kernel", "kernel", type=click.Path(dir_okay=False), metavar="PATH",
                 help="Boot this bzImage (default: Debian's cloud kernel, fetched with apt into the cache)."),
    click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), metavar="SECONDS",
                 help="Stop the VM after this much wall time (default: 60 s + 6 × run.duration)."),
    click.option("--console", "console_path", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
                 help="Write the kernel's console log here."),
    click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
]


def _options(f: Any) -> Any:
    for deco in reversed(_common):
        f = deco(f)
    return f


@click.group("vm")
def vm() -> None:
    """Run a config's workload on a real Linux kernel in QEMU, and compare it with the model."""


@vm.command("run")
@_options
def vm_run(config: str, kernel: str | None, timeout_s: float | None, console_path: str | None,
           as_json: bool) -> None:
    """Run CONFIG's workload in QEMU and print what the kernel did (the keys of `run --json`)."""
    from .vm.session import run_vm

    summary = _attempt(run_vm, config, kernel, timeout_s, console_path)
    console = summary.pop("console")
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for line in console.splitlines():
        if any(w in line for w in ("invoked oom-killer", "Killed process", "oom-kill:", "Kernel panic",
                                   "oom_reaper:", "memory: usage")):
            click.echo(line)
    _print(summary)


def _print(s: dict[str, Any]) -> None:
    from rich.table import Table

    from .textout import show, tasks_table

    click.echo(f"\nkernel {s['kernel']} (profile {s['profile']}): workload ran {s['simulated_seconds']:.3f}s "
               f"(ended by {s['end_reason']}, {s['wall_seconds']:.1f}s wall), {s['oom_invocations']} OOM "
               f"invocations, {s['overcommit_refusals']} overcommit refusals, {s['alloc_failures']} "
               f"allocation failures" + (f", PANIC: {s['panic']}" if s["panic"] else ""))
    tables = []
    if s["kills"]:
        table = Table(title="OOM kills", title_justify="left")
        for col in ("t (s)", "pid", "comm", "points", "constraint"):
            table.add_column(col, justify="left" if col in ("comm", "constraint") else "right")
        for k in s["kills"]:
            table.add_row(f"{k['t']:.3f}", str(k["pid"]), k["comm"], str(k["points"]),
                          (k["constraint"] or "?").removeprefix("CONSTRAINT_"))
        tables.append(table)
    tables.append(tasks_table(s["tasks"]))
    show(*tables)
    for path, mc in s["memcgs"].items():
        click.echo(f"memcg {path}: " + " ".join(f"{k}={v}" for k, v in mc["events"].items()))


@vm.command("compare")
@_options
def vm_compare(config: str, kernel: str | None, timeout_s: float | None, console_path: str | None,
               as_json: bool) -> None:
    """Run CONFIG in QEMU and in the model (calibrated from the guest) and compare the victims.
    Exit status 0: they agree; 1: they do not; 2: bad input."""
    from .vm.compare import calibration_line, compare, rows, verdict_line

    data = _attempt(compare, config, kernel, timeout_s, console_path)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        out = Console(highlight=False, width=max(Console().width, 120))
        out.print(calibration_line(data["calibration"]))
        table = Table(title=f"{config}: kernel {data['kernel']['kernel']} vs model ({data['kernel']['profile']})")
        for col in ("", "kernel", "model"):
            table.add_column(col)
        for what, k, m in rows(data):
            table.add_row(what, k, m)
        out.print(table)
        out.print(verdict_line(data))
    sys.exit(0 if data["agree"] else 1)
