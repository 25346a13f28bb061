"""Commands that look at a run: ``trace export``, ``plot``, and the ``--perfetto`` and
``--plot`` outputs of ``run`` and ``compare``.  Registered on the main command line by
:func:`register`; the heavy libraries (perfetto, pandas, matplotlib) load only here."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Any, Iterator

import click

from .cli_errors import fail, not_an_input
from .errors import InputError


def _need(module: str, extra: str) -> None:
    """A missing optional dependency is bad input of a kind: one line, exit 2."""
    try:
        __import__(module)
    except ImportError:
        fail(InputError(f"this needs {module}: pip install 'oomactors[{extra}]'"))


def _writable(path: str) -> None:
    """Fail now, not after a long run, if ``path`` cannot be written."""
    try:
        with open(path, "ab"):
            pass
    except OSError as e:
        fail(InputError(f"{path}: cannot write: {e.strerror or e}"))


@click.command("export")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["perfetto", "parquet", "csv"]),
              help="Output format (default: from the extension: .pftrace, .parquet, .csv).")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="The file to write (-: standard output, with --format).")
def trace_export(path: str, fmt: str | None, out: str) -> None:
    """Convert a trace file for other tools: Perfetto (open it at ui.perfetto.dev), or one
    flat table of every event as Parquet or CSV."""
    from .api import load_trace
    from .export import format_for
    target = "/dev/stdout" if out == "-" else out  # as `run --trace -`; not a file named "-"
    try:
        not_an_input(target, "--output", {"the trace": path})
        fmt = format_for(out, fmt)
        if fmt != "csv" and out in ("-", "/dev/stdout") and sys.stdout.isatty():
            raise InputError(f"-o {out}: refusing to write a binary {fmt} file to a terminal "
                             f"(redirect it: -o {out} > out.{fmt})")
        _need(*{"perfetto": ("perfetto", "perfetto"), "parquet": ("pyarrow", "frames"),
                "csv": ("pandas", "frames")}[fmt])
        run = load_trace(path, partial=True)
        run.export(target, fmt)
    except InputError as err:
        fail(err)
    _torn(run, out)
    click.echo(f"{out}: {fmt}", err=True)


def _torn(run: Any, out: str) -> None:
    """A torn trace (a crashed run's): its complete events were written, and the tear is
    still an error."""
    if run.torn is not None:
        fail(InputError(f"{run.torn}; {out} holds the events before it"))


@click.command("plot")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="The image to write: .png, .svg or .pdf.")
@click.option("--width", type=click.FloatRange(min=2, max=100), default=12, show_default=True,
              help="Width in inches.")
@click.option("--dpi", type=click.IntRange(min=20, max=600), default=100, show_default=True)
@click.option("--top", type=click.IntRange(min=1, max=50), default=5, show_default=True,
              help="How many of the largest tasks get an RSS line.")
def plot_cmd(path: str, out: str, width: float, dpi: int, top: int) -> None:
    """Draw a trace's timeline: memory by kind with the zone watermarks, kills, the largest
    tasks' RSS, PSI and memory cgroups."""
    _need("matplotlib", "plot")
    from .api import load_trace
    from .plot import MAX_PIXELS, check_image_path
    try:
        not_an_input(out, "--output", {"the trace": path})
        if width * dpi > MAX_PIXELS:
            raise InputError(f"--width {width:g} at --dpi {dpi} is {width * dpi:,.0f} pixels wide; "
                             f"at most {MAX_PIXELS:,}")
        check_image_path(out)
        run = load_trace(path, partial=True)
        run.plot(out, width=width, dpi=dpi, top=top)
    except InputError as err:
        fail(err)
    _torn(run, out)


@contextlib.contextmanager
def perfetto_output(perfetto: str | None, trace_path: str | None) -> Iterator[str | None]:
    """For ``run --perfetto FILE``: yields the path the run's trace goes to (a temporary
    file without ``--trace``) and, once the run has ended well, converts it."""
    if perfetto is None:
        yield trace_path
        return
    _need("perfetto", "perfetto")
    existed = os.path.exists(perfetto)
    _writable(perfetto)
    temp = None
    if trace_path is None:
        fd, temp = tempfile.mkstemp(prefix="oomactors-", suffix=".trace")
        os.close(fd)
    try:
        yield trace_path or temp
        from .api import load_trace
        try:
            load_trace(trace_path or temp).export(perfetto, "perfetto")
        except InputError as err:
            fail(err)
    except BaseException:
        if not existed:  # the run never got going (bad config, Ctrl-C): no empty file left
            with contextlib.suppress(OSError):
                if os.path.getsize(perfetto) == 0:
                    os.unlink(perfetto)
        raise
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)


def image_path_ok(path: str | None) -> None:
    """A --plot FILE that cannot be drawn to is one line and exit 2, before any work."""
    if path is None:
        return
    _need("matplotlib", "plot")
    from .plot import check_image_path
    try:
        check_image_path(path)
    except InputError as err:
        fail(err)
    _writable(path)


def compare_plot(data: dict[str, Any], path: str | None) -> None:
    """For ``compare --plot FILE``: every metric per policy, with its spread over seeds."""
    if path is None:
        return
    _need("matplotlib", "plot")
    from .plot import check_image_path, compare_figure
    try:
        check_image_path(path)
        compare_figure(data, path)
    except InputError as err:
        fail(err)


def register(main: click.Group, trace: click.Group) -> None:
    trace.add_command(trace_export)
    main.add_command(plot_cmd)
