"""The command line: exit statuses, one-line errors, readable traces after failures."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from oomactors.cli import main
from oomactors.trace.stream import read_trace

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


def test_run_json_has_the_documented_keys():
    res = _cli("run", "--seed", "1", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    for key in ("seed", "simulated_seconds", "events", "oom_invocations", "oom_lock_contended", "kills",
                "alloc_failures", "panic", "tasks"):
        assert key in data
    assert data["seed"] == 1
    assert [k["comm"] for k in data["kills"]] == ["leaker"]
    assert {t["comm"]: t["outcome"] for t in data["tasks"]}["leaker"] == "killed"


def test_run_prints_kernel_console_text():
    res = _cli("run", "--seed", "0")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "leaker invoked oom-killer: gfp_mask=0x100cca(GFP_HIGHUSER_MOVABLE), order=0, oom_score_adj=0" in out
    assert "Tasks state (memory values in pages):" in out
    assert "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name" in out
    assert "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null)" in out
    assert "Out of memory: Killed process" in out and "(leaker)" in out
    assert "oom_reaper: reaped process" in out


@pytest.mark.parametrize("body, where, what", [
    ("[kernel]\nhz = \"fast\"\n", "kernel.hz", ""),
    ("[machine]\nmemroy = \"1GiB\"\n", "machine.memroy", "unknown key"),
    ("[[tasks]]\nname = \"a\"\nprogram = [{op = \"alloc\", size = \"-5MiB\"}]\n", "tasks[0].program[0].size",
     "negative"),
    ("[[tasks]]\nname = \"a\"\nprogram = [{op = \"alloc\", size = \"5MiB\", gfp = \"GFP_KERNAL\"}]\n",
     "tasks[0].program[0].gfp", "GFP_KERNAL"),
])
def test_bad_config_exits_2_naming_the_key(tmp_path, body, where, what):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    for cmd in ("run", "validate"):
        res = _cli(cmd, str(path))
        assert res.exit_code == 2
        line = res.output.strip()
        assert "\n" not in line and "Traceback" not in line
        assert where in line and what in line


def test_validate_ok():
    res = _cli("validate", str(ROOT / "configs" / "quickstart.toml"))
    assert res.exit_code == 0 and "ok" in res.output


def test_truncated_trace_gives_events_then_a_clear_error(tmp_path):
    path = tmp_path / "t.trace"
    assert _cli("run", "--seed", "2", "--trace", str(path), "--json").exit_code == 0
    whole = list(read_trace(path).records())
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    res = CliRunner().invoke(main, ["trace", "show", str(path), "--json"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    shown = [json.loads(x) for x in lines[:-1]]
    # every event of the intact blocks, i.e. all but those of the torn last block
    last = _last_block_events(data)
    assert 0 < last < len(whole) and len(shown) == len(whole) - last
    assert [e["t"] for e in shown] == [round(r[0] / 250, 6) for r in whole[:len(shown)]]
    assert f"truncated at byte {len(data) - _last_block_size(data)} " in lines[-1]


def _last_block_size(data: bytes) -> int:
    pos = last = 8
    while pos < len(data):
        last = pos
        pos += 8 + int.from_bytes(data[pos:pos + 4], "little")
    return len(data) - last


def _last_block_events(data: bytes) -> int:
    import msgpack
    return sum(1 for _ in msgpack.Unpacker(io.BytesIO(data[len(data) - _last_block_size(data) + 8:])))


def test_ctrl_c_leaves_a_readable_trace_and_exits_130(tmp_path):
    cfg = tmp_path / "long.toml"
    cfg.write_text((ROOT / "configs" / "quickstart.toml").read_text().replace('duration = "20s"',
                                                                                 'duration = "100000s"'))
    path = tmp_path / "t.trace"
    # a background job of a non-interactive shell inherits SIGINT ignored: undo that, as a
    # terminal would have it
    proc = subprocess.Popen([sys.executable, "-m", "oomactors", "run", str(cfg), "--trace", str(path)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 30
    while (not path.exists() or path.stat().st_size < 200_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    tr = read_trace(path)
    n = 0
    try:
        for _ in tr.records():
            n += 1
    except Exception as exc:  # a cut-off tail is reported, never a crash
        assert "truncated" in str(exc)
    assert n > 1000
