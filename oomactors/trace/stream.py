"""The trace file: a magic string, then checksummed blocks of msgpack.

Layout (version 2; every integer little-endian)::

    b"OOMTRACE"                          8 bytes, the file's magic
    block 0: the header                  one msgpack map (format, version, seed, hz,
                                         config, events, ...)
    block 1..n: events                   msgpack arrays (t, id, cpu, pid, *fields), back to back

    a block = u32 length | u32 crc | payload (length bytes)
    crc = CRC-32 (zlib) of: the block's index (u32) | the length field | the payload

Why this shape:

* **Streaming.**  A run can emit millions of events; they go to disk as they happen, one
  block per ~64 KiB, instead of piling up in memory, and a reader walks them one at a time.
* **Integrity.**  CRC-32 detects every single-bit error and every burst of up to 32 bits in
  what it covers, and it covers every byte after the magic (a flipped length field makes
  the checksum read from the wrong place, or runs past the end of the file).  The block's
  index is folded into its checksum (without being stored), so a block that is missing or
  repeated is caught too.  The reader yields every record of the blocks before the first
  damaged one, then names that block's byte offset.  zlib's CRC-32 is in the standard
  library and costs ~12 µs of CPU per 64 KiB block (~4 ns per event); a faster hash such
  as xxhash would be a dependency bought for nothing measurable.
* **Crash safety.**  A crash or a hard kill loses at most the unwritten block; a torn last
  block is reported as such.  A complete run ends with ``sim:run_end`` (reason
  ``"interrupted"`` after Ctrl-C); a trace without it is reported incomplete.
* **Cheap writes.**  :meth:`TraceWriter.write` sits on the simulator's hot path: it
  only appends the tuple to a list; the records are packed a few hundred at a time (one
  call of the encoder for the lot) and each block still ends after the record that took
  it past ~64 KiB, so the bytes are those of packing each record on its own.  The records
  are encoded by msgspec, whose MessagePack is byte for byte msgpack-python's for every
  type a record holds (ints, strings, floats, None, booleans, bytes, nested tuples) and
  three times as fast; the header and the reader stay with msgpack.
* **Self-describing.**  The header carries the event table (names and field names
  by id) as it was when the trace was written, so a trace stays readable after
  :data:`oomactors.events.EVENTS` grows.

Version 1 (a bare msgpack header map followed by bare records, no checksums) is still read,
without integrity checks.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO, Sequence

import msgpack
import msgspec

from oomactors.errors import TraceError
from oomactors.events import EVENT_ID, schema

FORMAT = "oomactors-trace"
VERSION = 2
MAGIC = b"OOMTRACE"

#: Write a block once the buffer holds more than this many bytes.
FLUSH_BYTES = 64 * 1024
#: Records handed to the packer at once.
PACK_BATCH = 512

_RESERVED = ("format", "version", "seed", "hz", "config", "events")
# What msgpack may raise on bytes that are not (valid) msgpack.
_UNPACK_ERRORS = (msgpack.UnpackException, ValueError, TypeError)
_U32 = struct.Struct("<I")
_FRAME = struct.Struct("<II")
_RUN_END = EVENT_ID["sim:run_end"]


def _crc(index: int, length: bytes, payload: bytes | bytearray) -> int:
    return zlib.crc32(payload, zlib.crc32(length, zlib.crc32(_U32.pack(index))))


def _array_header_len(n: int) -> int:
    """Bytes of msgpack's header of an n-element array (fixarray, array 16, array 32)."""
    return 1 if n < 16 else 3 if n < 0x10000 else 5


def frame(index: int, payload: bytes | bytearray) -> bytes:
    """Block ``index`` of a trace file, around ``payload``."""
    length = _U32.pack(len(payload))
    return length + _U32.pack(_crc(index, length, payload)) + payload


_BUILTINS = (int, float, str, bytes, tuple, list, dict)


