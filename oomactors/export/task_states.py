"""What each task is doing, derived from its events: the slices of a task's state track.

The model emits an event where a state begins and, for most states, where it ends; a few
states have no end event of their own and end where the task shows up next.  This module
turns the event stream into well-nested begin/end pairs per task, in time order, so an
exporter only has to write them out.

States, on the task's own track (nested where the kernel nests them):

* ``fast path`` -- an ``alloc`` step (``sim:step``) until the task enters the slow path,
  leaves its CPU, or does anything else;
* ``slow path`` -- ``sim:slowpath_enter`` .. ``sim:slowpath_exit``, holding:
  ``direct reclaim`` (``vmscan:mm_vmscan_direct_reclaim_begin/end``), ``compaction``
  (``compaction:mm_compaction_try_to_compact_pages`` until the task's next event that is
  not a per-zone ``mm_compaction_end``), ``oom_lock back-off`` (the trylock failed:
  ``sim:oom_lock_contended``, then one uninterruptible jiffy), ``out_of_memory``
  (``sim:out_of_memory_enter/return``);
* ``memcg reclaim`` (``vmscan:mm_vmscan_memcg_reclaim_begin/end``), ``waiting for
  oom_lock`` (a contended ``oom_lock`` outside the page allocator's slow path: the memcg
  OOM path sleeps on the mutex until its next event);
* D state: ``D: io_wait (why)`` and ``D: throttle (why)`` for the jiffies their events
  carry, ``D: mmap_lock`` from ``sim:mmap_lock wait_*`` until the task runs again.

On the task's ``fate`` track: ``dying`` from the fatal signal (a delivered SIGKILL, or
``oom:mark_victim``) to ``sched:sched_process_exit``, and ``reaped`` from
``oom:start_task_reaping`` to ``oom:finish_task_reaping``.  The oom_reaper's own track
gets ``reaping <pid>`` for the same span.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

SIGKILL = 9
STATE, FATE = "state", "fate"

# states that end at the task's next event (other than leaving its CPU)
_SOFT = {"fast path", "compaction", "waiting for oom_lock", "D: mmap_lock"}
# hard states: their end event, and the state it closes
_ENDS = {"sim:slowpath_exit": "slow path",
         "vmscan:mm_vmscan_direct_reclaim_end": "direct reclaim",
         "vmscan:mm_vmscan_memcg_reclaim_end": "memcg reclaim",
         "sim:out_of_memory_return": "out_of_memory"}
_BEGINS = {"sim:slowpath_enter": "slow path",
           "vmscan:mm_vmscan_direct_reclaim_begin": "direct reclaim",
           "vmscan:mm_vmscan_memcg_reclaim_begin": "memcg reclaim",
           "sim:out_of_memory_enter": "out_of_memory",
           "compaction:mm_compaction_try_to_compact_pages": "compaction"}


# events about a task that another task (the OOM killer, the reaper, a daemon, the
# sampler) emits: they say nothing about what the task itself is doing
_FOREIGN = {"oom:mark_victim", "oom:wake_reaper", "oom:start_task_reaping", "oom:finish_task_reaping",
            "oom:skip_task_reaping", "signal:signal_generate", "sim:oom_victim_chosen", "sim:oom_kill",
            "sim:oom_kill_shared", "sim:mmf_oom_skip", "sim:reaper_reaped", "sim:reaper_unable",
            "sim:reaper_pinned", "sim:oom_score", "sim:task_new", "kmem:rss_stat", "userspace:kill",
            "userspace:mrelease", "sim:cpuset_update", "sim:cpuset_attach"}


@dataclass(order=True)
class _Timed:
    end: int
    seq: int
    pid: int = field(compare=False)
    name: str = field(compare=False)


@dataclass
class Slice:
    """One begin (``end`` False) or end (``end`` True) of a state slice."""

    ts: int
    pid: int
    track: str           # STATE or FATE, of task ``pid``
    name: str
    end: bool
    args: dict[str, Any] = field(default_factory=dict)


class TaskStates:
    """Feed it decoded events in trace order (:meth:`feed`); it calls ``out(slice)`` with
    every begin and end, in time order.  Times are whatever the caller passes as ``ts``
    (the exporter's nanoseconds); ``jiffy`` is one jiffy in those units."""

    def __init__(self, out: Callable[[Slice], None], jiffy: int) -> None:
        self.out = out
        self.jiffy = jiffy
        self.stacks: dict[int, list[tuple[str, int]]] = {}   # (state, timer token or 0)
        self.fate: dict[int, list[str]] = {}
        self.timed: list[_Timed] = []
        self._seq = 0
        self.reaper: int | None = None

    # --- plumbing -------------------------------------------------------------------
    def _open(self, ts: int, pid: int, name: str, args: dict[str, Any] | None = None, token: int = 0) -> None:
        self.stacks.setdefault(pid, []).append((name, token))
        self.out(Slice(ts, pid, STATE, name, False, args or {}))

    def _close_top(self, ts: int, pid: int) -> None:
        name, _token = self.stacks[pid].pop()
        self.out(Slice(ts, pid, STATE, name, True))

    def _close_soft(self, ts: int, pid: int, keep: str | None = None) -> None:
        """The task acts again: states without an end event of their own are over, and
        so is a timed sleep (it may end a few ns before its timer, by event order)."""
        stack = self.stacks.get(pid)
        while stack and (stack[-1][0] in _SOFT or stack[-1][1]) and stack[-1][0] != keep:
            self._close_top(ts, pid)

    def _close_through(self, ts: int, pid: int, name: str, token: int | None = None) -> None:
        """Close ``name`` (the instance with timer ``token``, if given) and what it holds."""
        stack = self.stacks.get(pid)
        if not stack or not any(n == name and (token is None or t == token) for n, t in stack):
            return
        while stack:
            top, tok = stack[-1]
            self._close_top(ts, pid)
            if top == name and (token is None or tok == token):
                return

    def _close_all(self, ts: int, pid: int) -> None:
        while self.stacks.get(pid):
            self._close_top(ts, pid)
        for name in reversed(self.fate.pop(pid, [])):
            self.out(Slice(ts, pid, FATE, name, True))

    def _fate(self, ts: int, pid: int, name: str, end: bool, args: dict[str, Any] | None = None) -> None:
        names = self.fate.setdefault(pid, [])
        if end:
            if name not in names:
                return
            while names:
                top = names.pop()
                self.out(Slice(ts, pid, FATE, top, True))
                if top == name:
                    return
        elif name not in names:
            names.append(name)
            self.out(Slice(ts, pid, FATE, name, False, args or {}))

    def _timed(self, ts: int, pid: int, name: str, length: int, args: dict[str, Any]) -> None:
        self._seq += 1
        self._open(ts, pid, name, args, token=self._seq)
        heapq.heappush(self.timed, _Timed(ts + max(1, length), self._seq, pid, name))

    def advance(self, ts: int) -> None:
        """End every timed state due by ``ts``."""
        while self.timed and self.timed[0].end <= ts:
            t = heapq.heappop(self.timed)
            self._close_through(t.end, t.pid, t.name, t.seq)

    # --- the rules ----------------------------------------------------------------
    def feed(self, ts: int, ev: dict[str, Any]) -> None:
        self.advance(ts)
        name, pid = ev["event"], ev["pid"]
        if name == "sched:sched_switch":
            prev, nxt = ev["prev_pid"], ev["next_pid"]
            if prev > 0 and self.stacks.get(prev) and self.stacks[prev][-1][0] == "fast path":
                self._close_top(ts, prev)       # left the CPU: the fast path is over
            if nxt > 0:
                self._close_soft(ts, nxt, keep="fast path")
            return
        if pid <= 0 or name.startswith("sim:oom_lock_") and name != "sim:oom_lock_contended":
            return
        if name == "sched:sched_process_exit":
            self._close_all(ts, pid)
            return
        if name == "compaction:mm_compaction_end":
            return
        if name not in _FOREIGN:
            self._close_soft(ts, pid)
        if name in _ENDS:
            self._close_through(ts, pid, _ENDS[name])
        elif name in _BEGINS:
            self._open(ts, pid, _BEGINS[name], _args(ev))
        elif name == "sim:step" and ev["op"] == "alloc":
            self._open(ts, pid, "fast path", {"pages": ev["pages"]})
        elif name == "sim:oom_lock_contended":
            if any(n == "slow path" for n, _t in self.stacks.get(pid, ())):
                self._timed(ts, pid, "oom_lock back-off", self.jiffy, {})
            else:
                self._open(ts, pid, "waiting for oom_lock")
        elif name == "sim:io_wait":
            self._timed(ts, pid, f"D: io_wait ({ev['why']})", ev["jiffies"] * self.jiffy, {"pages": ev["pages"]})
        elif name == "sim:throttle":
            self._timed(ts, pid, f"D: throttle ({ev['why']})", ev["jiffies"] * self.jiffy, {})
        elif name == "sim:mmap_lock" and ev["op"].startswith("wait_"):
            self._open(ts, pid, "D: mmap_lock", {"op": ev["op"]})
        elif name == "oom:mark_victim":
            self._fate(ts, pid, "dying", False, {"cause": "oom victim"})
        elif name == "signal:signal_generate" and ev["sig"] == SIGKILL and ev["result"] == 0:
            self._fate(ts, pid, "dying", False, {"cause": "SIGKILL"})
        elif name == "oom:start_task_reaping":
            self._fate(ts, pid, "reaped", False)
            if self.reaper is not None:
                self._open(ts, self.reaper, f"reaping {pid}")
        elif name == "oom:finish_task_reaping":
            self._fate(ts, pid, "reaped", True)
            if self.reaper is not None:
                self._close_through(ts, self.reaper, f"reaping {pid}")
        elif name == "sim:task_new" and ev["comm"] == "oom_reaper" and ev["kthread"]:
            self.reaper = pid

    def finish(self, ts: int) -> None:
        """Close everything still open at the end of the run."""
        self.advance(ts)
        for pid in sorted(set(self.stacks) | set(self.fate)):
            self._close_all(ts, pid)

    def open_states(self) -> Iterator[tuple[int, list[str]]]:
        return ((pid, [n for n, _t in s]) for pid, s in self.stacks.items() if s)


def _args(ev: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ev.items() if k not in ("t", "event", "cpu", "pid")
            and isinstance(v, (int, str, float))}
