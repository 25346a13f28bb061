"""``oomactors replay``: the OOM reports in kernel logs (dmesg, journalctl, syslog, a
paste) asked again -- who the kernel killed, and who each policy would have killed."""

from __future__ import annotations

import json
from typing import Any

import click

from .cli_errors import fail
from .errors import InputError


@click.command("replay")
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
        fail(err)
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