def _as_builtin(obj: Any) -> Any:
    """msgspec's hook for what it does not encode itself: a subclass of a builtin type is
    encoded as its value (msgpack-python's bytes for it); anything else is refused as
    msgpack refuses it."""
    for base in _BUILTINS:
        if isinstance(obj, base):
            return base(obj)
    raise TypeError(f"can not serialize {type(obj).__name__!r} object")


class TraceWriter:
    """Append event records to a trace file (a path, or a binary file object).

    The header is written and flushed at once, so even a run that dies before its
    first event leaves a readable (empty) trace.  A file object passed in is flushed
    but left open by :meth:`close` (its owner closes it); a path is opened and
    closed here.
    """

    def __init__(self, path_or_file: str | os.PathLike[str] | BinaryIO, *, seed: int,
                 hz: int, config: dict, extra: dict | None = None,
                 flush_bytes: int = FLUSH_BYTES) -> None:
        extra = dict(extra or {})
        clash = [k for k in extra if k in _RESERVED]
        if clash:
            raise ValueError(f"extra header keys clash with reserved keys: {clash}")
        if isinstance(path_or_file, (str, bytes, os.PathLike)):
            self._file: BinaryIO = open(path_or_file, "wb")  # noqa: SIM115
            self._owns_file = True
        else:
            self._file = path_or_file
            self._owns_file = False
        # records: msgspec's encoder, the same bytes as msgpack.Packer(use_bin_type=True)
        # (tests/test_trace_encoder.py) in a third of the time; subclasses of the builtin
        # types (a policy's own int for its points) go through _as_builtin, as msgpack
        # packed them: by their value
        self._pack = msgspec.msgpack.Encoder(enc_hook=_as_builtin).encode
        self._buf = bytearray()
        self._flush_bytes = flush_bytes
        self._blocks = 0
        self._tail = b""  # the payload of the last block written (its last record: mark_interrupted)
        self.closed = False
        header = {"format": FORMAT, "version": VERSION, "seed": seed, "hz": hz,
                  "config": config, "events": schema(), **extra}
        self._file.write(MAGIC)
        self._buf += msgpack.packb(header, use_bin_type=True)
        self._pending: list[tuple] = []  # records given to write() and not packed yet
        self.flush()
        self.write = self._pending_writer()  # type: ignore[method-assign]

    def write(self, record: tuple) -> None:
        """Append one ``(t, id, cpu, pid, *fields)`` record (hot path: keep it tiny).
        Each writer replaces this with :meth:`_pending_writer`'s; the bytes are the same."""
        self._buf += self._pack(record)
        if len(self._buf) > self._flush_bytes:
            self.flush()

    def _pending_writer(self) -> Any:
        """``write`` as a list append: records are packed PACK_BATCH at a time, one call of
        the packer for the lot (measured: most of the cost of a record was the packer's
        call, not its encoding).  Blocks end where they ended when each record was packed
        on its own (see :meth:`_pack_pending`), so the file is byte for byte the same."""
        pending = self._pending
        append = pending.append
        pack_pending = self._pack_pending

        def write(record: tuple) -> None:
            append(record)
            if len(pending) >= PACK_BATCH:
                pack_pending()

        def run(records: list[tuple], count: int) -> None:
            """``records`` cycled ``count`` times (Machine.run_sink): the same bytes as one
            write each.  One record repeated is packed once."""
            if len(records) == 1:
                if pending:
                    pack_pending()
                self._repeat(self._pack(records[0]), count)
                return
            whole, rest = divmod(count, len(records))
            extend(records * whole + records[:rest])
            if len(pending) >= PACK_BATCH:
                pack_pending()
        extend = pending.extend
        write.run = run  # type: ignore[attr-defined]
        return write

    def _repeat(self, data: bytes, count: int) -> None:
        """``count`` records packed as ``data`` into the buffer, a block written after the one
        that takes it past ``flush_bytes`` (the buffer is never past it between two calls)."""
        buf = self._buf
        limit = self._flush_bytes
        size = len(data)
        while count:
            upto = (limit - len(buf)) // size + 1  # the copy that crosses the limit, included
            if upto > count:
                buf += data * count
                return
            buf += data * upto
            count -= upto
            self._write_block()

    def _pack_pending(self) -> None:
        """Pack the pending records into the buffer, writing a block after each record that
        takes the buffer past ``flush_bytes``, as :meth:`write` does record by record.
        Packed as one list, they are the list's header followed by each record's bytes; a
        lot that crosses the limit is cut where its records end (found by an unpacker
        skipping them, never by packing a record twice)."""
        pending = self._pending
        if not pending:
            return
        data = self._pack(pending)
        start = _array_header_len(len(pending))
        pending.clear()
        buf = self._buf
        room = self._flush_bytes - len(buf)  # never negative between two calls
        if len(data) - start <= room:
            buf += memoryview(data)[start:]
            return
        records = msgpack.Unpacker(max_buffer_size=len(data))
        records.feed(data)
        records.read_array_header()
        end = len(data)
        while True:
            while True:  # up to the first record that takes the buffer past the limit
                records.skip()
                cut = records.tell()
                if cut - start > room:
                    break
            buf += memoryview(data)[start:cut]
            self._write_block()
            start, room = cut, self._flush_bytes - len(buf)
            if end - start <= room:
                buf += memoryview(data)[start:]
                return

    def flush(self) -> None:
        """Write what is buffered as one block; what is on disk is a valid trace."""
        if self._pending:
            self._pack_pending()  # may write a block of its own, where write() would have
        self._write_block()

    def _write_block(self) -> None:
        if self._buf:
            payload = bytes(self._buf)
            self._buf.clear()
            self._tail = payload
            self._file.write(frame(self._blocks, payload))
            self._blocks += 1
        self._file.flush()

    def mark_interrupted(self) -> int | None:  # None: closed already
        """End the trace with ``sim:run_end`` ``"interrupted"`` unless its last record ends
        the run already (the engine writes it when it stops a run itself).  Returns the
        run's last time in jiffies (None: no event was written)."""
        if self.closed:
            return None
        self._pack_pending()
        last = None
        for last in _records_of(self._buf or (self._tail if self._blocks > 1 else b"")):
            pass
        t = 0 if last is None else last[0]  # no event yet: the run never left t=0
        if last is None or last[1] != _RUN_END:
            self.write((t, _RUN_END, -1, -1, "interrupted"))
        return t

    def close(self) -> None:
        """Flush, then close the file if we opened it.  Safe to call twice."""
        if self.closed:
            return
        try:
            self.flush()
        finally:
            self.closed = True
            self.write = self._write_closed  # type: ignore[method-assign]
            if self._owns_file:
                self._file.close()

    def _write_closed(self, record: tuple) -> None:
        raise ValueError("write to a closed TraceWriter")

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _records_of(data: bytes | bytearray) -> Iterator[Any]:
    unpacker = msgpack.Unpacker(use_list=False, raw=False)
    unpacker.feed(data)
    yield from unpacker


