"""Trace files: round trip, decoding, rendering, and damaged files."""

from __future__ import annotations

import io
import os

import msgpack
import pytest

from oomactors.errors import InputError, TraceError
from oomactors.events import EVENTS, event_id, schema
from oomactors.trace.render import event_text, render_json, render_text
from oomactors.trace.stream import FORMAT, VERSION, TraceWriter, decode, read_trace

HZ = 1000
LOCK = event_id("sim:oom_lock_acquired")
VICTIM = event_id("oom:mark_victim")
REAPED = event_id("sim:reaper_reaped")

RECORDS = [
    (12345, LOCK, 2, 1234),
    (12346, VICTIM, 2, 1234, "leaker", 1048576, 524288, 1024, 0, 1000, 2048, 0),
    (12500, REAPED, 0, 1234, "leaker", 0, 1024, 0),
]


def write(path, records, **kw):
    with TraceWriter(path, seed=7, hz=HZ, config={"cpus": 4, "nodes": [0]}, **kw) as w:
        for rec in records:
            w.write(rec)
    return path


def test_round_trip_header_and_records(tmp_path):
    trace = read_trace(write(tmp_path / "t.trace", RECORDS, extra={"note": "hi"}))
    h = trace.header
    assert h["format"] == FORMAT and h["version"] == VERSION
    assert h["seed"] == 7 and h["hz"] == HZ and trace.hz == HZ
    assert h["config"] == {"cpus": 4, "nodes": [0]}
    assert h["events"] == schema() and h["note"] == "hi"
    assert trace.names == [k.name for k in EVENTS]
    assert trace.fields == [k.fields for k in EVENTS]
    recs = list(trace.records())
    assert recs == RECORDS
    assert all(type(r) is tuple for r in recs)
    assert list(trace.records()) == RECORDS  # re-iterable


def test_writer_on_file_object_and_idempotent_close():
    buf = io.BytesIO()
    w = TraceWriter(buf, seed=1, hz=HZ, config={})
    w.write(RECORDS[0])
    w.close()
    w.close()
    assert not buf.closed and len(buf.getvalue()) > 0
    with pytest.raises(ValueError):
        w.write(RECORDS[0])
    with pytest.raises(ValueError):
        TraceWriter(io.BytesIO(), seed=1, hz=HZ, config={}, extra={"hz": 5})


def test_decode(tmp_path):
    trace = read_trace(write(tmp_path / "t.trace", RECORDS))
    recs = list(trace.records())
    assert decode(trace, recs[0]) == {"t": 12.345, "event": "sim:oom_lock_acquired",
                                      "cpu": 2, "pid": 1234}
    d = decode(trace, recs[1])
    assert d == {"t": 12.346, "event": "oom:mark_victim", "cpu": 2, "pid": 1234,
                 "comm": "leaker", "total_vm": 1048576, "anon_rss": 524288,
                 "file_rss": 1024, "shmem_rss": 0, "uid": 1000, "pgtables": 2048,
                 "oom_score_adj": 0}
    assert list(d)[:4] == ["t", "event", "cpu", "pid"]
    assert list(d)[4:] == list(EVENTS[VICTIM].fields)


def test_decode_rounds_to_microseconds(tmp_path):
    trace = read_trace(write(tmp_path / "t.trace", []))
    trace.hz = 3
    assert decode(trace, (1, LOCK, 0, 1))["t"] == 0.333333


def _events(tmp_path):
    trace = read_trace(write(tmp_path / "t.trace", RECORDS))
    return [decode(trace, r) for r in trace.records()]


def test_render_text(tmp_path):
    out = io.StringIO()
    render_text(_events(tmp_path), out)
    assert out.getvalue().splitlines() == [
        "[   12.345000] cpu2 pid 1234 sim:oom_lock_acquired: pid=1234",
        "[   12.346000] cpu2 pid 1234 oom:mark_victim: pid=1234 comm=leaker "
        "total-vm=1048576kB anon-rss=524288kB file-rss:1024kB shmem-rss:0kB uid=1000 "
        "pgtables=2048kB oom_score_adj=0",
        "[   12.500000] cpu0 pid 1234 sim:reaper_reaped: oom_reaper: reaped process 1234 "
        "(leaker), now anon-rss:0kB, file-rss:1024kB, shmem-rss:0kB",
    ]
    assert out.getvalue().endswith("\n")


def test_render_json(tmp_path):
    out = io.StringIO()
    render_json(_events(tmp_path), out)
    assert out.getvalue().splitlines() == [
        '{"t":12.345,"event":"sim:oom_lock_acquired","cpu":2,"pid":1234}',
        '{"t":12.346,"event":"oom:mark_victim","cpu":2,"pid":1234,"comm":"leaker",'
        '"total_vm":1048576,"anon_rss":524288,"file_rss":1024,"shmem_rss":0,"uid":1000,'
        '"pgtables":2048,"oom_score_adj":0}',
        '{"t":12.5,"event":"sim:reaper_reaped","cpu":0,"pid":1234,"comm":"leaker",'
        '"anon_rss":0,"file_rss":1024,"shmem_rss":0}',
    ]


def test_event_text_fallbacks():
    assert event_text("sim:oom_lock_acquired", 5, {}) == "pid=5"
    assert event_text("future:thing", 5, {"a": 1, "b": "x"}) == "pid=5 a=1 b=x"
    # A missing field does not fit the format: fall back to key=value pairs.
    assert event_text("sim:exit_mm", 5, {"comm": "c"}) == "pid=5 comm=c"


