"""The trace writer encodes records with msgspec (oomactors/trace/stream.py); the file must
be byte for byte what msgpack-python packing each record alone makes, blocks included:
here against a plain writer of our own built on msgpack.packb."""

from __future__ import annotations

import io

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oomactors.events import schema
from oomactors.trace.stream import MAGIC, TraceWriter, frame

ints = st.one_of(st.integers(-40, 300), st.integers(-2**63, 2**64 - 1),
                 st.sampled_from([-2**63, -2**31 - 1, -2**31, -32769, -32768, -129, -128, -33,
                                  -32, -1, 0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1,
                                  2**32, 2**64 - 1]))
texts = st.one_of(st.text(max_size=40), st.text(min_size=250, max_size=300),
                  st.sampled_from(["", "x" * 31, "x" * 32, "x" * 255, "x" * 256, "é" * 40000]))
atoms = st.one_of(ints, texts, st.floats(), st.none(), st.booleans(), st.binary(max_size=300))
values = st.recursive(atoms, lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=4),
                      max_leaves=6)
records = st.tuples(st.integers(0, 2**40), st.integers(0, 60), st.integers(-1, 255),
                    st.integers(-1, 2**22)).flatmap(
    lambda head: st.lists(values, max_size=6).map(lambda rest: head + tuple(rest)))


def reference(recs: list[tuple], flush_bytes: int, **header) -> bytes:
    """The file as msgpack-python, packing each record alone, would have it written."""
    head = {"format": "oomactors-trace", "version": 2, **header, "events": schema()}
    out = bytearray(MAGIC) + frame(0, msgpack.packb(head, use_bin_type=True))
    buf, index = bytearray(), 1
    for rec in recs:
        buf += msgpack.packb(rec, use_bin_type=True)
        if len(buf) > flush_bytes:
            out += frame(index, buf)
            buf, index = bytearray(), index + 1
    if buf:
        out += frame(index, buf)
    return bytes(out)


@settings(max_examples=150, deadline=None)
@given(recs=st.lists(records, max_size=1500), flush_bytes=st.sampled_from([0, 1, 50, 700, 4096]))
def test_the_file_is_msgpack_pythons(recs, flush_bytes):
    f = io.BytesIO()
    with TraceWriter(f, seed=5, hz=100, config={"a": [1, 2.5, None]}, flush_bytes=flush_bytes) as w:
        for rec in recs:
            w.write(rec)
    assert f.getvalue() == reference(recs, flush_bytes, seed=5, hz=100, config={"a": [1, 2.5, None]})


def test_many_lots_and_blocks_and_runs():
    """Past PACK_BATCH and 64 KiB blocks many times, with write.run among the writes."""
    recs = [(t, t % 50, t % 64 - 1, t * 13, "comm%d" % (t % 97), t << (t % 45), -t, 1.0 / (t + 1))
            for t in range(40_000)]
    f = io.BytesIO()
    w = TraceWriter(f, seed=1, hz=250, config={})
    expect = []
    for i, rec in enumerate(recs):
        w.write(rec)
        expect.append(rec)
        if i % 997 == 0:
            w.write.run([rec, recs[0]], 301)
            expect += [rec, recs[0]] * 150 + [rec]
    w.close()
    assert f.getvalue() == reference(expect, 64 * 1024, seed=1, hz=250, config={})
    assert f.getvalue().count(b"comm96") > 100


@pytest.mark.parametrize("bad", [2**64, -2**63 - 1, "\udc80", object()])
def test_what_msgpack_refuses_is_refused(bad):
    w = TraceWriter(io.BytesIO(), seed=1, hz=250, config={})
    with pytest.raises((OverflowError, UnicodeEncodeError, TypeError)):
        msgpack.packb((0, 1, -1, -1, bad))
    w.write((0, 1, -1, -1, bad))
    with pytest.raises((OverflowError, UnicodeEncodeError, TypeError)):
        w.flush()