class Trace:
    """A trace file opened for reading: its header, event table and records.

    ``names[id]`` and ``fields[id]`` come from the file's own header, not from the
    current event table.  :meth:`records` re-reads the file each time it is called; after
    it has run to the end, :attr:`end` is the ``sim:run_end`` record that ended the file
    (None: the run's end is not on record).
    """

    def __init__(self, path: str, header: dict[str, Any], header_end: int, version: int) -> None:
        self.path = path
        self.header = header
        self.version = version
        self.hz: int = header["hz"]
        self.seed = header.get("seed")
        self.config = header.get("config")
        self.names: list[str] = [e[0] for e in header["events"]]
        self.fields: list[tuple[str, ...]] = [tuple(e[1]) for e in header["events"]]
        self._header_end = header_end
        self.end: tuple | None = None
        self.events = 0

    def records(self) -> Iterator[tuple]:
        """Yield the raw record tuples in file order.

        Every record of the blocks before the first damaged one is yielded before a
        :class:`TraceError` names that block's byte offset (or where a torn file was cut),
        so a caller can still use what a crashed run left behind.
        """
        self.end = None
        self.events = 0
        try:
            f = open(self.path, "rb")  # noqa: SIM115
        except OSError as e:
            raise TraceError(f"{self.path}: cannot read trace: {e.strerror or e}") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            f.seek(self._header_end)
            blocks = _blocks(f, self.path, size, self._header_end) if self.version >= 2 else None
            yield from self._check(blocks if blocks is not None else _bare(f, self.path, size, self._header_end))

    def _check(self, chunks: Iterator[tuple[int, Any]]) -> Iterator[tuple]:
        """Check each record's shape against the event table (``chunks``: (offset, record))."""
        widths = tuple(4 + len(f) for f in self.fields)
        nkinds = len(widths)
        run_end = self.names.index("sim:run_end") if "sim:run_end" in self.names else -1
        path = self.path
        for at, rec in chunks:
            if (type(rec) is not tuple or len(rec) < 4 or type(rec[1]) is not int
                    or not 0 <= rec[1] < nkinds or len(rec) != widths[rec[1]]):
                raise TraceError(f"{path}: byte {at}: bad record {_short(rec)}")
            if type(rec[0]) is not int or rec[0] < 0 or type(rec[2]) is not int or type(rec[3]) is not int:
                raise TraceError(f"{path}: byte {at}: bad record {_short(rec)}: time, cpu and pid "
                                 f"must be integers")
            self.events += 1
            self.end = rec if rec[1] == run_end else None
            yield rec

    def ending(self) -> str | None:
        """After :meth:`records` ran to the end: None for a run that ended normally, else
        one line for the reader, ``"interrupted at t=1.234s"`` (Ctrl-C stopped the run: every
        event up to then is here) or ``"incomplete: no end-of-run record ..."`` (the writer
        died: events may be missing)."""
        if self.end is None:
            return f"incomplete: no end-of-run record after {self.events} events"
        if self.end_reason == "interrupted":
            return f"interrupted at t={self.end[0] / self.hz:.3f}s"
        return None

    @property
    def end_reason(self) -> str | None:
        """The reason of the ``sim:run_end`` that ends the file (after :meth:`records`)."""
        return None if self.end is None or len(self.end) < 5 else self.end[4]


