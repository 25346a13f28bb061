"""Trace format 2: every damaged byte is named, never read as data; how a trace ended.

CRC-32 detects every single-bit error in what it covers, and it covers every byte after
the magic (the magic itself is compared byte for byte; a block's length field is inside
its checksum, and a length that runs past the end of the file is refused before any
checksum).  So there is no padding where a flip could hide: every flip below must be
refused, and the test proves it on a sample of positions spread over the whole file.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from click.testing import CliRunner

from oomactors import sim
from oomactors.cli import main
from oomactors.config import load_config
from oomactors.errors import TraceError
from oomactors.events import EVENT_ID, schema
from oomactors.trace.render import text_line
from oomactors.trace.stream import FORMAT, MAGIC, TraceWriter, decode, decode_record, read_trace

ROOT = Path(__file__).resolve().parent.parent
FLIPS = 160


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A real run's trace in a dozen small blocks, with the offset where each block starts."""
    path = tmp_path_factory.mktemp("integrity") / "small.trace"
    cfg = load_config(ROOT / "configs" / "quickstart.toml")
    with TraceWriter(path, seed=1, hz=cfg.kernel.hz, config=cfg.as_dict(), flush_bytes=1024) as w:
        sim.run(cfg, seed=1, sinks=[w.write], duration=3 * cfg.kernel.hz)
    data = path.read_bytes()
    starts = []  # header block first
    pos = len(MAGIC)
    while pos < len(data):
        starts.append(pos)
        pos += 8 + int.from_bytes(data[pos:pos + 4], "little")
    assert pos == len(data) and len(starts) > 10
    tr = read_trace(path)
    lines = []
    for rec in tr.records():
        lines.append(text_line(decode(tr, rec)))
    # how many records each block holds, to know what must be printed before a damage
    counts = [sum(1 for _ in msgpack.Unpacker(_payload(data, s), use_list=False)) for s in starts[1:]]
    assert sum(counts) == len(lines) and tr.ending() is None
    return data, starts, lines, counts


def _payload(data, start):
    n = int.from_bytes(data[start:start + 4], "little")
    import io
    return io.BytesIO(data[start + 8:start + 8 + n])


def _positions(data, starts):
    """Bit positions: every byte of the magic and of every block's frame (length and
    checksum), and a random sample of the payloads, the header's among them."""
    rng = random.Random(20261206)
    picks = [(i, rng.randrange(8)) for i in range(len(MAGIC))]
    for s in starts[:12]:
        picks += [(s + i, rng.randrange(8)) for i in range(8)]
    picks += [(rng.randrange(starts[0] + 8, starts[1]), rng.randrange(8)) for _ in range(10)]
    picks += [(rng.randrange(starts[1], len(data)), rng.randrange(8)) for _ in range(FLIPS - len(picks))]
    return picks[:max(FLIPS, 60)]


def test_every_single_bit_flip_is_refused_naming_its_block(small, tmp_path):
    data, starts, lines, counts = small
    picks = _positions(data, starts)
    assert len(picks) >= 60 and any(p < starts[1] for p, _ in picks)
    path = tmp_path / "flipped.trace"
    runner = CliRunner()
    for byte, bit in picks:
        bad = bytearray(data)
        bad[byte] ^= 1 << bit
        path.write_bytes(bad)
        res = runner.invoke(main, ["trace", "show", str(path)])
        where = f"byte {byte} bit {bit}"
        assert res.exit_code == 2, where
        err = res.stderr.splitlines()
        assert len(err) == 1 and err[0].startswith("oomactors: error: ") and "Traceback" not in res.stderr, where
        shown = res.stdout.splitlines()
        if byte < len(MAGIC):
            assert "not an oomactors trace (byte 0)" in err[0] and shown == [], where
            continue
        block = max(i for i, s in enumerate(starts) if s <= byte)
        assert f"byte {starts[block]}" in err[0], (where, err[0])
        if block == 0:
            assert "header" in err[0] and shown == [], where
        else:
            # everything before the damaged block, exactly
            assert shown == lines[:sum(counts[:block - 1])], where


def test_a_missing_or_repeated_block_is_caught(small, tmp_path):
    data, starts, lines, counts = small
    path = tmp_path / "cut.trace"
    path.write_bytes(data[:starts[3]] + data[starts[4]:])   # block 3 left out
    tr = read_trace(path)
    got = []
    with pytest.raises(TraceError, match=rf"byte {starts[3]}: damaged block 3"):
        got.extend(tr.records())
    assert len(got) == sum(counts[:2])
    path.write_bytes(data[:starts[4]] + data[starts[3]:])   # block 3 twice
    with pytest.raises(TraceError, match=rf"byte {starts[4]}: damaged block 4"):
        list(read_trace(path).records())


