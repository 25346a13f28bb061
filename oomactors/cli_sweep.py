"""The --jobs and --cluster options of ``compare`` and ``explore`` (docs/sweeps.md)."""

from __future__ import annotations

from typing import Any

import click

from .errors import InputError


def sweep_options(fn: Any) -> Any:
    """--jobs and --cluster of compare and explore (docs/sweeps.md)."""
    fn = click.option("--cluster", metavar="ADDRESS", multiple=True, callback=_one_cluster,
                      help="Run on a Dask scheduler (tcp://host:8786), or local:N to start a local "
                           "cluster of N worker processes (needs oomactors[dask]).")(fn)
    return click.option("--jobs", "-j", type=int, metavar="N",
                        help="Worker processes on this machine (default: the number of cores). "
                             "The results do not depend on it.")(fn)


def _one_cluster(ctx: click.Context, param: click.Parameter, given: tuple[str, ...]) -> str | None:
    """--cluster given twice with different addresses is refused, not settled by the last
    one (click's default): beside --policy and --check, which add up, a second address
    reads as "both clusters", and all the work would go to one without a word.  The same
    address repeated is that address."""
    if len(set(given)) > 1:
        raise click.BadParameter(f"given {len(given)} times ({', '.join(given)}): a command runs on one "
                                 "Dask scheduler, which spreads the work over all its workers")
    return given[0] if given else None


def jobs_option(jobs: int | None, cluster: str | None) -> tuple[int, str | None]:
    """--jobs and --cluster, checked (one line for 0 or less), capped at the cores (with a
    note): --jobs N, and the N worker processes of --cluster local:N."""
    from .sweep import cores, parse_cluster, resolve_jobs
    if cluster is not None:
        kind, where = parse_cluster(cluster)
        if jobs is not None:
            raise InputError("--jobs and --cluster exclude each other: the cluster's workers decide")
        if kind == "local" and int(where) > cores():
            click.echo(f"oomactors: note: --cluster {cluster} capped at local:{cores()}, the number of cores",
                       err=True)
            cluster = f"local:{cores()}"
        return 1, cluster
    n, note = resolve_jobs(jobs)
    if note:
        click.echo(f"oomactors: note: {note}", err=True)
    return n, None
