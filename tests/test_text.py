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

    result = sim.run(cfg, sinks=[live, after], keep_records=True)
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
    r = sim.run(load_default(), keep_records=True)
    assert out.startswith("\n".join(console_lines(r.records, hz=r.hz)) + "\n")
    js = _cli("run", "--json").output
    assert json.loads(js)["kills"] and "simulating" not in js


def _trace(tmp_path: Path, config: str = "quickstart.toml", *extra: str) -> Path:
    path = tmp_path / "run.trace"
    res = _cli("run", str(ROOT / "configs" / config), "--trace", str(path), *extra)
    assert res.exit_code == 0, res.output
    return path


def test_trace_show_fast_path_is_byte_for_byte_the_per_event_renderers(tmp_path: Path):
    from oomactors.trace.render import json_line, text_line
    from oomactors.trace.stream import decode, read_trace

    # a userspace killer's events, an OOM report (its task table is a list field), memcgs
    for config in ("userspace-earlyoom.toml", "quickstart.toml", "memcg-swap.toml"):
        path = _trace(tmp_path, config)
        tr = read_trace(path)
        text = _cli("trace", "show", str(path)).output
        assert text == "".join(text_line(decode(tr, r)) + "\n" for r in tr.records())
        js = _cli("trace", "show", str(path), "--json").output
        assert js == "".join(json_line(decode(tr, r)) + "\n" for r in tr.records())
        assert _cli("trace", "show", str(path), "--format", "json").output == js


def test_ftrace_format_has_the_kernels_sched_switch_fields(tmp_path: Path):
    import re

    from oomactors.trace.stream import decode, read_trace

    path = _trace(tmp_path)
    tr = read_trace(path)
    events = [decode(tr, r) for r in tr.records()]
    lines = _cli("trace", "show", str(path), "--format", "ftrace").output.splitlines()
    assert len(lines) == len(events)
    line_re = re.compile(r"^ *(\S+)-(\d+) +\[(\d{3}|---)\] +(\d+\.\d{6}): (\w+): (.*)$")
    switch_re = re.compile(r"prev_comm=(\S+) prev_pid=(\d+) prev_prio=120 prev_state=([RSDZX]) ==> "
                           r"next_comm=(\S+) next_pid=(\d+) next_prio=120$")
    comm = {e["pid"]: e["comm"] for e in events if e["event"] == "sim:task_new"}
    last_on: dict[int, int] = {}
    for ev, line in zip(events, lines):
        m = line_re.match(line)
        assert m, line
        system, name = ev["event"].split(":")
        kernel = system in ("oom", "vmscan", "sched", "signal", "compaction")
        assert float(m[4]) == ev["t"] and m[5] == (name if kernel else f"{system}_{name}")
        assert m[3] == ("---" if ev["cpu"] < 0 else f"{ev['cpu']:03d}")
        if ev["event"] == "sched:sched_switch":
            s = switch_re.match(m[6])
            assert s, m[6]
            assert (s[4], int(s[5])) == (ev["next_comm"], ev["next_pid"])
            prev = int(s[2])
            assert s[1] == (f"swapper/{ev['cpu']}" if prev == 0 else comm[prev])
            assert (m[1], int(m[2])) == (("<idle>", 0) if prev == 0 else (comm[prev], prev))
            if prev:  # the task that was last put on this CPU, not the one coming back
                assert last_on[ev["cpu"]] == prev != ev["next_pid"]
            last_on[ev["cpu"]] = ev["next_pid"]
        elif ev["event"] == "oom:mark_victim":
            # the quickstart is 5.10, whose mark_victim tracepoint prints its pid only
            assert m[6] == f"pid={ev['pid']}"
    # after its exit (in event order: it may leave its CPU earlier in the same jiffy, in D)
    at, victim = next((i, e) for i, e in enumerate(events)
                      if e["event"] == "sched:sched_process_exit" and e["reason"] == "killed")
    gone = [line for line in lines[at + 1:] if f"prev_pid={victim['pid']} " in line]
    assert gone and all("prev_state=Z" in line for line in gone)


def test_ftrace_mark_victim_fields_follow_the_era(tmp_path: Path):
    """6.9 (72ba14deb40a) added the victim's comm and memory to the mark_victim tracepoint,
    and stable 6.1.130+ took them: the 6.12 and 6.1 profiles' ftrace lines have them,
    4.19's (like 5.10's) only the pid."""
    for profile, full in (("linux-6.12", True), ("linux-6.1", True), ("linux-4.19", False)):
        cfg = tmp_path / f"{profile}.toml"
        text = (ROOT / "configs" / "quickstart.toml").read_text()
        cfg.write_text(text.replace('profile = "linux-5.10"', f'profile = "{profile}"', 1))
        path = tmp_path / f"{profile}.trace"
        assert _cli("run", str(cfg), "--trace", str(path)).exit_code == 0
        out = _cli("trace", "show", str(path), "--format", "ftrace").output
        marks = [line.split(": mark_victim: ", 1)[1] for line in out.splitlines() if ": mark_victim: " in line]
        assert marks
        for msg in marks:
            assert ("comm=" in msg and "total-vm=" in msg) if full else msg.startswith("pid=") and " " not in msg


