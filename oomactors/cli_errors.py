"""How the command line ends: every error is one line, and the exit status says which kind.

=====  ==========================================================================
 0     done (``explore``: no violation found)
 1     ``explore`` only: a violation was found (the reproducer is written)
 2     bad input: a config, trace file, kernel log, policy name or CLI argument, or
       standard output that cannot be written -- one line ``oomactors: error: ...``
 70    internal error, a bug in oomactors (EX_SOFTWARE): one line on stderr naming the
       exception and the file holding its traceback; with ``OOMACTORS_DEBUG`` set the
       traceback itself is printed
 130   interrupted (Ctrl-C)
=====  ==========================================================================

click's own errors (an unknown option, a bad value, a missing argument) would print a
``Usage:``/``Error:`` block with exit status 2; :class:`OneLineGroup` runs click with
``standalone_mode=False`` and prints them in the project's one-line form instead.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from typing import Any

import click

EXIT_INPUT = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
DEBUG_ENV = "OOMACTORS_DEBUG"


def fail(err: Any) -> None:
    """Bad input (an :class:`~oomactors.errors.InputError`): its one line, and its exit status."""
    click.echo(f"oomactors: error: {err}", err=True)
    sys.exit(err.exit_status)


def check_writable(path: str, what: str) -> None:
    """An output file that cannot be written is bad input now, before any work is done."""
    from .errors import InputError
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InputError(f"{path}: cannot write {what}: is a directory")
    if not os.path.isdir(parent):
        raise InputError(f"{path}: cannot write {what}: no directory {parent}")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise InputError(f"{path}: cannot write {what}: permission denied")


def not_an_input(out: str | None, option: str, inputs: dict[str, str | None]) -> None:
    """Refuse an output path that is one of the command's inputs (``inputs``: what each is
    called -> its path): writing it would destroy the input.  Symlinks and other spellings
    of the same file count (:func:`os.path.samefile` when both exist)."""
    from .errors import InputError
    if out is None or out == "-":
        return
    for what, path in inputs.items():
        if path is None or path == "-":
            continue
        same = os.path.realpath(out) == os.path.realpath(path)
        if not same and os.path.exists(out) and os.path.exists(path):
            try:
                same = os.path.samefile(out, path)
            except OSError:
                same = False
        if same:
            raise InputError(f"{option} {out}: is {what} ({path}); refusing to overwrite an input")


def option_given(name: str) -> bool:
    """Was option ``name`` given on the command line (not its default)?"""
    source = click.get_current_context().get_parameter_source(name)
    return source is not None and source != click.core.ParameterSource.DEFAULT


def idle_explore_options(search: str, depth: int | None, fixed_seed: bool) -> None:
    """explore: an option the chosen scheduler would ignore is refused (it would do nothing)."""
    idle = []
    if depth is not None and search in ("random", "hypothesis"):
        idle.append(("--depth", "pct and exhaustive"))
    if option_given("por") and search != "exhaustive":
        idle.append(("--por/--no-por", "exhaustive"))
    if search == "exhaustive":  # it runs every schedule on the config's own seed, drawing nothing
        if fixed_seed:
            idle.append(("--fixed-seed", "random, pct and hypothesis (exhaustive always runs run.seed)"))
        if option_given("seed"):
            idle.append(("--seed", "random, pct and hypothesis (exhaustive draws nothing)"))
        if option_given("shrink_budget"):  # every schedule with fewer picks ran first: nothing to shrink
            idle.append(("--shrink-budget", "random, pct and hypothesis (exhaustive does not shrink)"))
    if idle:
        option, where = idle[0]
        from .errors import InputError
        raise InputError(f"{option} does nothing with --scheduler {search}: it is for {where}")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _click_error(e: click.ClickException) -> str:
    msg = one_line(e.format_message()).rstrip(".")
    ctx = getattr(e, "ctx", None)
    if isinstance(e, click.UsageError) and ctx is not None:
        sub = ctx.command_path[len(ctx.find_root().command_path):].strip()
        return f"{sub + ': ' if sub else ''}{msg} (see '{ctx.command_path} --help')"
    return msg


def internal_error(exc: BaseException) -> None:
    """A bug: one line naming it and where its traceback went, exit 70."""
    text = "".join(traceback.format_exception(exc))
    if os.environ.get(DEBUG_ENV):
        sys.stderr.write(text)
        where = "traceback above"
    else:
        try:
            fd, path = tempfile.mkstemp(prefix="oomactors-crash-", suffix=".txt")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            where = f"traceback in {path}"
        except OSError:
            where = f"set {DEBUG_ENV}=1 to see the traceback"
    click.echo(f"oomactors: internal error (a bug in oomactors): {type(exc).__name__}: "
               f"{one_line(str(exc))[:300]}; {where}", err=True)
    sys.exit(EXIT_INTERNAL)


class OneLineGroup(click.Group):
    """A click group whose errors are one line each (see the module docstring)."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            click.echo(f"oomactors: error: {_click_error(e)}", err=True)
            sys.exit(EXIT_INPUT)
        except (click.Abort, KeyboardInterrupt):  # the commands catch Ctrl-C themselves first
            click.echo("oomactors: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except SystemExit:
            raise
        except Exception as e:  # noqa: BLE001 - anything else is a bug: say so in one line
            internal_error(e)
        sys.exit(rv if isinstance(rv, int) else 0)