def test_truncated_tail(tmp_path):
    # small blocks, so that the file holds several: a torn last block loses only itself
    n = 50
    recs = [(i, VICTIM, i % 4, 100 + i, "leaker", i, i, 0, 0, 0, 8, 0) for i in range(n)]
    path = tmp_path / "t.trace"
    with TraceWriter(path, seed=7, hz=HZ, config={}, flush_bytes=100) as w:
        for rec in recs:
            w.write(rec)
    last_block = len(w._tail)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 3)
    trace = read_trace(path)
    got = []
    with pytest.raises(TraceError) as ei:
        for rec in trace.records():
            got.append(rec)
    kept = n - sum(1 for _ in msgpack.Unpacker(io.BytesIO(w._tail)))
    assert 0 < kept < n and got == recs[:kept]
    msg = str(ei.value)
    assert "truncated at byte" in msg and f"after {kept} events" in msg
    # The reported offset is where the last (torn) block starts.
    assert f"truncated at byte {size - last_block - 8} " in msg
    assert "\n" not in msg and isinstance(ei.value, InputError)


def test_header_only_and_truncated_header(tmp_path):
    path = write(tmp_path / "t.trace", [])
    assert list(read_trace(path).records()) == []
    data = path.read_bytes()
    path.write_bytes(data[:-2])
    with pytest.raises(TraceError, match="byte 8: damaged header block"):
        read_trace(path)


@pytest.mark.parametrize("data", [b"", b"hello world\n", bytes(range(256)),
                                  b"\x81\xa6format\xa3foo"])
def test_garbage_file(tmp_path, data):
    path = tmp_path / "junk"
    path.write_bytes(data)
    with pytest.raises(TraceError, match=r"not an oomactors trace \(byte 0\)"):
        read_trace(path)


def test_missing_file(tmp_path):
    with pytest.raises(TraceError, match="cannot read trace"):
        read_trace(tmp_path / "nope.trace")


def test_unsupported_version(tmp_path):
    path = tmp_path / "v.trace"
    path.write_bytes(msgpack.packb({"format": FORMAT, "version": 99, "hz": 1, "events": []}))
    with pytest.raises(TraceError, match="unsupported trace version 99"):
        read_trace(path)


@pytest.mark.parametrize("bad", [42, (1,), (1, 10_000, 0, 0), (1, LOCK, 0, 0, "extra")])
def test_bad_record(tmp_path, bad):
    path = write(tmp_path / "t.trace", [RECORDS[0], bad, RECORDS[1]])
    trace = read_trace(path)
    it = trace.records()
    assert next(it) == RECORDS[0]
    with pytest.raises(TraceError, match=r"byte \d+: bad record"):
        next(it)


def test_crash_after_flush_keeps_records(tmp_path):
    path = tmp_path / "crash.trace"
    w = TraceWriter(path, seed=3, hz=HZ, config={})
    recs = [(i, LOCK, 0, i) for i in range(10)]
    for rec in recs:
        w.write(rec)
    w.flush()  # ...and then the process "dies" without close()
    assert list(read_trace(path).records()) == recs
    w.close()


def test_large_trace_flushes_in_chunks(tmp_path):
    path = tmp_path / "big.trace"
    w = TraceWriter(path, seed=3, hz=HZ, config={})
    recs = [(i, VICTIM, 1, i, "x" * 20, i, i, i, i, 0, 4, 0) for i in range(20_000)]
    for rec in recs:
        w.write(rec)
    # Without flush() or close(), all but the unflushed tail (< 64 KiB) is on disk
    # and readable as a valid prefix.
    on_disk = list(read_trace(path).records())
    assert 0 < len(on_disk) < len(recs) and on_disk == recs[:len(on_disk)]
    assert os.path.getsize(path) > len(w._buf) and len(w._buf) <= 64 * 1024
    w.close()
    assert list(read_trace(path).records()) == recs


@pytest.mark.parametrize("flush_bytes", [1, 40, 1000, 64 * 1024])
def test_batched_packing_writes_the_bytes_of_record_by_record_packing(flush_bytes):
    """write() packs records a lot at a time; the blocks must still end after the very
    record that took the buffer past flush_bytes, as when each record was packed alone."""
    recs = [(i, VICTIM, i % 64, i * 7, "x" * (i % 50), i << (i % 40), -i, 0, 1, 2, 3, 4)
            for i in range(5_000)]
    batched, single = io.BytesIO(), io.BytesIO()
    a = TraceWriter(batched, seed=1, hz=HZ, config={}, flush_bytes=flush_bytes)
    b = TraceWriter(single, seed=1, hz=HZ, config={}, flush_bytes=flush_bytes)
    one_by_one = TraceWriter.write.__get__(b)  # the plain method: pack, append, maybe flush
    for n, rec in enumerate(recs):
        a.write(rec)
        one_by_one(rec)
        if n == 2_345:  # a flush in the middle of a lot
            a.flush()
            b.flush()
    a.close()
    b.close()
    assert batched.getvalue() == single.getvalue()
    assert batched.getvalue().count(b"OOMTRACE") == 1 and len(batched.getvalue()) > 100_000
