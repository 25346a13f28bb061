"""The ``oomactors`` command line: run, trace show, validate.

Bad input (a config, a trace file, an argument) is one line on stderr naming where and
what is wrong, and exit status 2.  Ctrl-C during a run leaves the trace written so far
readable and exits 130.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from typing import Any, Iterator

import click

from .cli_errors import OneLineGroup, idle_explore_options, not_an_input, option_given
from .cli_signals import Interrupted, deferred, run_command, stop_if_interrupted
from .cli_sweep import jobs_option, sweep_options
from .errors import InputError, OomactorsError

EXIT_VACUOUS = 3  # explore --strict: no run reached what an invariant guards
_SEED = click.IntRange(0, 2 ** 64 - 1)  # config.SEED_MAX: a trace stores seeds as u64


def _fail(err: InputError) -> None:
    click.echo(f"oomactors: error: {err}", err=True)
    sys.exit(err.exit_status)


def _check_writable(path: str, what: str) -> None:
    """An output file that cannot be written is bad input now, before any work is done."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InputError(f"{path}: cannot write {what}: is a directory")
    if not os.path.isdir(parent):
        raise InputError(f"{path}: cannot write {what}: no directory {parent}")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise InputError(f"{path}: cannot write {what}: permission denied")


def _load(config: str | None):
    """The config, validated and booted once (sim.check_boot): what validates, runs."""
    from .config import load_config, load_default
    from .sim import check_boot
    if config is None:
        return check_boot(load_default(), "default.toml")
    return check_boot(load_config(config), config)


class _Main(OneLineGroup):
    """Every command runs under one Ctrl-C and broken-pipe policy (oomactors/cli_signals.py),
    and every error is one line (oomactors/cli_errors.py)."""

    def invoke(self, ctx: click.Context) -> Any:
        return run_command(lambda: super(_Main, self).invoke(ctx))


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="oomactors")
def main() -> None:
    """An executable, concurrent model of Linux out-of-memory handling."""


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--seed", type=_SEED, help="Override the config's run.seed.")
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
@click.option("--schedule-seed", type=_SEED, default=0, show_default=True,
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
        _fail(err)
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
        cfg = _load(config)
    except InputError as err:
        _fail(err)
    run_seed = cfg.run.seed if seed is None else seed
    policy = _policy(cfg, policy_spec)
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

    writer = None
    if trace_path:
        target: Any = trace_path
        if trace_path == "-":
            # the trace is stdout's: everything a person reads (console text, summary, JSON)
            # goes to stderr from here on (docs/traces.md)
            if sys.stdout.isatty():
                _fail(InputError("--trace -: refusing to write a binary trace to a terminal "
                                 "(redirect it: --trace - > run.trace)"))
            target, sys.stdout = sys.stdout.buffer, sys.stderr
        try:
            writer = TraceWriter(target, seed=seed, hz=cfg.kernel.hz, config=cfg.as_dict(),
                                 extra=provenance())
        except OSError as err:
            _fail(InputError(f"{trace_path}: cannot write trace: {err.strerror}"))
    so_far = f"; trace so far in {trace_path}" if trace_path and trace_path != "-" else ""
    try:
        yield [writer.write] if writer is not None else None
    except OomactorsError as err:  # InputError, ScheduleDivergence
        _fail(InputError(f"{where}{err}{so_far}"))
    except KeyboardInterrupt as exc:
        detail = exc.detail if isinstance(exc, Interrupted) else ""
        if writer is not None:
            # the engine wrote sim:run_end "interrupted" when it stopped the run; if Ctrl-C
            # had to unwind it instead, the writer marks the trace itself
            t = writer.mark_interrupted()
            if not detail and t is not None:
                detail = f" at t={t / cfg.kernel.hz:.3f}s"
        raise Interrupted(detail + so_far) from None
    finally:  # also on the way out of the two exits above
        if writer is not None:
            writer.close()


def _policy(cfg: Any, spec: str | None) -> Any:
    """The run's policy from --policy or the config's [policy] table (None: linux)."""
    from policies.registry import policy_for
    try:
        return policy_for(cfg, spec)
    except InputError as err:
        _fail(err)


@main.command("policies")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--test-only", "test_only", is_flag=True,
              help="Also list plugins that declare themselves test fixtures (test_only = True).")
