"""``oomactors run``: simulate a config (or replay an explore reproducer, ``--replay``),
print the kernel console as it happens and a summary, optionally writing a trace.

Also the pieces other commands share with it: the seed option's type, loading a config
the way ``run`` does (validated and booted once), and the run's kill policy.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, Iterator

import click

from .cli_errors import fail, not_an_input, option_given
from .cli_signals import Interrupted, deferred, stop_if_interrupted, watch_stdout
from .errors import InputError, OomactorsError

SEED = click.IntRange(0, 2 ** 64 - 1)  # config.SEED_MAX: a trace stores seeds as u64


def load_booted(config: str | None):
    """The config, validated and booted once (sim.check_boot): what validates, runs."""
    from .config import load_config, load_default
    from .sim import check_boot
    if config is None:
        return check_boot(load_default(), "default.toml")
    return check_boot(load_config(config), config)


def run_policy(cfg: Any, spec: str | None) -> Any:
    """The run's policy from --policy or the config's [policy] table (None: linux)."""
    from policies.registry import policy_for
    try:
        return policy_for(cfg, spec)
    except InputError as err:
        fail(err)


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--seed", type=SEED, help="Override the config's run.seed.")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False, writable=True, allow_dash=True),
              help="Write the event trace here (-: to stdout; the text then goes to stderr).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object.")
@click.option("--backend", type=click.Choice(["trio", "asyncio"]), default="trio", show_default=True)
@click.option("--policy", "policy_spec", metavar="NAME",
              help="Kill policy: a built-in or plugin name, or package.module:Name (see `oomactors policies`).")
@click.option("--replay", "replay_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Replay a reproducer written by `oomactors explore` (config, seed, schedule).")
@click.option("--scheduler", "scheduler_name", type=click.Choice(["none", "random", "pct"]),
              help="Perturb the schedule at the named scheduling points (see `oomactors explore`).")
@click.option("--schedule-seed", type=SEED, default=0, show_default=True,
              help="Seed of the --scheduler's own draws.")
@click.option("--perfetto", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write the run as a Perfetto trace (see `trace export`).")
def run(config: str | None, seed: int | None, trace_path: str | None, as_json: bool, backend: str,
        policy_spec: str | None, replay_path: str | None = None, scheduler_name: str | None = None,
        schedule_seed: int = 0, perfetto: str | None = None) -> None:
    """Simulate CONFIG (default: the embedded quickstart config)."""
    inputs = {"the config": config, "the reproducer": replay_path}
    try:
        not_an_input(trace_path, "--trace", inputs)
        not_an_input(perfetto, "--perfetto", {**inputs, "the --trace file": trace_path})
    except InputError as err:
        fail(err)
    if perfetto is not None:  # the same run, its trace then converted (oomactors/cli_observe.py)
        from .cli_observe import perfetto_output
        with perfetto_output(perfetto, trace_path) as path:
            run.callback(config, seed, path, as_json, backend, policy_spec, replay_path, scheduler_name,
                         schedule_seed)
        return
    if replay_path is not None:
        _run_replay(replay_path, config, seed, trace_path, as_json, backend, policy_spec, scheduler_name)
        return
    from . import sim

    try:
        cfg = load_booted(config)
    except InputError as err:
        fail(err)
    run_seed = cfg.run.seed if seed is None else seed
    policy = run_policy(cfg, policy_spec)
    from .textout import RefusalLog
    refusals = RefusalLog()
    live = _live(cfg, as_json)
    with _tracing(trace_path, run_seed, cfg) as sinks, deferred():
        # the console text as it happens: the live view's on a terminal, plain lines off one
        aggregate, sinks = _text_sinks(cfg, sinks, as_json or live is not None)
        scheduler = _run_scheduler(cfg, run_seed, scheduler_name, schedule_seed, backend, policy)
        sinks = [*(sinks or ()), refusals, *([live] if live is not None else [])]
        try:
            result = sim.run(cfg, seed=run_seed, backend=backend, policy=policy, sinks=sinks,
                             scheduler=scheduler)
        finally:
            if live is not None:
                live.close()
        stop_if_interrupted(result)
    summary = aggregate.result(seed=run_seed, reason=result.reason)
    if scheduler is not None:  # only then: plain runs print what they always printed
        summary["scheduler"] = scheduler_name
        summary["decisions"] = result.decisions
        summary["schedule"] = result.schedule.dumps()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    _print_summary(summary, refusals)
    if scheduler is not None:
        click.echo(f"{scheduler_name} scheduler: {len(result.schedule)} of {result.decisions} decisions "
                   f"departed from the default" + (f": {result.schedule.dumps()}" if result.schedule else ""))


def _text_sinks(cfg: Any, sinks: list | None, no_console: bool) -> tuple[Any, list]:
    """The summary aggregator, and the run's sinks with it (and, unless ``no_console``, the
    kernel console printed as it happens): nothing keeps the run's events."""
    from .report import ConsoleText, Summary
    summary = Summary(hz=cfg.kernel.hz)
    out = list(sinks or ()) + [summary.feed]
    if not no_console:
        console = ConsoleText(hz=cfg.kernel.hz)
        ids = console.ids

        def print_console(rec: tuple) -> None:
            if rec[1] in ids:
                for line in console.feed(rec):
                    click.echo(line)

        out.append(print_console)
    return summary, out


