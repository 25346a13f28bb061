"""The ``oomactors`` command line: the main group and its commands.

The commands live in ``cli_*`` modules by group -- ``run`` (cli_run), ``replay``
(cli_replay), ``trace`` (cli_trace), ``vm`` (cli_vm), the observing commands
(cli_observe), the sweep options (cli_sweep) -- and are registered here; ``explore``,
``compare``, ``validate`` and ``policies`` are here.

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

from .cli_errors import OneLineGroup, check_writable, fail, idle_explore_options, not_an_input
from .cli_run import SEED, load_booted, run, run_policy
from .cli_signals import deferred, result_status, run_command
from .cli_sweep import jobs_option, sweep_options
from .errors import InputError

EXIT_VACUOUS = 3  # explore --strict: no run reached what an invariant guards


class _Main(OneLineGroup):
    """Every command runs under one Ctrl-C and broken-pipe policy (oomactors/cli_signals.py),
    and every error is one line (oomactors/cli_errors.py)."""

    def invoke(self, ctx: click.Context) -> Any:
        return run_command(lambda: super(_Main, self).invoke(ctx))


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="oomactors")
def main() -> None:
    """An executable, concurrent model of Linux out-of-memory handling."""


main.add_command(run)


@main.command("policies")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--test-only", "test_only", is_flag=True,
              help="Also list plugins that declare themselves test fixtures (test_only = True).")
def list_policies(as_json: bool, test_only: bool = False) -> None:
    """List the kill policies: built-ins and installed plugins."""
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
@click.option("--seed", type=SEED, default=0, show_default=True,
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
        check_writable(out_path, "reproducer")  # not after the whole search
        names = check_names(names)
        jobs, cluster = jobs_option(jobs, cluster)
        cfg = load_booted(config)
        if policy_spec is not None:
            run_policy(cfg, policy_spec)  # a bad name is one line now, not after the first run
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
        if res.violation is not None:  # exit 1 (3) even if the report's reader leaves early
            result_status(1)
        elif strict and res.vacuous:
            result_status(EXIT_VACUOUS)
        if res.repro is not None:  # (--out /dev/stdout: the reader may leave here already)
            write_repro(out_path, res.repro)
    except InputError as err:
        fail(err)
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
        cfg = load_booted(config)
    except InputError as err:
        fail(err)
    click.echo(f"{config}: ok ({len(cfg.tasks)} task groups, {cfg.machine.cpus} CPUs, "
               f"profile {cfg.kernel.profile})")


@main.command("compare")
@click.argument("configs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--policy", "specs", multiple=True, metavar="NAME",
              help="A policy to compare (repeat it): a built-in or plugin name, or package.module:Name. "
                   "Default: each config's own [policy], else linux.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Runs per (config, policy), seeds FIRST-SEED.. FIRST-SEED+SEEDS-1.")
@click.option("--first-seed", type=SEED, default=0, show_default=True)
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

    if first_seed + seeds - 1 > SEED.max:
        fail(InputError(f"--first-seed {first_seed} + --seeds {seeds} goes past the largest seed (2^64 - 1)"))
    try:
        not_an_input(plot_path, "--plot", {f"config {c}": c for c in configs})
    except InputError as err:
        fail(err)
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
        fail(err)
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


from .cli_replay import replay_cmd  # noqa: E402
main.add_command(replay_cmd)

from .cli_vm import vm as _vm  # noqa: E402 - the `vm` group lives in its own module
main.add_command(_vm)
from .cli_observe import register as _register_observe  # noqa: E402 - after the groups exist
_register_observe(main, trace)

if __name__ == "__main__":  # pragma: no cover
    main()
