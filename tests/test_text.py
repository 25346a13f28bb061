"""Output that reads well: the run summary, text off a terminal, the live view of a run,
and kernel logs read from stdin or compressed (issue 11, "better text")."""

from __future__ import annotations

import gzip
import io
import json
import lzma
from pathlib import Path

from click.testing import CliRunner

from oomactors.cli import main

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "tests" / "data" / "oom_reports"


def _cli(*args: str, input: bytes | None = None):
    return CliRunner().invoke(main, list(args), input=input)


def test_summary_shows_userspace_kills_beside_the_kernels():
    res = _cli("run", str(ROOT / "configs" / "userspace-earlyoom.toml"))
    assert res.exit_code == 0, res.output
    js = json.loads(_cli("run", str(ROOT / "configs" / "userspace-earlyoom.toml"), "--json").output)
    kills = js["userspace"]["kills"]
    assert kills, "the shipped earlyoom config kills from userspace"
    out = res.output
    assert "Userspace kills" in out
    table = out.split("Userspace kills", 1)[1].split("Tasks", 1)[0]
    for k in kills:  # who, why and the signal, as the events say
        sig = {9: "SIGKILL", 15: "SIGTERM"}[k["sig"]]
        row = next(line for line in table.splitlines() if f"{k['t']:.3f}" in line and sig in line)
        assert k["comm"] in row and str(k["pid"]) in row and k["daemon"] in row
        assert k["reason"][:20] in row
    assert f"{len(kills)} userspace kills" in out


def test_summary_shows_overcommit_refusals():
    cfg = str(ROOT / "configs" / "overcommit-2.toml")
    js = json.loads(_cli("run", cfg, "--json").output)
    assert js["overcommit_refusals"] > 0
    out = _cli("run", cfg).output
    assert f"{js['overcommit_refusals']} overcommit refusals" in out
    assert f"Overcommit refusals (-ENOMEM): {js['overcommit_refusals']}" in out
    table = out.split("Overcommit refusals", 1)[1].split("Tasks", 1)[0]
    assert "bigproc" in table and "76800" in table  # who, and how many pages were refused


def test_no_wrapping_or_padding_off_a_terminal():
    out = _cli("run", str(ROOT / "configs" / "userspace-earlyoom.toml")).output
    lines = out.splitlines()
    assert all(line == line.rstrip() for line in lines)
    summary = next(line for line in lines if line.startswith("simulated "))
    assert len(summary) > 80 and "allocation failures" in summary  # one line, not wrapped at 80
    assert "Tasks" in lines  # the title alone, not centred in padding
    pol = _cli("policies").output.splitlines()
    assert all(line == line.rstrip() for line in pol)
    assert any(len(line) > 80 for line in pol)


def test_replay_reads_stdin_and_compressed_logs(tmp_path: Path):
    log = REPORTS / "rhel7-3.10-nr_ptes.log"
    plain = json.loads(_cli("replay", str(log), "--json").output)
    assert plain
    gz = tmp_path / "kern.log.gz"
    gz.write_bytes(gzip.compress(log.read_bytes()))
    xz = tmp_path / "kern.log.xz"
    xz.write_bytes(lzma.compress(log.read_bytes()))
    noext = tmp_path / "kern-compressed"  # told by its magic bytes, not its name
    noext.write_bytes(gzip.compress(log.read_bytes()))
    for path in (gz, xz, noext):
        got = json.loads(_cli("replay", str(path), "--json").output)
        assert [r["kernel_victim"] for r in got] == [r["kernel_victim"] for r in plain], path
    got = json.loads(_cli("replay", "-", "--json", input=log.read_bytes()).output)
    assert [r["kernel_victim"] for r in got] == [r["kernel_victim"] for r in plain]
    got = json.loads(_cli("replay", "-", "--json", input=gzip.compress(log.read_bytes())).output)
    assert [r["kernel_victim"] for r in got] == [r["kernel_victim"] for r in plain]


def test_replay_of_a_broken_compressed_log_is_one_line(tmp_path: Path):
    data = gzip.compress((REPORTS / "rhel7-3.10-nr_ptes.log").read_bytes())
    bad = tmp_path / "cut.gz"
    bad.write_bytes(data[: len(data) // 2])
    res = _cli("replay", str(bad))
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and "cut.gz" in res.output and "truncated" in res.output
    junk = tmp_path / "junk.xz"
    junk.write_bytes(b"\xfd7zXZ\x00" + b"\x00" * 40)
    res = _cli("replay", str(junk))
    assert res.exit_code == 2 and "junk.xz: cannot decompress" in res.output


def test_live_view_streams_the_console_and_counts_from_events():
    from rich.console import Console

    from oomactors import sim
    from oomactors.config import load_config
    from oomactors.live import LiveRun
    from oomactors.report import console_lines, summarize

    cfg = load_config(str(ROOT / "configs" / "parallel-oom.toml"))
    screen = io.StringIO()
    live = LiveRun(hz=cfg.kernel.hz, duration=1000, delay=0,
                   console=Console(file=screen, force_terminal=True, width=300, color_system=None))
    live.CHECK_EVERY = 1
    seen: list[int] = []

    def after(rec: tuple) -> None:  # runs after the live sink: the bar is up from the first event
        seen.append(live.progress is not None)

    result = sim.run(cfg, sinks=[live, after])
    live.close()
    summary = summarize(result.records, seed=result.seed, hz=result.hz)
    assert all(seen)
    assert live.events == len(result.records)
    assert live.kills == len(summary["kills"]) > 1
    expected = console_lines(result.records, hz=result.hz)
    text = screen.getvalue()
    positions = [text.index(line) for line in expected]  # every line, in order, once each
    assert positions == sorted(positions) and live.lines == len(expected)
    assert "events" in text and "kills" in text  # the bar was drawn


def test_run_off_a_terminal_prints_no_bar_and_the_same_lines():
    from oomactors import sim
    from oomactors.config import load_default
    from oomactors.report import console_lines

    out = _cli("run").output
    assert "\x1b" not in out and "simulating" not in out
    r = sim.run(load_default())
    assert out.startswith("\n".join(console_lines(r.records, hz=r.hz)) + "\n")
    js = _cli("run", "--json").output
    assert json.loads(js)["kills"] and "simulating" not in js