def list_policies(as_json: bool, test_only: bool = False) -> None:
    """List the kill policies: built-ins and installed plugins."""
    from rich.console import Console
    from rich.table import Table

    from policies.registry import available

    infos = available(test_only)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(i) for i in infos], indent=2))
        return
    table = Table(title="Kill policies", title_justify="left")
    for col in ("name", "kind", "from", "what it does"):
        table.add_column(col)
    for i in infos:
        table.add_row(i.name, i.kind, i.origin, i.description)
    from .textout import show
    show(table)


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
            _fail(InputError(f"{what} cannot be given with --replay: {path} holds it"))
    if option_given("schedule_seed"):
        _fail(InputError(f"--schedule-seed cannot be given with --replay: {path} holds the schedule"))
    try:
        repro = load_repro(path)
    except InputError as err:
        _fail(err)
    cfg = repro.cfg
    if repro.other_model:  # the model's source changed since: it may no longer reproduce
        click.echo(f"oomactors: note: {path} was {repro.other_model_text()}", err=True)
    # the reproducer's own backend, unless --backend was given (either gives the same bytes)
    given = option_given("backend")
    with _tracing(trace_path, repro.seed, cfg, where=f"{path}: ") as sinks, deferred():
        aggregate, sinks = _text_sinks(cfg, sinks, as_json)
        outcome, result = replay_repro(repro, sinks=sinks, backend=backend if given else None)
        stop_if_interrupted(result)
    hz = cfg.kernel.hz
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
        _fail(InputError(f"{path}: {repro.other_model_text()}: regenerate the reproducer"))
    click.echo(f"oomactors: invariant {repro.invariant} held: the violation in {path} did not reproduce",
               err=True)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--check", "checks", multiple=True, required=True, metavar="INVARIANT",
              help="An invariant to check (repeat, or separate names by commas).")
@click.option("--scheduler", "search", type=click.Choice(["random", "pct", "hypothesis", "exhaustive"]),
              default="random", show_default=True, help="How schedules are searched.")
@click.option("--budget", type=click.IntRange(min=1), default=100, show_default=True,
              help="Search runs at most (the unperturbed first run included).")
@click.option("--shrink-budget", type=click.IntRange(min=0), default=100, show_default=True,
              help="Runs spent shrinking a violation at most.")
@click.option("--seed", type=_SEED, default=0, show_default=True,
              help="Seed of the search's own draws.")
@click.option("--fixed-seed", is_flag=True, help="Run every schedule with the config's run.seed "
              "(default: run i uses run.seed + i).")
@click.option("--depth", type=click.IntRange(min=0), default=None,
              help="PCT's bug depth d (d-1 priority change points; default 3, at least 1); "
                   "exhaustive: the most picks a schedule departs by (default 2).")
@click.option("--por/--no-por", default=True, show_default=True,
              help="exhaustive: leave out picks that only reorder independent steps.")
@click.option("--policy", "policy_spec", metavar="NAME", help="Kill policy, as for `run`.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="oomactors-repro.json",
              show_default=True, help="Where to write the reproducer of a violation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {runs, seconds, result, coverage}.")
