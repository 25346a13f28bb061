"""Render decoded events (see :func:`oomactors.trace.stream.decode`) for people and tools.

structlog is used here, at the edges, and not on the simulator's hot path: the
simulator only appends tuples to a trace, and these functions turn the decoded
events into lines afterwards.  Each call builds its own local logger (never touching
structlog's global configuration, which belongs to the application) whose processor
chain is the renderer, so the output is exactly the line format below, with no
wall-clock timestamps or log levels: the same trace always renders to the same bytes.

Text lines look like ftrace / dmesg output::

    [   12.345678] cpu2 pid 1234 oom:mark_victim: pid=1234 comm=leaker total-vm=...

JSON lines are one object per event with keys ``t, event, cpu, pid`` and then the
event's fields, in that order.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TextIO

import structlog

from oomactors.events import EVENT_ID, EVENTS

_COMMON = ("t", "event", "cpu", "pid")


def event_text(name: str, pid: Any, fields: Mapping[str, Any]) -> str:
    """The message part of an event: its kind's ``fmt`` filled in.

    An event kind this version does not know (a trace from another version) or a
    field that does not fit the format falls back to ``pid=... key=value`` pairs.
    """
    eid = EVENT_ID.get(name)
    if eid is not None:
        try:
            return EVENTS[eid].fmt.format(pid=pid, **fields)
        except (KeyError, IndexError, ValueError, TypeError, AttributeError):
            pass
    return " ".join(f"{k}={v}" for k, v in {"pid": pid, **fields}.items())


def _fields(ev: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ev.items() if k not in _COMMON}


def text_line(ev: Mapping[str, Any]) -> str:
    """One decoded event as a dmesg-style line (no trailing newline)."""
    name, pid = ev["event"], ev["pid"]
    return (f"[{ev['t']:12.6f}] cpu{ev['cpu']} pid {pid} {name}: "
            f"{event_text(name, pid, _fields(ev))}")


def json_line(ev: Mapping[str, Any]) -> str:
    """One decoded event as a compact JSON object, keys in decode() order."""
    return _JSON(None, "msg", _ordered(ev))


class _LineSink:
    """A structlog-wrappable logger that writes lines without flushing each one.

    structlog's PrintLogger/WriteLogger flush after every line: fine for logs, but a
    system call per event makes rendering a million-event trace needlessly slow.
    """

    def __init__(self, out: TextIO) -> None:
        self._write = out.write

    def msg(self, message: str) -> None:
        self._write(message + "\n")

    log = debug = info = warning = error = msg


def _unwrap(_logger: Any, _method: str, event_dict: dict[str, Any]) -> Any:
    # The decoded event travels in one key so that its own "event" key and field
    # names cannot collide with the logger's call signature.
    return event_dict["ev"]


def _ordered(ev: Mapping[str, Any]) -> dict[str, Any]:
    """``t, event, cpu, pid`` first, then the fields as they come."""
    out = {k: ev[k] for k in _COMMON}
    out.update(_fields(ev))
    return out


def _text_renderer(_logger: Any, _method: str, ev: Mapping[str, Any]) -> str:
    return text_line(ev)


def _json_ordered(_logger: Any, _method: str, ev: Mapping[str, Any]) -> dict[str, Any]:
    return _ordered(ev)


_JSON = structlog.processors.JSONRenderer(serializer=json.dumps, sort_keys=False,
                                          separators=(",", ":"))


def _logger(out: TextIO, renderer: list[Any]) -> Any:
    """A structlog logger bound to ``out`` that renders with ``renderer`` only."""
    return structlog.wrap_logger(
        _LineSink(out),
        processors=[_unwrap, *renderer],
        wrapper_class=structlog.BoundLogger,
        context_class=dict,
        cache_logger_on_first_use=False,
    ).bind()  # resolve the lazy proxy once, not per event


def render_text(events: Iterable[Mapping[str, Any]], out: TextIO) -> None:
    """Write each decoded event to ``out`` as one dmesg-style text line."""
    log = _logger(out, [_text_renderer])
    emit = log.msg
    for ev in events:
        emit(None, ev=ev)


def render_json(events: Iterable[Mapping[str, Any]], out: TextIO) -> None:
    """Write each decoded event to ``out`` as one JSON object per line."""
    log = _logger(out, [_json_ordered, _JSON])
    emit = log.msg
    for ev in events:
        emit(None, ev=ev)


# --- fast paths for `trace show` ------------------------------------------------------------
#
# A trace holds ~21 bytes per event, so 20 MB/s of trace is about a million events a
# second: the per-event work must be a few dict lookups and one str.format.  Each event
# kind's format is compiled once into a positional format (pid first, then the fields in
# record order), the time stamp is formatted once per jiffy, and lines are written in
# batches.  The output is byte for byte what text_line/json_line give (tests compare).

_BATCH = 8192


def _positional(fmt: str, fields: Sequence[str], head: str = "", offset: int = 0) -> Callable[..., str] | None:
    """``head`` + ``fmt`` with its named fields turned into positions of ``(pid, *fields)``
    (shifted by ``offset``: 3 takes a whole record ``(t, id, cpu, pid, *fields)``)."""
    index = {name: i + offset for i, name in enumerate(("pid", *fields))}
    out = [head]
    try:
        for literal, name, spec, conv in string.Formatter().parse(fmt):
            out.append(literal.replace("{", "{{").replace("}", "}}"))
            if name is None:
                continue
            if name not in index or conv or not name.isidentifier():
                return None
            out.append("{" + str(index[name]) + (":" + spec if spec else "") + "}")
    except ValueError:
        return None
    return "".join(out).format


def _compiled(names: Sequence[str], fields: Sequence[Sequence[str]], heads: Sequence[str] | None = None,
              offset: int = 0) -> list[Callable[..., str] | None]:
    """Each event kind's format, compiled (None: unknown to this version, or its fields differ)."""
    out: list[Callable[..., str] | None] = []
    for i, (name, flds) in enumerate(zip(names, fields)):
        eid = EVENT_ID.get(name)
        head = heads[i] if heads is not None else ""
        out.append(_positional(EVENTS[eid].fmt, flds, head, offset)
                   if eid is not None and EVENTS[eid].fields == tuple(flds) else None)
    return out


