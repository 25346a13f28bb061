"""A recorded schedule: the choices of a run that departed from the default, and their
text and JSON forms (:mod:`oomactors.schedule` says what the choices mean).

**The compact form** (:meth:`Schedule.dumps`): choices separated by ``"; "``, each
``INDEX:POINT@PID=ACTION`` with ACTION ``y`` (yield), ``+K`` (held K jiffies) or ``>N``
(actor N ran first), e.g. ``"812:may_oom.locked@7=+5; 900:oom.scan@7=>12"``.  A lenient
entry (drawn by Hypothesis, not recorded from a run) leaves out what it does not check:
``"812=+5"``, ``"812=~2"`` (the second other actor offered runs first).  The JSON form
(:meth:`Schedule.to_json`) is a list of ``[index, pid, point, action]`` (pid and point
``null`` in lenient entries; a pick's action the string ``">N"`` or ``"~J"``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from .errors import InputError, OomactorsError

YIELD = -1

def pick(actor: int) -> int:
    """The action "actor number ``actor`` runs first" (a pick), as an int: -2 - actor."""
    return -2 - actor


def picked(action: int) -> int | None:
    """The actor number a pick action names (None: not a pick)."""
    return -2 - action if action <= -2 else None


def default_menu(hz: int = 250) -> tuple[int, ...]:
    """The actions a random draw picks from: yield, 1, 2 and 5 jiffies, and HZ/10."""
    return tuple(dict.fromkeys((YIELD, 1, 2, 5, max(1, hz // 10))))


class ScheduleDivergence(OomactorsError):
    """A replayed schedule no longer fits the run (the code or the config changed)."""

    exit_status = 2


class Choice(NamedTuple):
    """One non-default decision: at decision point ``index``, task ``pid`` at ``point``
    did ``action`` (-1 yield, k > 0 held k jiffies).  ``pid``/``point`` are None in a
    lenient entry (drawn, not recorded): a replay does not check them."""

    index: int
    pid: int | None
    point: str | None
    action: int

    @property
    def target(self) -> int | None:
        """A pick's actor number (in a lenient entry: the n-th other actor offered)."""
        return picked(self.action)

    def act(self) -> str:
        """The action's text: ``y``, ``+K``, ``>N`` (actor N runs first) or, lenient, ``~J``."""
        if self.action == YIELD:
            return "y"
        if self.action > 0:
            return f"+{self.action}"
        return f"{'~' if self.pid is None else '>'}{picked(self.action)}"

    def text(self) -> str:
        act = self.act()
        if self.pid is None or self.point is None:
            return f"{self.index}={act}"
        return f"{self.index}:{self.point}@{self.pid}={act}"


_ENTRY = re.compile(r"^(\d+)(?::([A-Za-z0-9_.]+)@(\d+))?=(y|\+\d+|>\d+|~\d+)$")


def _parse_action(text: str, lenient: bool, where: str) -> int:
    """An action's text (``y``, ``+K``, ``>N`` in a full entry, ``~J`` J >= 1 in a lenient one)."""
    if text == "y":
        return YIELD
    n = int(text[1:])
    if text[0] == "+":
        return _check_action(n, where)
    if text[0] == "~" and not lenient:
        raise InputError(f"{where}: {text} is the lenient form (INDEX=~J: the J-th other actor offered); "
                         f"a full entry (INDEX:POINT@PID=...) names the actor that runs first as >N (actor N)")
    if text[0] == ">" and lenient:
        raise InputError(f"{where}: {text} names actor N, which only a full entry (INDEX:POINT@PID=>N) can do; "
                         f"a lenient entry (INDEX=...) picks the J-th other actor offered as ~J (J >= 1)")
    if lenient and n < 1:
        raise InputError(f"{where}: {text}: ~J counts the other actors offered from 1, so J must be at least 1")
    return pick(n)


def _check_action(action: Any, where: str) -> int:
    if isinstance(action, bool) or not isinstance(action, int) or action == 0 or action < YIELD:
        raise InputError(f"{where}: action must be -1 (yield), a positive number of jiffies "
                         f"or \">N\" (actor N runs first), not {action!r}")
    return action