@click.option("--strict", is_flag=True, help="Exit 3 when no run reached the code an invariant guards.")
@sweep_options
def explore(config: str, checks: tuple[str, ...], search: str, budget: int, shrink_budget: int, seed: int,
            fixed_seed: bool, depth: int | None, policy_spec: str | None, out_path: str, as_json: bool,
            strict: bool = False, jobs: int | None = None, cluster: str | None = None, por: bool = True) -> None:
    """Search schedules of CONFIG for a violation of the --check invariants, shrink it and
    write a reproducer.  Exit status 0: none found; 1: a violation (see --out); 2: bad input;
    3 (with --strict): none found, and no run reached what an invariant guards."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .exhaustive import per_depth_text
    from .explore import bound_text
    from .explore import explore as do_explore
    from .explore import reproduce_command, write_repro

    from .explore import check_names
    from .sched import POINTS

    names = [n.strip() for c in checks for n in c.split(",") if n.strip()]
    try:
        idle_explore_options(search, depth, fixed_seed)
        if depth is None:
            depth = 2 if search == "exhaustive" else 3
        elif depth < 1 and search == "pct":
            raise InputError(f"--depth: PCT's depth must be at least 1, not {depth}")
        not_an_input(out_path, "--out", {"the config": config})
        _check_writable(out_path, "reproducer")  # not after the whole search
        names = check_names(names)
        jobs, cluster = jobs_option(jobs, cluster)
        cfg = _load(config)
        if policy_spec is not None:
            _policy(cfg, policy_spec)  # a bad name is one line now, not after the first run
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("runs, {task.fields[found]} violations"), TimeElapsedColumn(),
                            console=Console(stderr=True), transient=True,
                            disable=not Console(stderr=True).is_terminal)  # nothing on a pipe
        with progress, deferred():
            bar = progress.add_task("exploring", total=budget, found=0)

            def report(runs: int, total: int, found: int, phase: str) -> None:
                progress.update(bar, completed=runs, found=found,
                                description="shrinking" if phase == "shrink" else "exploring")

            res = do_explore(cfg, names, scheduler=search, budget=budget, seed=seed, policy=policy_spec,
                             progress=report, shrink_budget=shrink_budget, depth=depth,
                             vary_seed=not fixed_seed, jobs=jobs, cluster=cluster, por=por)
        if res.repro is not None:
            write_repro(out_path, res.repro)
    except InputError as err:
        _fail(err)
    if as_json:
        click.echo(json.dumps(res.as_json(out_path if res.repro is not None else None), indent=2))
    else:
        click.echo(f"explored {res.runs} runs in {res.seconds:.1f}s ({search} scheduler, "
                   f"k={res.decisions} decision points and n={res.actors} actors per unperturbed run)")
        if res.exhaustive is not None:
            ex = res.exhaustive
            state = ("the space is exhausted" if ex["exhausted"] else "cut by --budget" if ex["cut_by_budget"]
                     else "stopped at the first violation")
            click.echo(f"exhaustive search to depth {ex['depth']}: {ex['runs']} schedules run "
                       f"({per_depth_text(ex['per_depth'])}), {ex['pruned']} pruned "
                       f"by partial-order reduction{'' if ex['por'] else ' (off)'}; {state}")
        if res.pct is not None:
            click.echo(f"PCT bound: a bug of depth d={res.pct['d']} is found by one run with probability "
                       f"at least 1/(n*k^(d-1)) = {bound_text(res.pct)}")
        cov = res.coverage
        click.echo(f"reached {len(cov['points'])} of {len(POINTS)} scheduling points and "
                   f"{len(cov['branches'])} kernel branches; {cov['oom_invocations']} out_of_memory calls, "
                   f"{cov['kills']} kills")
        v = res.violation
        if v is None:
            click.echo(f"no violation of {', '.join(res.checks)}")
        else:
            click.echo(f"{v.invariant} violated at run {v.found_at} (seed {v.seed}): {v.message}")
            shrunk = res.schedule.dumps() if res.schedule else "(none: the seed alone does it)"
            if search == "exhaustive":  # not shrunk: every schedule of fewer picks ran first
                n = len(res.schedule or ())
                click.echo(f"schedule ({n} pick{'' if n == 1 else 's'}, not shrunk: no schedule with fewer "
                           f"picks violated it): {shrunk}")
            else:
                click.echo(f"schedule ({len(res.found_schedule or ())} choices found, {len(res.schedule or ())} "
                           f"after {res.shrink_runs} shrinking runs): {shrunk}")
            click.echo("last events:")
            for line in res.repro["events"][-10:]:
                click.echo(f"  {line}")
            click.echo(f"reproducer: {out_path}")
            click.echo(f"reproduce with: {reproduce_command(out_path)}")
    for name, guarded in res.vacuous.items():
        click.echo(f"oomactors: warning: no run reached what {name} guards ({' or '.join(guarded)}): "
                   "the search says nothing about it", err=True)
    if res.violation is not None:
        sys.exit(1)
    if strict and res.vacuous:
        sys.exit(EXIT_VACUOUS)


from .cli_trace import trace  # noqa: E402  (trace show, trace stats)

main.add_command(trace)


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


@main.command("compare")
@click.argument("configs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--policy", "specs", multiple=True, metavar="NAME",
              help="A policy to compare (repeat it): a built-in or plugin name, or package.module:Name. "
                   "Default: each config's own [policy], else linux.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Runs per (config, policy), seeds FIRST-SEED.. FIRST-SEED+SEEDS-1.")
@click.option("--first-seed", type=_SEED, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the tables.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also draw each metric per policy with its spread over seeds (.png, .svg, .pdf).")
@sweep_options
def compare_cmd(configs: tuple[str, ...], specs: tuple[str, ...], seeds: int, first_seed: int,
                as_json: bool, jobs: int | None, cluster: str | None, plot_path: str | None = None) -> None:
    """Run every (CONFIG, policy, seed) and compare kills, collateral, memory freed, recovery,
    stall time, allocation failures and panics (median and range over seeds)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .cli_observe import compare_plot, image_path_ok
    from .comparison import compare, tables

    if first_seed + seeds - 1 > _SEED.max:
        _fail(InputError(f"--first-seed {first_seed} + --seeds {seeds} goes past the largest seed (2^64 - 1)"))
    try:
        not_an_input(plot_path, "--plot", {f"config {c}": c for c in configs})
    except InputError as err:
        _fail(err)
    image_path_ok(plot_path)  # a bad --plot fails now, not after the runs
    err_console = Console(stderr=True)
    progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=err_console, transient=True,
                        disable=not err_console.is_terminal)
    bar = progress.add_task("compare", total=None)

    def show(done: int, total: int, job: Any) -> None:
        progress.update(bar, completed=done, total=total,
                        description=f"{job.config} · {job.policy} · seed {job.seed}")

    try:
        jobs, cluster = jobs_option(jobs, cluster)
        with progress, deferred():
            data = compare(list(configs), specs, range(first_seed, first_seed + seeds), jobs=jobs,
                           progress=show, cluster=cluster)
    except InputError as err:
        _fail(err)
    compare_plot(data, plot_path)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    out = Console(highlight=False)
    if not out.is_terminal:
        from .textout import show
        show(*tables(data))
        return
    for table in tables(data):
        # never squeeze the columns: as wide as the table needs (a narrow terminal wraps lines)
        need = Console(width=1000).measure(table).maximum
        Console(highlight=False, width=max(need, out.width)).print(table)