def _blocks(f: BinaryIO, path: str, size: int, pos: int) -> Iterator[tuple[int, Any]]:
    """(offset of the block, record) for every record of every intact block (version 2)."""
    index = 1
    events = 0
    while pos < size:
        head = f.read(_FRAME.size)
        length, crc = _FRAME.unpack(head) if len(head) == _FRAME.size else (None, None)
        if length is None or pos + _FRAME.size + length > size:
            raise TraceError(f"{path}: truncated at byte {pos} after {events} events "
                             f"(block {index} is cut off or its length is damaged)")
        payload = f.read(length)
        if _crc(index, head[:4], payload) != crc:
            raise TraceError(f"{path}: byte {pos}: damaged block {index} (checksum mismatch) "
                             f"after {events} events")
        try:
            recs = list(_records_of(payload))
        except _UNPACK_ERRORS as e:  # a sound checksum over bytes that are not msgpack
            raise TraceError(f"{path}: byte {pos}: bad block {index}: {type(e).__name__}") from None
        for rec in recs:
            yield pos, rec
        events += len(recs)
        pos += _FRAME.size + length
        index += 1


def _bare(f: BinaryIO, path: str, size: int, base: int) -> Iterator[tuple[int, Any]]:
    """(offset, record) of a version-1 trace: bare msgpack records, no checksums."""
    unpacker = msgpack.Unpacker(f, use_list=False, raw=False)
    end = 0  # end of the last complete record, relative to base
    n = 0
    while True:
        try:
            rec = next(unpacker)
        except StopIteration:
            break
        except _UNPACK_ERRORS as e:
            raise TraceError(f"{path}: byte {base + end}: bad record: {type(e).__name__}") from None
        yield base + end, rec
        end = unpacker.tell()
        n += 1
    if base + end != size:
        raise TraceError(f"{path}: truncated at byte {base + end} after {n} events")