def _pairs(fields: Sequence[str], rec: tuple) -> str:
    """``pid=.. key=value ..``: an event whose format does not fit (another version's)."""
    return " ".join(f"{k}={v}" for k, v in zip(("pid", *fields), rec[3:]))


def write_batched(lines: Iterable[str], out: TextIO) -> None:
    """Write ``lines`` in batches of :data:`_BATCH`.  A torn trace raises after its last
    complete record: what was rendered until then still goes out first."""
    write = out.write
    buf: list[str] = []
    try:
        for line in lines:
            buf.append(line)
            if len(buf) >= _BATCH:
                write("\n".join(buf) + "\n")
                buf.clear()
    finally:
        if buf:
            write("\n".join(buf) + "\n")


def render_trace_text(names: Sequence[str], fields: Sequence[Sequence[str]], hz: int,
                      records: Iterable[tuple], out: TextIO) -> None:
    """``trace show``: the records as text lines, the same bytes as :func:`text_line`."""
    write_batched(_text_lines(names, fields, hz, records), out)


def _text_lines(names: Sequence[str], fields: Sequence[Sequence[str]], hz: int,
                records: Iterable[tuple]) -> Iterator[str]:
    # "cpu{2} pid {3} NAME: " + the kind's format, over the whole record
    heads = ["cpu{2} pid {3} " + n.replace("{", "{{").replace("}", "}}") + ": " for n in names]
    fmts = _compiled(names, fields, heads, offset=3)
    last_t = None
    stamp = ""
    for rec in records:
        t = rec[0]
        if t != last_t:
            last_t = t
            stamp = f"[{round(t / hz, 6):12.6f}] "
        try:
            yield stamp + fmts[rec[1]](*rec)  # type: ignore[misc]
        except (IndexError, ValueError, TypeError, KeyError, AttributeError):
            eid = rec[1]
            yield stamp + f"cpu{rec[2]} pid {rec[3]} {names[eid]}: " + _pairs(fields[eid], rec)


def render_trace_json(names: Sequence[str], fields: Sequence[Sequence[str]], hz: int,
                      records: Iterable[tuple], out: TextIO) -> None:
    """``trace show --json``: the same bytes as :func:`json_line`, in batches."""
    write_batched(_json_lines(names, fields, hz, records), out)


def _json_lines(names: Sequence[str], fields: Sequence[Sequence[str]], hz: int,
                records: Iterable[tuple]) -> Iterator[str]:
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
    enc_str = json.encoder.encode_basestring_ascii  # what dumps does for a str, without the detour
    heads = [f',"event":{dumps(n)},"cpu":' for n in names]
    keys = [[f",{dumps(f)}:" for f in flds] for flds in fields]
    for rec in records:
        eid = rec[1]
        parts = [f'{{"t":{round(rec[0] / hz, 6)!r}', heads[eid], f'{rec[2]},"pid":{rec[3]}']
        for k, v in zip(keys[eid], rec[4:]):
            parts.append(k)
            tv = type(v)
            parts.append(str(v) if tv is int else enc_str(v) if tv is str else dumps(v))
        parts.append("}")
        yield "".join(parts)
