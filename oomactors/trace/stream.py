"""The trace file: a msgpack header map followed by one msgpack array per event.

Why this shape:

* **Streaming.**  A run can emit millions of events; they go to disk as they happen
  instead of piling up in memory, and a reader walks them one at a time.
* **Crash safety.**  msgpack objects are self-delimiting, so any prefix of a trace
  that ends on an object boundary is itself a valid trace.  The writer hands bytes
  to the OS in chunks of at most ~64 KiB, so a crash or Ctrl-C loses at most the
  unflushed tail, and :func:`read_trace` yields every complete record of a torn
  file before reporting exactly where it was cut.
* **Cheap writes.**  :meth:`TraceWriter.write` sits on the simulator's hot path: it
  only packs the tuple into a bytearray and checks its length.
* **Self-describing.**  The header carries the event table (names and field names
  by id) as it was when the trace was written, so a trace stays readable after
  :data:`oomactors.events.EVENTS` grows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, BinaryIO, Sequence

import msgpack

from oomactors.errors import TraceError
from oomactors.events import schema

FORMAT = "oomactors-trace"
VERSION = 1

#: Hand the buffer to the OS once it holds more than this many bytes.
FLUSH_BYTES = 64 * 1024

_RESERVED = ("format", "version", "seed", "hz", "config", "events")
# What msgpack may raise on bytes that are not (valid) msgpack.
_UNPACK_ERRORS = (msgpack.UnpackException, ValueError, TypeError)


class TraceWriter:
    """Append event records to a trace file (a path, or a binary file object).

    The header is written and flushed at once, so even a run that dies before its
    first event leaves a readable (empty) trace.  A file object passed in is flushed
    but left open by :meth:`close` (its owner closes it); a path is opened and
    closed here.
    """

    def __init__(self, path_or_file: str | os.PathLike[str] | BinaryIO, *, seed: int,
                 hz: int, config: dict, extra: dict | None = None) -> None:
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
        self._packer = msgpack.Packer(use_bin_type=True)
        self._pack = self._packer.pack
        self._buf = bytearray()
        self.closed = False
        header = {"format": FORMAT, "version": VERSION, "seed": seed, "hz": hz,
                  "config": config, "events": schema(), **extra}
        self._buf += self._pack(header)
        self.flush()

    def write(self, record: tuple) -> None:
        """Append one ``(t, id, cpu, pid, *fields)`` record (hot path: keep it tiny)."""
        self._buf += self._pack(record)
        if len(self._buf) > FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand everything buffered to the OS; what is on disk is a valid trace."""
        if self._buf:
            self._file.write(self._buf)
            self._buf.clear()
        self._file.flush()

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


class Trace:
    """A trace file opened for reading: its header, event table and records.

    ``names[id]`` and ``fields[id]`` come from the file's own header, not from the
    current event table.  :meth:`records` re-reads the file each time it is called.
    """

    def __init__(self, path: str, header: dict[str, Any], header_end: int) -> None:
        self.path = path
        self.header = header
        self.hz: int = header["hz"]
        self.seed = header.get("seed")
        self.config = header.get("config")
        self.names: list[str] = [e[0] for e in header["events"]]
        self.fields: list[tuple[str, ...]] = [tuple(e[1]) for e in header["events"]]
        self._header_end = header_end

    def records(self) -> Iterator[tuple]:
        """Yield the raw record tuples in file order.

        Every complete record is yielded before a :class:`TraceError` reports a
        truncated tail, so a caller can still use what a crashed run left behind.
        """
        path, base = self.path, self._header_end
        # A record is (t, id, cpu, pid, *fields): its full length, by event id.
        widths = tuple(4 + len(f) for f in self.fields)
        nkinds = len(widths)
        try:
            f = open(path, "rb")  # noqa: SIM115
        except OSError as e:
            raise TraceError(f"{path}: cannot read trace: {e.strerror or e}") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            f.seek(base)
            unpacker = msgpack.Unpacker(f, use_list=False, raw=False)
            tell = unpacker.tell
            end = 0  # end of the last complete record, relative to base
            n = 0
            while True:
                try:
                    rec = next(unpacker)
                except StopIteration:
                    break
                except _UNPACK_ERRORS as e:
                    raise TraceError(f"{path}: byte {base + end}: bad record: "
                                     f"{type(e).__name__}") from None
                if (type(rec) is not tuple or len(rec) < 4 or type(rec[1]) is not int
                        or not 0 <= rec[1] < nkinds or len(rec) != widths[rec[1]]):
                    raise TraceError(f"{path}: byte {base + end}: bad record "
                                     f"{_short(rec)}")
                end = tell()
                n += 1
                yield rec
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
        # The header is read with lists (config may be reused as-is); records are
        # read with tuples.  Hence a separate unpacker, and the header's end offset.
        unpacker = msgpack.Unpacker(f, use_list=True, raw=False)
        try:
            header = unpacker.unpack()
        except OSError as e:
            raise TraceError(f"{path}: cannot read trace: {e.strerror or e}") from None
        except _UNPACK_ERRORS:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise TraceError(f"{path}: not an oomactors trace (byte 0)")
        header_end = unpacker.tell()
    version = header.get("version")
    if version != VERSION:
        raise TraceError(f"{path}: unsupported trace version {version!r} "
                         f"(this oomactors reads version {VERSION})")
    problem = _header_problem(header)
    if problem:
        raise TraceError(f"{path}: bad trace header: {problem}")
    return Trace(path, header, header_end)


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
    eid = rec[1]
    out: dict[str, Any] = {"t": round(rec[0] / hz, 6), "event": names[eid], "cpu": rec[2],
                           "pid": rec[3]}
    out.update(zip(fields[eid], rec[4:]))
    return out


def decode(trace: Trace, rec: tuple) -> dict[str, Any]:
    """A record of a trace read from disk, decoded with the trace's own event table."""
    return decode_record(trace.names, trace.fields, trace.hz, rec)
