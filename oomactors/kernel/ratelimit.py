"""Printk rate limiting (lib/ratelimit.c ___ratelimit, Linux 5.10).

A state allows ``burst`` messages per ``interval`` jiffies.  The window starts at the first
call and is renewed only once it has *strictly* passed (``time_is_before_jiffies(begin +
interval)``); at renewal, if messages were suppressed, the kernel first prints
"<func>: <n> callbacks suppressed".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine

DEFAULT_RATELIMIT_INTERVAL_S = 5
DEFAULT_RATELIMIT_BURST = 10


class RatelimitState:
    """struct ratelimit_state (``interval`` in jiffies)."""

    __slots__ = ("interval", "burst", "begin", "printed", "missed")

    def __init__(self, interval: int, burst: int) -> None:
        self.interval = interval
        self.burst = burst
        self.begin: int | None = None
        self.printed = 0
        self.missed = 0


def ___ratelimit(m: "Machine", rs: RatelimitState, func: str, pid: int = -1) -> bool:
    """True if the caller may print."""
    if not rs.interval:
        return True
    now = m.now
    if rs.begin is None:
        rs.begin = now
    if now > rs.begin + rs.interval:
        if rs.missed:
            m.emit("sim:callbacks_suppressed", pid, func, rs.missed)
            rs.missed = 0
        rs.begin = now
        rs.printed = 0
    if rs.burst and rs.burst > rs.printed:
        rs.printed += 1
        return True
    rs.missed += 1
    return False
