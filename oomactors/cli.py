"""The ``oomactors`` command line: run, trace show, validate.

Bad input (a config, a trace file, an argument) is one line on stderr naming where and
what is wrong, and exit status 2.  Ctrl-C during a run leaves the trace written so far
readable and exits 130.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import click

from .errors import InputError

EXIT_INTERRUPTED = 130


def _fail(err: InputError) -> None:
    click.echo(f"oomactors: error: {err}", err=True)
    sys.exit(err.exit_status)


def _load(config: str | None):
    from .config import load_config, load_default
    return load_default() if config is None else load_config(config)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="oomactors")
def main() -> None:
    """An executable, concurrent model of Linux out-of-memory handling."""


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--seed", type=click.IntRange(min=0), help="Override the config's run.seed.")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False, writable=True),
              help="Write the msgpack event trace here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object.")
@click.option("--backend", type=click.Choice(["trio", "asyncio"]), default="trio", show_default=True)
@click.option("--policy", "policy_spec", metavar="NAME",
              help="Kill policy: a built-in or plugin name, or package.module:Name (see `oomactors policies`).")
def run(config: str | None, seed: int | None, trace_path: str | None, as_json: bool, backend: str,
        policy_spec: str | None) -> None:
    """Simulate CONFIG (default: the embedded quickstart config)."""
    from . import sim
    from .report import console_lines, summarize
    from .trace.stream import TraceWriter

    try:
        cfg = _load(config)
    except InputError as err:
        _fail(err)
    run_seed = cfg.run.seed if seed is None else seed
    policy = _policy(cfg, policy_spec)
    writer = None
    try:
        if trace_path:
            try:
                writer = TraceWriter(trace_path, seed=run_seed, hz=cfg.kernel.hz, config=cfg.as_dict())
            except OSError as err:
                _fail(InputError(f"{trace_path}: cannot write trace: {err.strerror}"))
        result = sim.run(cfg, seed=run_seed, backend=backend, policy=policy,
                         sinks=[writer.write] if writer else None)
    except InputError as err:  # a policy that raised or answered nonsense
        if writer is not None:
            writer.close()
        _fail(InputError(f"{err}" + (f"; trace so far in {trace_path}" if trace_path else "")))
    except KeyboardInterrupt:
        if writer is not None:
            writer.close()
        click.echo("oomactors: interrupted" + (f"; trace so far in {trace_path}" if trace_path else ""),
                   err=True)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        if writer is not None:
            writer.close()
    summary = summarize(result.records, seed=run_seed, hz=result.hz, reason=result.reason)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for line in console_lines(result.records, hz=result.hz):
        click.echo(line)
    _print_summary(summary)


def _policy(cfg: Any, spec: str | None) -> Any:
    """The run's policy from --policy or the config's [policy] table (None: linux)."""
    from policies.registry import policy_for
    try:
        return policy_for(cfg, spec)
    except InputError as err:
        _fail(err)


@main.command("policies")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def list_policies(as_json: bool) -> None:
    """List the kill policies: built-ins and installed plugins."""
    from rich.console import Console
    from rich.table import Table

    from policies.registry import available

    infos = available()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(i) for i in infos], indent=2))
        return
    table = Table(title="Kill policies", title_justify="left")
    for col in ("name", "kind", "from", "what it does"):
        table.add_column(col)
    for i in infos:
        table.add_row(i.name, i.kind, i.origin, i.description)
    Console(highlight=False).print(table)


def _print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(f"\nsimulated {s['simulated_seconds']:.3f}s (seed {s['seed']}, ended by {s['end_reason']}): "
                  f"{s['events']} events, {s['oom_invocations']} out_of_memory calls, "
                  f"{s['oom_lock_contended']} oom_lock contentions, {s['alloc_failures']} allocation failures"
                  + (f", PANIC: {s['panic']}" if s["panic"] else ""))
    if s["kills"]:
        table = Table(title="OOM kills")
        for col in ("t (s)", "pid", "comm", "points"):
            table.add_column(col, justify="right" if col != "comm" else "left")
        for k in s["kills"]:
            table.add_row(f"{k['t']:.3f}", str(k["pid"]), k["comm"], str(k["points"]))
        console.print(table)
    table = Table(title="Tasks")
    for col in ("pid", "comm", "outcome"):
        table.add_column(col)
    for t in s["tasks"]:
        table.add_row(str(t["pid"]), t["comm"], t["outcome"])
    console.print(table)


@main.group()
def trace() -> None:
    """Read trace files."""


@trace.command("show")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def trace_show(path: str, as_json: bool) -> None:
    """Print the events of a trace file."""
    from .trace.render import json_line, text_line
    from .trace.stream import decode, read_trace

    render = json_line if as_json else text_line
    try:
        tr = read_trace(path)
        for rec in tr.records():
            click.echo(render(decode(tr, rec)))
    except InputError as err:
        sys.stdout.flush()
        _fail(err)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
def validate(config: str) -> None:
    """Check CONFIG against the schema."""
    try:
        cfg = _load(config)
    except InputError as err:
        _fail(err)
    click.echo(f"{config}: ok ({len(cfg.tasks)} task groups, {cfg.machine.cpus} CPUs, "
               f"profile {cfg.kernel.profile})")


if __name__ == "__main__":  # pragma: no cover
    main()