@contextlib.contextmanager
def _tracing(trace_path: str | None, seed: int, cfg: Any, where: str = "") -> Iterator[list | None]:
    """The sinks of a run (the --trace writer, if any).  Whatever ends the run, the trace
    written so far is closed and readable: bad input met mid-run (a policy that raised, a
    replay that diverged) is one line and exit 2, Ctrl-C exits 130."""
    from .trace.header import provenance
    from .trace.stream import TraceWriter

    watch_stdout()  # a run piped into `head` ends when head does
    writer = None
    if trace_path:
        target: Any = trace_path
        if trace_path == "-":
            # the trace is stdout's: everything a person reads (console text, summary, JSON)
            # goes to stderr from here on (docs/traces.md)
            if sys.stdout.isatty():
                fail(InputError("--trace -: refusing to write a binary trace to a terminal "
                                 "(redirect it: --trace - > run.trace)"))
            target, sys.stdout = sys.stdout.buffer, sys.stderr
        try:
            writer = TraceWriter(target, seed=seed, hz=cfg.kernel.hz, config=cfg.as_dict(),
                                 extra=provenance())
        except BrokenPipeError:  # `--trace - | head`: the reader has gone (cli_signals.handled)
            raise
        except OSError as err:
            fail(InputError(f"{trace_path}: cannot write trace: {err.strerror}"))
    so_far = f"; trace so far in {trace_path}" if trace_path and trace_path != "-" else ""
    try:
        yield [writer.write] if writer is not None else None
    except OomactorsError as err:  # InputError, ScheduleDivergence
        fail(InputError(f"{where}{err}{so_far}"))
    except KeyboardInterrupt as exc:
        detail = exc.detail if isinstance(exc, Interrupted) else ""
        if writer is not None:
            # the engine wrote sim:run_end "interrupted" when it stopped the run; if Ctrl-C
            # had to unwind it instead, the writer marks the trace itself
            t = writer.mark_interrupted()
            if not detail and t is not None:
                detail = f" at t={t / cfg.kernel.hz:.3f}s"
        raise Interrupted(detail + so_far) from None
    except OSError:
        # standard output closed (| head) or failing (a full disk): the run was cut short
        # where it was, and its trace says so (the command's end is cli_signals.handled's)
        if writer is not None:
            with contextlib.suppress(OSError):
                writer.mark_interrupted()
        raise
    finally:  # also on the way out of the two exits above
        if writer is not None:
            writer.close()


def _print_summary(s: dict[str, Any], refusals: Any = None) -> None:
    from .textout import print_summary
    print_summary(s, refusals)


def _live(cfg: Any, as_json: bool) -> Any:
    """The console-and-progress sink of a run on a terminal (None with --json or off one)."""
    if as_json or not sys.stdout.isatty():
        return None
    from .live import LiveRun
    from .units import to_jiffies
    return LiveRun(hz=cfg.kernel.hz, duration=to_jiffies(cfg.run.duration, cfg.kernel.hz))


def _run_scheduler(cfg: Any, run_seed: int, name: str | None, schedule_seed: int, backend: str,
                   policy: Any) -> Any:
    """The scheduler of `run --scheduler NAME` (None without the option).  PCT needs k, the
    decision points of an unperturbed run: one is run first to count them."""
    if name is None:
        return None
    from .schedule import make_scheduler
    if name == "pct":
        from . import sim
        first = sim.run(cfg, seed=run_seed, backend=backend, policy=policy)
        stop_if_interrupted(first)
        k, n = first.decisions, first.machine.sched.stepper.spawned
        return make_scheduler("pct", seed=schedule_seed, k=max(1, k), n=max(1, n), hz=cfg.kernel.hz)
    if name == "random":
        return make_scheduler("random", seed=schedule_seed, hz=cfg.kernel.hz)
    return make_scheduler(name, seed=schedule_seed)


def _run_replay(path: str, config: str | None, seed: int | None, trace_path: str | None, as_json: bool,
                backend: str, policy_spec: str | None, scheduler_name: str | None) -> None:
    """`run --replay FILE`: the reproducer's config, seed, policy, fixes and schedule, with
    its invariant checked.  Exit 1 if the violation reproduced (reported on stderr)."""
    from .explore import load_repro, replay_repro

    for given, what in ((config, "CONFIG"), (seed, "--seed"), (policy_spec, "--policy"),
                        (scheduler_name, "--scheduler")):
        if given is not None:
            fail(InputError(f"{what} cannot be given with --replay: {path} holds it"))
    if option_given("schedule_seed"):
        fail(InputError(f"--schedule-seed cannot be given with --replay: {path} holds the schedule"))
    try:
        repro = load_repro(path)
    except InputError as err:
        fail(err)
    cfg = repro.cfg
    if repro.other_model:  # the model's source changed since: it may no longer reproduce
        click.echo(f"oomactors: note: {path} was {repro.other_model_text()}", err=True)
    # the reproducer's own backend, unless --backend was given (either gives the same bytes)
    given = option_given("backend")
    with _tracing(trace_path, repro.seed, cfg, where=f"{path}: ") as sinks, deferred():
        aggregate, sinks = _text_sinks(cfg, sinks, as_json)
        outcome, result = replay_repro(repro, sinks=sinks, backend=backend if given else None)
        stop_if_interrupted(result)
    v = outcome.violation
    summary = aggregate.result(seed=repro.seed, reason=result.reason if result is not None else "invariant")
    summary["replay"] = {"file": path, "invariant": repro.invariant, "reproduced": v is not None,
                         "violation": str(v) if v is not None else None,
                         "schedule": repro.schedule.dumps(), "decisions": outcome.decisions,
                         "model": repro.model, "same_model": not repro.other_model}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    if v is not None:
        click.echo(f"oomactors: invariant {repro.invariant} violated (reproduced from {path}): {v}", err=True)
        sys.exit(1)
    if repro.other_model:  # not "held": a stale reproducer must not pass a CI job
        fail(InputError(f"{path}: {repro.other_model_text()}: regenerate the reproducer"))
    click.echo(f"oomactors: invariant {repro.invariant} held: the violation in {path} did not reproduce",
               err=True)