@dataclass(frozen=True)
class Schedule:
    """The recorded non-default choices of a run, in decision order."""

    choices: tuple[Choice, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(sorted(self.choices, key=lambda c: c.index)))

    def __len__(self) -> int:
        return len(self.choices)

    def __iter__(self):
        return iter(self.choices)

    def __bool__(self) -> bool:
        return bool(self.choices)

    @property
    def lenient(self) -> bool:
        """True if some entry does not name its pid and point."""
        return any(c.pid is None or c.point is None for c in self.choices)

    # --- the compact text form ---------------------------------------------------
    def dumps(self) -> str:
        return "; ".join(c.text() for c in self.choices)

    @classmethod
    def loads(cls, text: str, source: str = "schedule") -> "Schedule":
        from .sched import POINTS
        out: list[Choice] = []
        seen: set[int] = set()
        for n, raw in enumerate(re.split(r"[;\s]+", text.strip())):
            if not raw:
                continue
            m = _ENTRY.match(raw)
            if m is None:
                raise InputError(f"{source}: entry {n} {raw!r}: expected INDEX:POINT@PID=ACTION "
                                 f"or INDEX=ACTION (ACTION y, +K, >ACTOR or, lenient, ~J)")
            index = int(m[1])
            point = m[2]
            if point is not None and point not in POINTS:
                raise InputError(f"{source}: entry {n} {raw!r}: unknown scheduling point {point!r}")
            if index in seen:
                raise InputError(f"{source}: entry {n} {raw!r}: decision {index} given twice")
            seen.add(index)
            action = _parse_action(m[4], m[3] is None, f"{source}: entry {n} {raw!r}")
            out.append(Choice(index, int(m[3]) if m[3] is not None else None, point, action))
        return cls(tuple(out))

    # --- JSON --------------------------------------------------------------------
    def to_json(self) -> list[list[Any]]:
        """A JSON-able list of ``[index, pid, point, action]``; a pick's action is the
        string ``">N"`` (actor N runs first; ``"~J"`` in a lenient entry)."""
        return [[c.index, c.pid, c.point, c.action if c.action >= YIELD else c.act()]
                for c in self.choices]

    @classmethod
    def from_json(cls, data: Any, source: str = "schedule") -> "Schedule":
        """From :meth:`to_json`'s list (or a JSON text of it, or the compact text form)."""
        from .sched import POINTS
        if isinstance(data, str):
            stripped = data.strip()
            if not stripped.startswith("["):
                return cls.loads(stripped, source)
            try:
                data = json.loads(stripped)
            except ValueError as e:
                raise InputError(f"{source}: not JSON: {e}") from e
        if not isinstance(data, list):
            raise InputError(f"{source}: expected a list of [index, pid, point, action]")
        out: list[Choice] = []
        seen: set[int] = set()
        for n, item in enumerate(data):
            where = f"{source}[{n}]"
            if not isinstance(item, list) or len(item) != 4:
                raise InputError(f"{where}: expected [index, pid, point, action]")
            index, pid, point, action = item
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise InputError(f"{where}: index must be a non-negative integer")
            if index in seen:
                raise InputError(f"{where}: decision {index} given twice")
            seen.add(index)
            if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int)):
                raise InputError(f"{where}: pid must be an integer or null")
            if point is not None and point not in POINTS:
                raise InputError(f"{where}: unknown scheduling point {point!r}")
            if isinstance(action, str) and re.fullmatch(r"[>~]\d+", action):
                action = _parse_action(action, pid is None, where)
            else:
                action = _check_action(action, where)
            out.append(Choice(index, pid, point, action))
        return cls(tuple(out))

    def without_anchors(self) -> "Schedule":
        """The same choices as lenient entries (index and action only); a pick stays a full
        entry (only a full entry can name an actor)."""
        return Schedule(tuple(c if c.action <= -2 else Choice(c.index, None, None, c.action)
                              for c in self.choices))


__all__ = ["YIELD", "Choice", "Schedule", "ScheduleDivergence", "default_menu", "pick", "picked"]