def test_incomplete_and_interrupted_traces_say_so(tmp_path):
    hz, lock, end = 250, EVENT_ID["sim:oom_lock_acquired"], EVENT_ID["sim:run_end"]
    runner = CliRunner()
    cases = {"complete": [(5, lock, 0, 1), (9, end, -1, -1, "duration")],
             "incomplete": [(5, lock, 0, 1)],
             "interrupted": [(5, lock, 0, 1), (7, end, -1, -1, "interrupted")]}
    for name, recs in cases.items():
        path = tmp_path / f"{name}.trace"
        with TraceWriter(path, seed=1, hz=hz, config={}) as w:
            for r in recs:
                w.write(r)
        res = runner.invoke(main, ["trace", "show", str(path)])
        assert len(res.stdout.splitlines()) == len(recs)
        if name == "complete":
            assert res.exit_code == 0 and res.stderr == ""
        elif name == "incomplete":
            assert res.exit_code == 2
            assert res.stderr == f"oomactors: error: {path}: incomplete: no end-of-run record after 1 events\n"
        else:
            assert res.exit_code == 0 and res.stderr == f"oomactors: {path}: interrupted at t=0.028s\n"


def test_the_writer_marks_a_trace_the_engine_could_not_end():
    import io
    buf = io.BytesIO()
    w = TraceWriter(buf, seed=1, hz=100, config={})
    assert w.mark_interrupted() == 0  # nothing simulated yet: the run never left t=0
    w.write((40, EVENT_ID["sim:oom_lock_acquired"], 0, 1))
    w.flush()
    assert w.mark_interrupted() == 40
    assert w.mark_interrupted() == 40  # already marked: no second end-of-run record
    w.close()
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"mark-{os.getpid()}.trace"
    path.write_bytes(buf.getvalue())
    try:
        tr = read_trace(path)
        recs = list(tr.records())
        assert [r[0] for r in recs] == [0, 40, 40] and tr.ending() == "interrupted at t=0.400s"
    finally:
        path.unlink()


def test_version_1_traces_are_still_read(tmp_path):
    recs = [(5, EVENT_ID["sim:oom_lock_acquired"], 0, 1), (9, EVENT_ID["sim:run_end"], -1, -1, "idle")]
    path = tmp_path / "v1.trace"
    header = {"format": FORMAT, "version": 1, "seed": 3, "hz": 250, "config": {}, "events": schema()}
    path.write_bytes(msgpack.packb(header) + b"".join(msgpack.packb(r) for r in recs))
    tr = read_trace(path)
    assert tr.version == 1 and list(tr.records()) == recs and tr.ending() is None
    # a version-2 header without the magic (or the reverse) is not a trace we wrote
    header["version"] = 2
    path.write_bytes(msgpack.packb(header))
    with pytest.raises(TraceError, match="unsupported trace version 2"):
        read_trace(path)


@pytest.mark.parametrize("bad", [(1.5, 0, 0, 1), ("7", 0, 0, 1), (None, 0, 0, 1), (-3, 0, 0, 1),
                                 (1, 0, "cpu", 1), (1, 0, 0, 2.0)])
def test_a_record_with_a_non_integer_time_is_one_line(tmp_path, bad):
    bad = (bad[0], EVENT_ID["sim:oom_lock_acquired"], *bad[2:])
    path = tmp_path / "t.trace"
    with TraceWriter(path, seed=1, hz=250, config={}) as w:
        w.write((1, EVENT_ID["sim:oom_lock_acquired"], 0, 1))
        w.write(bad)
    res = CliRunner().invoke(main, ["trace", "show", str(path), "--json"])
    assert res.exit_code == 2 and len(res.stdout.splitlines()) == 1
    assert "bad record" in res.stderr and "must be integers" in res.stderr and len(res.stderr.splitlines()) == 1
    with pytest.raises(TraceError):  # and the decoder itself refuses it, never a TypeError
        decode_record(["x"], [()], 250, (1.5, 0, 0, 1))


def test_trace_to_stdout_sends_the_text_to_stderr(tmp_path):
    path = tmp_path / "file.trace"
    to_file = subprocess.run([sys.executable, "-m", "oomactors", "run", "--seed", "2", "--trace", str(path)],
                             cwd=ROOT, capture_output=True, check=True)
    to_out = subprocess.run([sys.executable, "-m", "oomactors", "run", "--seed", "2", "--trace", "-"],
                            cwd=ROOT, capture_output=True, check=True)
    assert to_out.stdout == path.read_bytes() and to_out.stdout.startswith(MAGIC)
    assert to_out.stderr == to_file.stdout and b"OOM kills" in to_out.stderr


def test_trace_to_a_terminal_is_refused_in_one_line():
    import pty
    leader, follower = pty.openpty()
    try:
        res = subprocess.run([sys.executable, "-m", "oomactors", "run", "--trace", "-"], cwd=ROOT,
                             stdout=follower, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert res.returncode == 2
    assert res.stderr.decode().splitlines() == [
        "oomactors: error: --trace -: refusing to write a binary trace to a terminal "
        "(redirect it: --trace - > run.trace)"]