@main.command("replay")
@click.argument("logfiles", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--policy", "policy_names", multiple=True, metavar="NAME",
              help="A kernel-side kill policy to ask (repeat; default: linux).")
@click.option("--profile", "profile", metavar="NAME",
              help="The kernel era for `linux` (default: from the kernel version in the log).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per report.")
def replay_cmd(logfiles: tuple[str, ...], policy_names: tuple[str, ...], profile: str | None,
               as_json: bool) -> None:
    """Replay the OOM reports in kernel logs (dmesg, journalctl, syslog, a paste): who the
    kernel killed, and who each policy would have killed."""
    from .replay import replay_files

    try:
        results, warnings = replay_files(list(logfiles), policy_names or ("linux",), profile)
    except InputError as err:
        _fail(err)
    for w in warnings:
        click.echo(f"oomactors: warning: {w}", err=True)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    _print_replay(results)


def _print_replay(results: list[dict[str, Any]]) -> None:
    from .textout import text_console

    with text_console() as console:
        _print_replay_on(console, results)


def _print_replay_on(console: Any, results: list[dict[str, Any]]) -> None:
    from rich.table import Table

    for r in results:
        inv = r["invoking_task"]
        console.print(f"[bold]report {r['index']}[/bold]  {r['file']}:{r['line']}-{r['end_line']}")
        source = "from the kernel version" if r["profile_source"] == "kernel version" else r["profile_source"]
        console.print(f"  kernel {r['kernel_version'] or '(not printed)'}: profile {r['profile']} ({source})")
        console.print(f"  {r['constraint']}" + (f" in {r['memcg']}" if r["memcg"] else ""))
        total = r["totalpages"] if r["totalpages"] is not None else "unknown"
        console.print(f"  totalpages {total}: {r['totalpages_source']}")
        if inv["comm"] is not None:
            def known(v: Any) -> Any:  # a field the report did not print
                return "?" if v is None else v
            console.print(f"  invoked by {inv['comm']} (pid {known(inv['pid'])}): "
                          f"gfp_mask={known(inv['gfp_mask'])}" + (f"({inv['gfp_flags']})" if inv["gfp_flags"] else "")
                          + f", order={known(inv['order'])}, oom_score_adj={known(inv['oom_score_adj'])}")
        v = r["kernel_victim"]
        if v is None:
            console.print("  the kernel killed: nobody (or the kill line is missing)")
        else:
            score = f", score {v['score']}" if v["score"] is not None else ""
            sel = v["selected"]
            if v["sacrificed_child"]:
                console.print(f"  the kernel selected {sel['comm']} (pid {sel['pid']}){score} and killed its "
                              f"child {v['comm']} (pid {v['pid']})")
            else:
                console.print(f"  the kernel killed {v['comm']} (pid {v['pid']}){score}")
        if r["choices"]:
            table = Table(title=f"report {r['index']}: {r['tasks']} tasks", title_justify="left")
            for col in ("policy", "pid", "comm", "points", "same as the kernel"):
                table.add_column(col, justify="right" if col in ("pid", "points") else "left")
            for name, c in r["choices"].items():
                if c["pid"] is None:
                    table.add_row(name, "-", c.get("decision", "-"), "-", "-")
                    continue
                agrees = {True: "yes", False: "no", None: "?"}[c["agrees"]]
                unit = {"per-mille": " ‰", "pages": " pages"}.get(c["scale"], "")
                table.add_row(name, str(c["pid"]), c["comm"], f"{c['points']}{unit}", agrees)
            console.print(table)
        for note in r["notes"]:
            console.print(f"  note: {note}")
        if r["skipped_lines"]:
            console.print(f"  skipped lines: {', '.join(map(str, r['skipped_lines']))}")
        console.print()


from .cli_vm import vm as _vm  # noqa: E402 - the `vm` group lives in its own module
main.add_command(_vm)
from .cli_observe import register as _register_observe  # noqa: E402 - after the groups exist
_register_observe(main, trace)

if __name__ == "__main__":  # pragma: no cover
    main()
