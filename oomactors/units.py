"""Parsers for the human units a config is written in: sizes, durations, rates.

Configs say ``"512MiB"``, ``"250us"`` and ``"32MiB/s"`` because that is how people
think about memory pressure; the simulator works in bytes, nanoseconds (or jiffies)
and bytes per second.  Every parser here turns one into the other and raises a
:class:`ValueError` with a short message (``"negative size"``) that the config
loader shows after the key path, so the messages stay terse and never repeat the key.

Size units are *binary* throughout: ``K``/``KB``/``KiB`` all mean 1024 bytes, ``M``/``MB``/
``MiB`` 1024**2 and so on.  That is what the kernel means when it prints ``kB`` in
``/proc/meminfo`` or ``MB`` in an OOM report, and a simulator of the kernel should not
quietly turn a "2GB" machine into 1.86GiB.  A ``page`` is :data:`PAGE_SIZE` bytes.

Numbers are parsed with :class:`~decimal.Decimal`, so ``"1.5GiB"`` is exact and a result
that is not a whole number of bytes (``"0.3KiB"``) is rounded *down*; floats never enter.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

PAGE_SIZE = 4096
"""Bytes per page (x86-64 base pages); also the unit of ``"N pages"``."""

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

NSEC_PER_SEC = 1_000_000_000
MAX_SIZE = (1 << 63) - 1
"""The largest size a config may give (the kernel's sizes and offsets are 64-bit)."""

_SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": KiB, "kb": KiB, "kib": KiB,
    "m": MiB, "mb": MiB, "mib": MiB,
    "g": GiB, "gb": GiB, "gib": GiB,
    "t": TiB, "tb": TiB, "tib": TiB,
    "page": PAGE_SIZE, "pages": PAGE_SIZE,
}

_DURATION_UNITS: dict[str, int] = {
    "ns": 1, "nsec": 1,
    "us": 1_000, "usec": 1_000, "µs": 1_000,
    "ms": 1_000_000, "msec": 1_000_000,
    "s": NSEC_PER_SEC, "sec": NSEC_PER_SEC,
    "min": 60 * NSEC_PER_SEC,
    "h": 3600 * NSEC_PER_SEC,
}
_JIFFY_UNITS = ("jiffy", "jiffies")

# "<number><optional spaces><unit>"; the sign is captured so we can say "negative".
_QUANTITY = re.compile(r"^\s*([+-]?)\s*(\d+(?:\.\d*)?|\.\d+)\s*([^\s\d.][^\s]*)?\s*$")


class Duration(NamedTuple):
    """A parsed duration.

    Wall-clock units give ``ns``; ``"N jiffies"`` gives ``jiffies=N`` (and ``ns=0``)
    because a jiffy's length depends on ``kernel.hz``, which the parser does not know.
    :func:`to_jiffies` resolves either form once HZ is known.
    """

    ns: int
    jiffies: int | None = None

    def is_zero(self) -> bool:
        """True for a zero-length duration (a NamedTuple is always truthy, so ask this)."""
        return self.ns == 0 and not self.jiffies

    def __str__(self) -> str:
        if self.jiffies is not None:
            return f"{self.jiffies} {'jiffy' if self.jiffies == 1 else 'jiffies'}"
        return format_duration(self.ns)


def _split(v: str, what: str) -> tuple[Decimal, str]:
    """Split ``"1.5 GiB"`` into ``(Decimal('1.5'), 'GiB')``; reject negatives."""
    m = _QUANTITY.match(v)
    if m is None:
        raise ValueError(f"cannot parse {what} {v!r}")
    sign, number, unit = m.groups()
    try:
        value = Decimal(number)
    except InvalidOperation:  # pragma: no cover - the regex only admits decimals
        raise ValueError(f"cannot parse {what} {v!r}") from None
    if sign == "-" and value != 0:
        raise ValueError(f"negative {what}")
    return value, unit or ""


def parse_size(v: Any) -> int:
    """Bytes from an int (bytes) or a string such as ``"512MiB"``, ``"1.5G"``, ``"100 pages"``.

    Units are binary (``KB`` == ``KiB`` == 1024), matching the kernel's printed units.
    """
    if isinstance(v, bool):
        raise ValueError("expected a size such as '64MiB'")
    if isinstance(v, int):
        if v < 0:
            raise ValueError("negative size")
        n = v
    elif not isinstance(v, str):
        raise ValueError("expected a size such as '64MiB'")
    else:
        n = _bytes(v, "size")
    if n > MAX_SIZE:
        raise ValueError("too large (a size is at most 8EiB, what 64 bits hold)")
    return n