def test_trace_header_says_what_produced_the_trace(tmp_path: Path):
    from importlib.metadata import version

    path = _trace(tmp_path, "userspace-earlyoom.toml", "--seed", "3")
    head = _cli("trace", "show", str(path), "--header")
    assert head.exit_code == 0
    assert f"oomactors_version = '{version('oomactors')}'" in head.output
    assert "seed = 3" in head.output
    assert "policy = 'linux'" in head.output and "daemon = 'earlyoom'" in head.output  # beside the kernel
    assert "[machine]" in head.output and "[[tasks]]" in head.output and 'name = "leaker"' in head.output
    info = json.loads(_cli("trace", "show", str(path), "--header", "--json").output)
    assert info["seed"] == 3 and (info["policy"], info["daemon"]) == ("linux", "earlyoom")
    assert info["hz"] == 250 and info["config"]["tasks"][0]["name"]
    assert info["config"]["policy"]["name"] == "earlyoom"
    plain = json.loads(_cli("trace", "show", str(_trace(tmp_path)), "--header", "--json").output)
    assert (plain["policy"], plain["daemon"]) == ("linux", None)
    other = json.loads(_cli("trace", "show", str(_trace(tmp_path, "quickstart.toml", "--policy", "largest-rss")),
                            "--header", "--json").output)
    assert (other["policy"], other["daemon"]) == ("largest-rss", None)


def test_trace_stats_counts_kinds_and_task_states(tmp_path: Path):
    from collections import Counter

    from oomactors.trace.stream import decode, read_trace

    path = _trace(tmp_path)
    tr = read_trace(path)
    events = [decode(tr, r) for r in tr.records()]
    st = json.loads(_cli("trace", "stats", str(path), "--json").output)
    assert st["events"] == dict(Counter(e["event"] for e in events))
    assert st["total"] == len(events)
    leaker = next(e["pid"] for e in events if e["event"] == "sim:task_new" and e["comm"] == "leaker")
    row = st["tasks"][str(leaker)]
    begins = [e["t"] for e in events if e["event"] == "sim:slowpath_enter" and e["pid"] == leaker]
    ends = [e["t"] for e in events if e["event"] == "sim:slowpath_exit" and e["pid"] == leaker]
    end_t = events[-1]["t"]
    spent = sum(b - a for a, b in zip(begins, ends + [end_t] * (len(begins) - len(ends))))
    assert row["slow path"] == round(spent, 6) > 0
    assert row["dispatches"] == sum(1 for e in events if e["event"] == "sched:sched_switch"
                                    and e["next_pid"] == leaker)
    text = _cli("trace", "stats", str(path)).output
    assert "sched:sched_switch" in text and "leaker" in text


def test_trace_show_of_a_bad_or_cut_trace_is_one_line(tmp_path: Path):
    path = _trace(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.trace"
    cut.write_bytes(data[: len(data) - 7])
    for args in (["trace", "show", str(cut)], ["trace", "show", str(cut), "--format", "ftrace"],
                 ["trace", "stats", str(cut)]):
        res = _cli(*args)
        assert res.exit_code == 2
        assert res.stderr.strip().startswith("oomactors: error:") and res.stderr.count("\n") == 1
    res = _cli("trace", "show", str(cut))
    assert "truncated at byte" in res.output
    assert res.output.count("\n") > 100  # what was readable came out first


def test_run_on_a_terminal_streams_each_console_line_once():
    """On a terminal, run shows the console through the live sink and does not print it
    again after the run (a pseudo-terminal stands in for one)."""
    import os
    import pty
    import subprocess
    import sys

    from oomactors import sim
    from oomactors.config import load_config
    from oomactors.report import console_lines

    config = str(ROOT / "configs" / "parallel-oom.toml")
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "400", "LINES": "50", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "oomactors", "run", config], stdout=slave, stderr=slave,
                            stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    screen = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    r = sim.run(load_config(config), keep_records=True)
    for line in console_lines(r.records, hz=r.hz):
        assert screen.count(line + "\n") == 1, line
    assert "OOM kills (kernel)" in screen