def _short(obj: object, limit: int = 60) -> str:
    text = repr(obj)  # repr never contains a raw newline
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_trace(path: str | os.PathLike[str]) -> Trace:
    """Open a trace and read its header; raise :class:`TraceError` if it is not one."""
    path = os.fspath(path)
    try:
        f = open(path, "rb")  # noqa: SIM115
    except OSError as e:
        raise TraceError(f"{path}: cannot read trace: {e.strerror or e}") from None
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
            magic = f.read(len(MAGIC))
        except OSError as e:
            raise TraceError(f"{path}: cannot read trace: {e.strerror or e}") from None
        if magic == MAGIC:
            header, header_end = _header_block(f, path, size)
        else:
            header, header_end = _header_v1(f, path)
    version = header.get("version") if isinstance(header, dict) else None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise TraceError(f"{path}: not an oomactors trace (byte 0)")
    if version not in (1, VERSION) or (version == 1) != (magic != MAGIC):
        raise TraceError(f"{path}: unsupported trace version {_short(version)} "
                         f"(this oomactors reads versions 1 and {VERSION})")
    problem = _header_problem(header)
    if problem:
        raise TraceError(f"{path}: bad trace header: {problem}")
    return Trace(path, header, header_end, version)


def _header_block(f: BinaryIO, path: str, size: int) -> tuple[Any, int]:
    pos = len(MAGIC)
    head = f.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise TraceError(f"{path}: truncated at byte {pos}: no header block")
    length, crc = _FRAME.unpack(head)
    if pos + _FRAME.size + length > size:
        raise TraceError(f"{path}: byte {pos}: damaged header block (its length runs past the "
                         f"end of the file)")
    payload = f.read(length)
    if _crc(0, head[:4], payload) != crc:
        raise TraceError(f"{path}: byte {pos}: damaged header block (checksum mismatch)")
    try:
        header = msgpack.unpackb(payload, use_list=True, raw=False)
    except _UNPACK_ERRORS:
        header = None
    return header, pos + _FRAME.size + length


def _header_v1(f: BinaryIO, path: str) -> tuple[Any, int]:
    # The header is read with lists (config may be reused as-is); records are read with
    # tuples.  Hence a separate unpacker, and the header's end offset.
    f.seek(0)
    unpacker = msgpack.Unpacker(f, use_list=True, raw=False)
    try:
        header = unpacker.unpack()
    except OSError as e:
        raise TraceError(f"{path}: cannot read trace: {e.strerror or e}") from None
    except _UNPACK_ERRORS:
        header = None
    return header, unpacker.tell()


def _header_problem(header: dict[str, Any]) -> str | None:
    hz = header.get("hz")
    if type(hz) is not int or hz <= 0:
        return f"hz is {_short(hz)}, expected a positive integer"
    events = header.get("events")
    if not isinstance(events, list):
        return "events is not a list"
    for i, e in enumerate(events):
        if not (isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                and isinstance(e[1], list) and all(isinstance(x, str) for x in e[1])):
            return f"events[{i}] is {_short(e)}, expected [name, [fields...]]"
    return None


def decode_record(names: Sequence[str], fields: Sequence[Sequence[str]], hz: int,
                  rec: tuple) -> dict[str, Any]:
    """A record as a dict: ``t`` (seconds), ``event``, ``cpu``, ``pid``, then fields."""
    eid, t = rec[1], rec[0]
    if type(t) is not int or type(eid) is not int or not 0 <= eid < len(names):
        raise TraceError(f"bad record {_short(rec)}: its time and event id must be integers")
    out: dict[str, Any] = {"t": round(t / hz, 6), "event": names[eid], "cpu": rec[2],
                           "pid": rec[3]}
    out.update(zip(fields[eid], rec[4:]))
    return out


def decode(trace: Trace, rec: tuple) -> dict[str, Any]:
    """A record of a trace read from disk, decoded with the trace's own event table."""
    return decode_record(trace.names, trace.fields, trace.hz, rec)
