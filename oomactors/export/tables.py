"""The events of a run as one flat table, in Parquet (via pyarrow) or CSV, streamed.

The table is :attr:`oomactors.api.Run.events`: ``t`` (seconds), ``event``, ``cpu``,
``pid``, then one column per field name.  Flat formats want one type per column, so a
column whose values are not all of one scalar type is written as text: numbers and words
as themselves, lists (an OOM report's task table, a cgroup kill's members) as JSON.

The file is written without building that frame: the trace is read twice.

1. The first pass (:class:`ColumnKinds`) learns, for each event kind and each of its
   columns, which *sorts* of value occur (an int that fits int64, a negative one, a float
   that is whole, one that is not, NaN, a word, a list, None, ...) and keeps one witness
   value of each sort.  What pandas makes of a column -- int, float, text -- depends only
   on which sorts it holds, never on how many values there are or their order.
2. The second pass reads the trace in bounded batches and builds each batch's frame with
   the very code of :attr:`Run.events` (:func:`oomactors.api.events_frame`), the witness
   rows put in front of it: so every column of every batch holds the same sorts as the
   whole run, gets the same type, and every value is converted exactly as in the frame of
   the whole run.  The witness rows are dropped and the batch is written: appended to the
   CSV, or as one row group of the Parquet file (one schema for the whole file).

The output is written to a temporary file next to it and renamed into place at the end,
so a failure midway (a full disk, Ctrl-C) leaves no partial table behind, and an older
file of that name stays as it was.  A pipe or a device (``-o /dev/stdout``) is written in
place.  A torn trace (read with ``partial=True``) gives the table of the events before the
tear, as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from itertools import islice
from typing import Any, Iterable, Iterator

from ..errors import InputError

#: At most this many table cells (rows x columns) per batch: the frames of one batch are
#: what the export holds in memory.
BATCH_CELLS = 1 << 20
#: Rows per batch are within these bounds, whatever the number of columns.
MIN_ROWS, MAX_ROWS = 1024, 65536
#: Records per batch of the first pass (it keeps only the witnesses).
SCAN_ROWS = 65536

_I64 = 1 << 63


def flat_events(run: Any) -> Any:
    """The events frame with every column of one scalar type (the whole run in memory:
    the Python API's frame; the file exports stream, :func:`write_table`)."""
    return flatten(run.events)


def flatten(df: Any) -> Any:
    """``df`` (an events frame) with every ``object`` column as text."""
    df = df.copy()
    for col in df.columns:
        if df[col].dtype != object:
            continue
        df[col] = df[col].map(_text, na_action="ignore").astype("string")
    return df


def _text(v: Any) -> str:
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


# --- first pass: which sorts of value each column holds -----------------------------------

def _sort(v: Any) -> Any:
    """The sort of one value, as far as pandas' type inference can tell sorts apart."""
    t = type(v)
    if t is int:
        if v < 0:
            return "int<0" if v >= -_I64 else "int big"
        return "int>=0" if v < _I64 else ("uint64" if v < 1 << 64 else "int big")
    if t is float:
        if v != v:
            return "nan"
        return "float whole" if v.is_integer() else "float"
    return t


def _add_sorts(col: tuple, seen: dict[Any, Any]) -> None:
    """Add the sorts of the values in ``col`` to ``seen`` (sort -> first value of it)."""
    types = set(map(type, col))
    if types == {int}:      # the common case, at C speed: the extremes witness the rest
        lo, hi = min(col), max(col)
        if -_I64 <= lo and hi < _I64:
            if lo < 0:
                seen.setdefault("int<0", lo)
            if hi >= 0:
                seen.setdefault("int>=0", hi)
            return
    elif int not in types and float not in types:
        for t in types - seen.keys():
            seen[t] = next(v for v in col if type(v) is t)
        return
    for v in col:
        s = _sort(v)
        if s not in seen:
            seen[s] = v


class ColumnKinds:
    """The first pass: per event kind (in order of first appearance), per column after
    ``t`` and the kind (``cpu``, ``pid``, its fields), one witness value of each sort."""

    def __init__(self) -> None:
        self.kinds: dict[int, list[dict[Any, Any]]] = {}
        self.records = 0

    def feed(self, batch: list[tuple]) -> None:
        self.records += len(batch)
        by_kind: dict[int, list[tuple]] = {}
        for rec in batch:
            by_kind.setdefault(rec[1], []).append(rec)
        for kid, recs in by_kind.items():
            cols = list(zip(*recs))[2:]
            seen = self.kinds.setdefault(kid, [{} for _ in cols])
            for sorts, col in zip(seen, cols):
                _add_sorts(col, sorts)

    def witness(self) -> list[tuple]:
        """Records that, together, hold every sort of every column of every kind seen."""
        out = []
        for kid, cols in self.kinds.items():
            values = [list(sorts.values()) for sorts in cols]
            for i in range(max(map(len, values), default=1)):
                out.append((0, kid, *(v[i % len(v)] for v in values)))
        return out

    def columns(self, fields: list[tuple[str, ...]]) -> int:
        """How many columns the table has."""
        return 4 + len({f for kid in self.kinds for f in fields[kid]} - {"t", "event", "cpu", "pid"})


def _batches(records: Iterable[tuple], size: int) -> Iterator[list[tuple]]:
    it = iter(records)
    while batch := list(islice(it, size)):
        yield batch


def batch_rows(columns: int) -> int:
    """Rows per batch for a table of ``columns`` columns."""
    return max(MIN_ROWS, min(MAX_ROWS, BATCH_CELLS // max(1, columns)))


def table_batches(run: Any, rows: int | None = None) -> Iterator[Any]:
    """The flat table of ``run`` (an :class:`oomactors.api.Run`) as frames of at most
    ``rows`` rows each (default: :func:`batch_rows`), in trace order; together they are
    :func:`flat_events` row for row, with the same columns and dtypes.  Reads the trace
    twice; holds one batch at a time."""
    from ..api import events_frame
    names, fields, hz = run.table.names, run.table.fields, run.hz
    kinds = ColumnKinds()
    for batch in _batches(run.records(), SCAN_ROWS):
        kinds.feed(batch)
    total = kinds.records
    if total == 0:
        yield flatten(events_frame((), names, fields, hz))
        return
    witness = kinds.witness()
    w = len(witness)
    size = rows or batch_rows(kinds.columns(fields))
    # a trace still being written has grown since: the table is the first pass's records
    for batch in _batches(islice(run.records(), total), size):
        yield flatten(events_frame(witness + batch, names, fields, hz)).iloc[w:]


# --- writing ----------------------------------------------------------------------------------

@contextlib.contextmanager
def replacing(path: str, mode: str) -> Iterator[Any]:
    """An open file whose contents become ``path`` when the block ends well: a temporary
    file in the same directory, renamed over ``path`` (the new file gets the mode a plain
    ``open`` would give it); nothing is left of it when the block fails.  A pipe or a
    device is opened and written in place, and a name for an open descriptor is written
    through that descriptor."""
    kw: dict[str, Any] = {"encoding": "utf-8", "newline": ""} if "b" not in mode else {}
    try:
        # a name for a descriptor already open (``-o /dev/stdout >> log``) is the caller's
        # redirection: written in place, or a file opened to append would lose its lines
        special = not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        special = False
    fd = _open_fd_named(path)
    if special or fd is not None:
        try:
            # reopening a descriptor's name would truncate a file the shell opened to append
            f = open(path, mode, **kw) if fd is None else os.fdopen(os.dup(fd), mode, **kw)  # noqa: SIM115
        except OSError as e:
            raise InputError(f"{path}: cannot write: {e.strerror or e}") from None
        with f:
            yield f
        return
    target = os.path.realpath(path)   # a symlink's file is replaced, not the link
    try:
        fd, temp = tempfile.mkstemp(dir=os.path.dirname(target),
                                    prefix=f".{os.path.basename(target)}.", suffix=".part")
    except OSError as e:
        raise InputError(f"{path}: cannot write: {e.strerror or e}") from None
    try:
        umask = os.umask(0o22)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, mode, **kw) as f:
            yield f
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _open_fd_named(path: str) -> int | None:
    """The descriptor of this process that ``path`` names (/dev/stdout, /dev/stderr,
    /dev/fd/N, /proc/self/fd/N), or None.  Such a name is the caller's redirection
    (``-o /dev/stdout >> log``): written through the descriptor, never replaced."""
    p = os.path.abspath(path)
    std = {"/dev/stdout": 1, "/dev/stderr": 2}.get(p)
    if std is not None:
        return std
    head, tail = os.path.split(p)
    if head in ("/dev/fd", "/proc/self/fd", f"/proc/{os.getpid()}/fd") and tail.isdigit():
        return int(tail)
    return None


def _write_csv(frames: Iterator[Any], f: Any) -> None:
    header = True
    for df in frames:
        df.to_csv(f, header=header, index=False)
        header = False


def _write_parquet(frames: Iterator[Any], f: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    writer = schema = None
    try:
        for df in frames:
            table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(f, schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def write_table(run: Any, path: str, fmt: str, rows: int | None = None) -> None:
    """Write the flat table of ``run`` to ``path`` as ``csv`` or ``parquet``, batch by
    batch (``rows`` per batch; default :func:`batch_rows`)."""
    if fmt == "csv":
        write, mode = _write_csv, "w"
    elif fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the install
            raise InputError("parquet export needs pyarrow: pip install 'oomactors[frames]'") from None
        write, mode = _write_parquet, "wb"
    else:
        raise InputError(f"unknown table format {fmt!r}")
    try:
        with replacing(path, mode) as f:
            write(table_batches(run, rows), f)
    except BrokenPipeError:  # a reader that has gone (`-o /dev/stdout | head`): not bad input
        raise
    except OSError as e:
        raise InputError(f"{path}: cannot write: {e.strerror or e}") from None