def _bytes(v: str, what: str) -> int:
    value, unit = _split(v, what)
    if unit.lower() not in _SIZE_UNITS:
        raise ValueError(f"unknown {what} unit {unit!r}")
    return int(value * _SIZE_UNITS[unit.lower()])  # int() of a Decimal truncates: rounds down


def parse_duration(v: Any) -> Duration:
    """A :class:`Duration` from ``"2s"``, ``"10ms"``, ``"250us"``, ``"5min"``, ``"3 jiffies"``.

    A bare number is refused: "sleep 10" is ambiguous and the kind of slip that makes a
    run silently a thousand times too long.  ``{"ns": .., "jiffies": ..}`` (what
    :meth:`Config.as_dict` writes) and :class:`Duration` itself are accepted as well, so
    a normalized config read back from a trace header validates to the same value.
    """
    if isinstance(v, Duration):
        return v
    if isinstance(v, dict) and set(v) <= {"ns", "jiffies"} and "ns" in v:
        ns, jiffies = v["ns"], v.get("jiffies")
        if (isinstance(ns, int) and not isinstance(ns, bool) and ns >= 0
                and (jiffies is None or (isinstance(jiffies, int) and jiffies >= 0))):
            return Duration(ns, jiffies)
        raise ValueError("malformed duration")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        raise ValueError("duration needs a unit")
    if not isinstance(v, str):
        raise ValueError("expected a duration such as '10ms'")
    value, unit = _split(v, "duration")
    unit_name, unit = unit, unit.lower()
    if unit == "":
        raise ValueError("duration needs a unit")
    if unit in _JIFFY_UNITS:
        if value != value.to_integral_value():
            raise ValueError("jiffies must be a whole number")
        return Duration(0, int(value))
    if unit not in _DURATION_UNITS:
        raise ValueError(f"unknown duration unit {unit_name!r}")
    return Duration(int(value * _DURATION_UNITS[unit]))


def to_jiffies(d: Duration, hz: int) -> int:
    """Jiffies for *d* at *hz*.  Nanoseconds round **up** (``ceil(ns * hz / 1e9)``, in
    integers) as the kernel's ``msecs_to_jiffies`` does, so a non-zero wait never
    becomes a zero-jiffy one."""
    if d.jiffies is not None:
        return d.jiffies
    return -(-d.ns * hz // NSEC_PER_SEC)


def parse_rate(v: Any) -> int:
    """Bytes per second from ``"32MiB/s"``, ``"100 pages/s"``, ``"1GiB/sec"`` or an int.

    Zero is allowed here (callers that need progress check ``> 0`` themselves).
    """
    if isinstance(v, bool):
        raise ValueError("expected a rate such as '32MiB/s'")
    if isinstance(v, int):
        if v < 0:
            raise ValueError("negative rate")
        return v
    if not isinstance(v, str):
        raise ValueError("expected a rate such as '32MiB/s'")
    text = v.strip()
    for suffix in ("/s", "/sec"):
        if text.lower().endswith(suffix):
            text = text[: -len(suffix)]
            break
    else:
        if text.lstrip("+").strip() in ("0", "0.0"):
            return 0
        raise ValueError("rate needs '/s', e.g. '32MiB/s'")
    return _bytes(text, "rate")


def format_size(nbytes: int) -> str:
    """The largest binary unit that shows *nbytes* exactly: ``16777216`` -> ``"16MiB"``."""
    for name, mult in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if nbytes and nbytes % mult == 0:
            return f"{nbytes // mult}{name}"
    return f"{nbytes}B"


def format_duration(ns: int) -> str:
    """The largest unit that shows *ns* exactly: ``12_000_000`` -> ``"12ms"``."""
    for name, mult in (("s", NSEC_PER_SEC), ("ms", 1_000_000), ("us", 1_000)):
        if ns and ns % mult == 0:
            return f"{ns // mult}{name}"
    return f"{ns}ns"
