"""Android's low memory killer daemon (system/memory/lmkd) in PSI mode: ``lmkd``.

Since Android 10 lmkd is woken by PSI triggers on ``/proc/pressure/memory`` instead of
vmpressure, and decides with the "new strategy" (``use_minfree_levels = false``,
``mp_event_psi`` in lmkd.cpp):

* two triggers: **medium** = ``some`` stall of ``psi_partial_stall_ms`` (70 ms; 200 on a
  low-RAM device) within 1 s, **critical** = ``full`` stall of ``psi_complete_stall_ms``
  (700 ms) within 1 s.  An event starts *polling*: the handler runs again every 100 ms (10 ms
  while swap is low or right after a kill) until 1 s has passed since the last event, kill
  or direct reclaim;
* each run reads /proc/meminfo, /proc/vmstat and (once a minute) /proc/zoneinfo, and goes
  down a ladder of **kill reasons**, the first that holds deciding the lowest
  ``oom_score_adj`` it may kill (``min_score_adj``, 0 unless said otherwise):

  * PRESSURE_AFTER_KILL -- the first run after a kill finds free memory still under the
    min watermark: ``pressure_after_kill_min_score`` (0);
  * NOT_RESPONDING -- a critical (full stall) event: 0;
  * LOW_SWAP_AND_THRASHING -- swap is low and thrashing is above ``thrashing_limit``: 201,
    or 0 when free memory is under the min watermark or thrashing has reached
    ``thrashing_limit_critical``;
  * LOW_MEM_AND_SWAP -- swap is low and free memory under the low watermark: as above;
  * LOW_MEM_AND_SWAP_UTIL -- under the low watermark with more than ``swap_util_max`` % of
    the swappable memory in swap (off at its default, 100): 0;
  * LOW_MEM_AND_THRASHING -- under the low watermark and thrashing above the current
    (decaying) limit: 201, 0 at critical thrashing;
  * DIRECT_RECL_AND_THRASHING -- direct reclaim ran since the last look and thrashing is
    above the limit: the same;
  * LOW_FILECACHE_AFTER_THRASHING -- after thrashing, the file LRU is under
    ``filecache_min_kb``: 201;
  * LOW_MEM -- under the low watermark: ``lowmem_min_oom_score`` (701, at least 201).

  "Under the low watermark" is MemFree below the sum over zones of the low watermark plus
  the zone's largest lowmem reserve (and likewise for min).

  A PSI ``full avg10`` above ``stall_limit_critical`` (100: never) lowers any floor to 0.
  "Swap low" is free swap under ``swap_free_low_percentage`` (10) % of the swap size, free
  swap being at most ``swap_compression_ratio`` (1) times MemFree + Inactive(file) (lmkd's
  zram rule).  "Thrashing" is the page cache refaulted (``workingset_refault_file``) since
  the last reset, in percent of the file LRU at that reset; it resets every second (the
  previous window's figure carried over, halved per window passed) and after every kill.
  A kill for thrashing cuts the limit by ``thrashing_limit_decay`` % until the next reset.

* the victim (``find_and_kill_process``): from oom_score_adj 1000 down to ``min_score_adj``,
  the first adj that has a process gives it -- the largest RSS (VmRSS) at adj <= 200
  (perceptible) or with ``kill_heaviest_task``, otherwise the process whose adj was set
  longest ago (the tail of lmkd's per-adj list).  Processes below ``min_score_adj`` -- and so
  every native service at a negative adj -- are never killed.  The kill is SIGKILL, then
  ``process_mrelease`` reaps the victim's memory at once (lmkd's reaper thread, Android 12+;
  ``reaper = false`` leaves it to the victim's exit).
* lmkd then waits for the victim to die (a pidfd), at most ``kill_timeout_ms`` (100 ms): a
  PSI event meanwhile is skipped.

Android's oom_score_adj conventions (ProcessList.java) for writing test workloads: cached
apps 900..999, service B 800, previous app 700, home 600, service 500, heavy-weight 400,
backup 300, perceptible 200 (perceptible low 250), visible 100, foreground 0, persistent
services -700, persistent -800, system -900, native daemons -1000.

Each kill is a ``userspace:kill`` event whose ``reason`` reads
``"<REASON>: <lmkd's description>; min_score_adj=<n>"``.

Not modelled: the vmpressure and minfree-levels strategies, DIRECT_RECL_STUCK (it needs
lmkd's BPF memevents), per-app memcg soft limits, the watchdog, and the LMK_PROCPRIO socket
(every user process counts as registered with its current oom_score_adj).
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from .api import Daemon

SIGKILL = 9
OOM_SCORE_ADJ_MAX = 1000
PERCEPTIBLE_APP_ADJ = 200
PREVIOUS_APP_ADJ = 700
PSI_POLL_PERIOD_SHORT_MS = 10
PSI_POLL_PERIOD_LONG_MS = 100
THRASHING_RESET_INTERVAL_MS = 1000
WATERMARK_REFRESH_MS = 60000

# enum vmpressure_level (only medium and critical are used in PSI mode)
MEDIUM, CRITICAL = 1, 2
LEVEL_NAMES = {MEDIUM: "medium", CRITICAL: "critical"}

# enum zone_watermark
WMARK_MIN, WMARK_LOW, WMARK_HIGH, WMARK_NONE = 0, 1, 2, 3

# the reclaim state mp_event_psi infers from vmstat
NO_RECLAIM, KSWAPD_RECLAIM, DIRECT_RECLAIM = 0, 1, 2

# polling updates (enum polling_update)
DO_NOT_CHANGE, START, PAUSE, RESUME = 0, 1, 2, 3

Pct = Annotated[int, Strict(), Field(ge=0, le=100)]


class LmkdParams(BaseModel):
    """The ``ro.lmk.*`` properties (``[policy]`` keys of ``name = "lmkd"``).  Unset ones
    take lmkd's defaults, which depend on ``low_ram`` (``ro.config.low_ram``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low_ram: Annotated[bool, Strict()] = False
    psi_partial_stall_ms: Optional[Annotated[int, Strict(), Field(ge=0)]] = None   # 70, low-RAM 200
    psi_complete_stall_ms: Annotated[int, Strict(), Field(ge=0)] = 700
    psi_window_size_ms: Annotated[int, Strict(), Field(ge=500, le=10000)] = 1000
    thrashing_limit: Optional[Annotated[int, Strict(), Field(ge=0)]] = None        # 100, low-RAM 30
    thrashing_limit_decay: Optional[Pct] = None                                    # 10, low-RAM 50
    thrashing_limit_critical: Optional[Annotated[int, Strict(), Field(ge=0)]] = None  # 3 x limit
    swap_free_low_percentage: Pct = 10
    swap_util_max: Pct = 100
    swap_compression_ratio: Annotated[int, Strict(), Field(ge=0)] = 1
    kill_timeout_ms: Annotated[int, Strict(), Field(ge=0)] = 100
    kill_heaviest_task: Annotated[bool, Strict()] = False
    filecache_min_kb: Annotated[int, Strict(), Field(ge=0)] = 0
    stall_limit_critical: Annotated[int, Strict(), Field(ge=0)] = 100
    lowmem_min_oom_score: Annotated[int, Strict(), Field(ge=-1000, le=1001)] = PREVIOUS_APP_ADJ + 1
    pressure_after_kill_min_score: Annotated[int, Strict(), Field(ge=-1000, le=1001)] = 0
    reaper: Annotated[bool, Strict()] = True   # process_mrelease after the kill (Android 12+)

    @model_validator(mode="after")
    def _stalls_fit_the_window(self) -> "LmkdParams":
        for key in ("psi_partial_stall_ms", "psi_complete_stall_ms"):
            v = getattr(self, key)
            if v is not None and v > self.psi_window_size_ms:
                raise ValueError(f"{key} ({v}) is longer than psi_window_size_ms ({self.psi_window_size_ms})")
        return self

    # --- the values lmkd ends up with (update_props) ---------------------------------------
    @property
    def partial_stall_ms(self) -> int:
        v = self.psi_partial_stall_ms
        return (200 if self.low_ram else 70) if v is None else v

    @property
    def thrashing_limit_pct(self) -> int:
        v = self.thrashing_limit
        return (30 if self.low_ram else 100) if v is None else v

    @property
    def thrashing_decay_pct(self) -> int:
        v = self.thrashing_limit_decay
        return (50 if self.low_ram else 10) if v is None else v

    @property
    def thrashing_critical_pct(self) -> int:
        v = self.thrashing_limit_critical
        return self.thrashing_limit_pct * 3 if v is None else v

    @property
    def lowmem_min_score(self) -> int:
        return max(PERCEPTIBLE_APP_ADJ + 1, self.lowmem_min_oom_score)


class Mem:
    """What mp_event_psi takes from /proc/meminfo, in pages."""

    __slots__ = ("free", "total_swap", "free_swap", "anon_lru", "shmem", "inactive_file")

    def __init__(self, mi: Any, inactive_file: int) -> None:
        kb = 4  # kB per page
        self.free = mi.MemFree // kb
        self.total_swap = mi.SwapTotal // kb
        self.free_swap = mi.SwapFree // kb
        self.shmem = mi.Shmem // kb
        self.anon_lru = mi.AnonPages // kb + self.shmem   # Active(anon) + Inactive(anon)
        self.inactive_file = inactive_file


class Lmkd(Daemon):
    """Android's lmkd, PSI mode: the kill-reason ladder, oom_score_adj bands."""

    name = "lmkd"
    description = "Android's lmkd (PSI mode): kill-reason ladder, highest oom_score_adj first"
    Params = LmkdParams
    comm = "lmkd"
    uid = 1069              # AID_LMKD
    oom_score_adj = -1000   # a native daemon

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        p = self.params
        # mp_event_psi's static state
        self.init_ws_refault = 0
        self.prev_workingset_refault = 0
        self.base_file_lru = 0
        self.init_pgscan_kswapd = 0
        self.init_pgscan_direct = 0
        self.killing = False
        self.thrashing_limit = p.thrashing_limit_pct
        self.watermarks: tuple[int, int, int] | None = None   # min, low, high (pages)
        self.wmark_update_ms = 0
        self.thrashing_reset_ms = 0
        self.prev_thrash_growth = 0
        self.check_filecache = False
        self.max_thrashing = 0
        # the kill in flight (start_wait_for_proc_kill)
        self.last_kill_pid: int | None = None
        self.last_kill_ms = 0
        # polling (struct polling_params)
        self.poll_handler: Optional[int] = None
        self.paused_handler: Optional[int] = None
        self.poll_start_ms = 0
        self.last_poll_ms = 0
        self.polling_interval_ms = PSI_POLL_PERIOD_LONG_MS
        self.update = DO_NOT_CHANGE
        # lmkd's per-adj lists: pid -> (adj, order of registration)
        self.registry: dict[int, tuple[int, int]] = {}
        self.removed: set[int] = set()   # killed (pid_remove'd): never registered again
        self._seq = 0
        self.decisions: list[tuple[int, str, int]] = []   # (ms, reason, min_score_adj) of each kill attempt

    # --- the main loop (mainloop) ---------------------------------------------------------
    async def run(self, host: Any) -> None:
        p = self.params
        window_us = p.psi_window_size_ms * 1000
        self.triggers: dict[int, Any] = {}
        if p.partial_stall_ms:
            self.triggers[MEDIUM] = host.psi_trigger("/", "some", p.partial_stall_ms * 1000, window_us)
        if p.psi_complete_stall_ms:
            self.triggers[CRITICAL] = host.psi_trigger("/", "full", p.psi_complete_stall_ms * 1000, window_us)
        self._by_trigger = {id(t): lvl for lvl, t in self.triggers.items()}
        self.psi_period = max(1, host.ms_to_jiffies(p.psi_window_size_ms / 10))
        self.next_psi_poll = host.now
        self.refresh_registry(host)
        # lmkd starts at boot, so its first thrashing window (counted from boot) is long
        # gone by the first event; a run starts its daemon at once: start the window now
        ws = host.workingset()
        self.base_file_lru = ws["nr_inactive_file"] + ws["nr_active_file"]
        self.init_ws_refault = self.prev_workingset_refault = ws["workingset_refault_file"]
        self.thrashing_reset_ms = host.now_ms
        while True:
            if self.poll_handler is not None:
                if self.update == RESUME:
                    poll_now, levels, died = True, [], False  # just resumed: poll at once
                else:
                    since = host.now_ms - self.last_poll_ms
                    delay = self.polling_interval_ms - since if since < self.polling_interval_ms \
                        else self.polling_interval_ms
                    levels, died = await self._epoll(host, delay)
                    poll_now = host.now_ms - self.last_poll_ms >= self.polling_interval_ms
                if poll_now:
                    await self._call_handler(host, self.poll_handler, 0)
            elif p.kill_timeout_ms and self.last_kill_pid is not None:
                delay = p.kill_timeout_ms - (host.now_ms - self.last_kill_ms)
                levels, died = await self._epoll(host, delay) if delay > 0 else ([], False)
                if not levels and not died:
                    self._stop_wait_for_kill()      # the kill notification timed out
                    if self.paused_handler is not None:
                        self.update = RESUME
                        self._resume_polling(host)
            else:
                levels, died = await self._epoll(host, None)
            if died:                                 # kill_done_handler
                await self._call_handler(host, None, 1)
            for lvl in levels:
                await self._call_handler(host, lvl, 1)

    async def _epoll(self, host: Any, timeout_ms: float | None) -> tuple[list[int], bool]:
        """epoll_wait on the PSI triggers and the victim's pidfd: the levels whose trigger
        fired, and whether the victim died.  The kernel's trigger poller runs every
        window/10 (100 ms)."""
        deadline = None if timeout_ms is None else host.now + host.ms_to_jiffies(max(0, timeout_ms))
        while True:
            died = self.last_kill_pid is not None and not host.is_alive(self.last_kill_pid)
            levels: list[int] = []
            if host.now >= self.next_psi_poll and self.triggers:
                fired = await host.wait_psi(list(self.triggers.values()), 0)
                self.next_psi_poll = host.now + self.psi_period
                levels = sorted(self._by_trigger[id(t)] for t in fired)
            if levels or died:
                return levels, died
            if deadline is not None and host.now >= deadline:
                return [], False
            wake = self.next_psi_poll if self.triggers else None
            if deadline is not None:
                wake = deadline if wake is None else min(wake, deadline)
            if self.last_kill_pid is not None:
                wake = host.now + 1 if wake is None else min(wake, host.now + 1)
            if wake is None:  # nothing can ever wake us
                await host.sleep_jiffies(host.hz * 3600)
            else:
                await host.sleep_until(max(wake, host.now + 1))

    async def _call_handler(self, host: Any, level: Optional[int], events: int) -> None:
        self.update = DO_NOT_CHANGE
        if level is None:
            self._stop_wait_for_kill()              # kill_done_handler: the victim is gone
            self.update = RESUME
        else:
            await self.mp_event_psi(host, level, events)
        now = host.now_ms
        if level is not None and self.poll_handler == level:
            self.last_poll_ms = now
        if self.update == START:
            self.poll_start_ms = now
            self.poll_handler = level
        elif self.update == PAUSE:
            self.paused_handler = level
            self.poll_handler = None
        elif self.update == RESUME:
            self._resume_polling(host)
        elif self.poll_handler is not None and now - self.poll_start_ms > self.params.psi_window_size_ms:
            self.poll_handler = None                # polled for a whole PSI window: stop

    def _resume_polling(self, host: Any) -> None:
        self.poll_start_ms = host.now_ms
        self.poll_handler = self.paused_handler
        self.polling_interval_ms = PSI_POLL_PERIOD_SHORT_MS
        self.paused_handler = None

    def _stop_wait_for_kill(self) -> None:
        self.last_kill_pid = None

    # --- the decision (mp_event_psi) -------------------------------------------------------
    async def mp_event_psi(self, host: Any, level: int, events: int) -> None:
        p = self.params
        now = host.now_ms
        self.refresh_registry(host)   # ActivityManager keeps lmkd's lists current
        kill_pending = self.last_kill_pid is not None
        if kill_pending and (p.kill_timeout_ms == 0 or now - self.last_kill_ms < p.kill_timeout_ms):
            return self._no_kill(events, NO_RECLAIM, False)   # still killing: skip
        self._stop_wait_for_kill()

        vs = host.vmstat()
        ws = host.workingset()
        refault = ws["workingset_refault_file"]
        file_lru = ws["nr_inactive_file"] + ws["nr_active_file"]
        mi = Mem(host.meminfo(), ws["nr_inactive_file"])

        cycle_after_kill = False
        if self.killing:                           # reset after a kill
            self.killing = False
            cycle_after_kill = True
            self.base_file_lru = file_lru
            self.init_ws_refault = refault
            self.thrashing_reset_ms = now
            self.prev_thrash_growth = 0

        swap_low_threshold = 0
        swap_is_low = False
        if p.swap_free_low_percentage:
            swap_low_threshold = mi.total_swap * p.swap_free_low_percentage // 100
            swap_is_low = self.free_swap(mi) < swap_low_threshold

        # what reclaim did since the last look
        if vs["pgscan_direct"] != self.init_pgscan_direct:
            self.init_pgscan_direct = vs["pgscan_direct"]
            self.init_pgscan_kswapd = vs["pgscan_kswapd"]
            reclaim = DIRECT_RECLAIM
        elif vs["pgscan_kswapd"] != self.init_pgscan_kswapd:
            self.init_pgscan_kswapd = vs["pgscan_kswapd"]
            reclaim = KSWAPD_RECLAIM
        elif refault == self.prev_workingset_refault:
            return self._no_kill(events, NO_RECLAIM, swap_is_low)  # neither reclaiming nor thrashing
        else:
            reclaim = NO_RECLAIM
        self.prev_workingset_refault = refault

        thrashing = 0
        since_reset = now - self.thrashing_reset_ms
        if since_reset > THRASHING_RESET_INTERVAL_MS:
            self.prev_thrash_growth = (refault - self.init_ws_refault) * 100 // (self.base_file_lru + 1)
            windows = since_reset // THRASHING_RESET_INTERVAL_MS
            # keep an over-the-limit figure of the window just closed: nobody could be killed
            if windows > 1 or self.prev_thrash_growth < self.thrashing_limit:
                self.prev_thrash_growth >>= windows
            self.base_file_lru = file_lru
            self.init_ws_refault = refault
            self.thrashing_reset_ms = now
            self.thrashing_limit = p.thrashing_limit_pct
        else:
            thrashing = (refault - self.init_ws_refault) * 100 // (self.base_file_lru + 1)
        thrashing += self.prev_thrash_growth
        self.max_thrashing = max(self.max_thrashing, thrashing)

        if self.watermarks is None or now - self.wmark_update_ms > WATERMARK_REFRESH_MS:
            self.watermarks = calc_zone_watermarks(host.zoneinfo())
            self.wmark_update_ms = now
        wmark = lowest_watermark(mi.free, self.watermarks)
        critical_stall = host.pressure("/").full.avg10 / 100 > p.stall_limit_critical

        reason, desc, min_score_adj, cut_limit = self.kill_reason(
            level, events, cycle_after_kill, wmark, swap_is_low, swap_low_threshold, mi, thrashing,
            reclaim, file_lru)

        if reason is not None:
            if critical_stall:
                min_score_adj = 0                  # the system is stalled: perceptible apps too
            self.decisions.append((now, reason, min_score_adj))
            pages = await self.find_and_kill_process(host, min_score_adj, now, f"{reason}: {desc}; "
                                                     f"min_score_adj={min_score_adj}")
            if pages > 0:
                self.killing = True
                self.max_thrashing = 0
                if cut_limit:
                    self.thrashing_limit = self.thrashing_limit * (100 - p.thrashing_decay_pct) // 100
        self._no_kill(events, reclaim, swap_is_low)

    def _no_kill(self, events: int, reclaim: int, swap_is_low: bool) -> None:
        """The end of mp_event_psi: decide about polling."""
        if self.last_kill_pid is not None:
            self.update = PAUSE                    # wait for the victim's death instead
            return
        if events or self.killing or reclaim == DIRECT_RECLAIM:
            self.update = START
        self.polling_interval_ms = (PSI_POLL_PERIOD_SHORT_MS if swap_is_low or self.killing
                                    else PSI_POLL_PERIOD_LONG_MS)

    def free_swap(self, mi: Mem) -> int:
        """get_free_swap: with zram, swap space is only as good as the memory to back it."""
        ratio = self.params.swap_compression_ratio
        if ratio:
            return min(mi.free_swap, (mi.free + mi.inactive_file) * ratio)
        return mi.free_swap

    def kill_reason(self, level: int, events: int, cycle_after_kill: bool, wmark: int,
                    swap_is_low: bool, swap_low_threshold: int, mi: Mem, thrashing: int,
                    reclaim: int, file_lru: int) -> tuple[Optional[str], str, int, bool]:
        """The ladder: (reason or None, description, min_score_adj, cut the thrashing limit)."""
        p = self.params
        critical = p.thrashing_critical_pct
        which = "min" if wmark < WMARK_LOW else "low"
        perceptible = PERCEPTIBLE_APP_ADJ + 1
        kb = 4
        if cycle_after_kill and wmark < WMARK_LOW:
            return ("PRESSURE_AFTER_KILL", "min watermark is breached even after kill",
                    p.pressure_after_kill_min_score, False)
        if level == CRITICAL and events:
            return "NOT_RESPONDING", "device is not responding", 0, False
        if swap_is_low and thrashing > p.thrashing_limit_pct:
            self.check_filecache = True
            floor = perceptible if wmark > WMARK_MIN and thrashing < critical else 0
            return ("LOW_SWAP_AND_THRASHING",
                    f"device is low on swap ({self.free_swap(mi) * kb}kB < {swap_low_threshold * kb}kB) "
                    f"and thrashing ({thrashing}%)", floor, False)
        if swap_is_low and wmark < WMARK_HIGH:
            floor = perceptible if wmark > WMARK_MIN and thrashing < critical else 0
            return ("LOW_MEM_AND_SWAP",
                    f"{which} watermark is breached and swap is low "
                    f"({self.free_swap(mi) * kb}kB < {swap_low_threshold * kb}kB)", floor, False)
        if wmark < WMARK_HIGH and p.swap_util_max < 100:
            util = swap_utilization(mi, self.free_swap(mi))
            if util > p.swap_util_max:
                return ("LOW_MEM_AND_SWAP_UTIL",
                        f"{which} watermark is breached and swap utilization is high "
                        f"({util}% > {p.swap_util_max}%)", 0, False)
        if wmark < WMARK_HIGH and thrashing > self.thrashing_limit:
            self.check_filecache = True
            return ("LOW_MEM_AND_THRASHING", f"{which} watermark is breached and thrashing ({thrashing}%)",
                    perceptible if thrashing < critical else 0, True)
        if reclaim == DIRECT_RECLAIM and thrashing > self.thrashing_limit:
            self.check_filecache = True
            return ("DIRECT_RECL_AND_THRASHING", f"device is in direct reclaim and thrashing ({thrashing}%)",
                    perceptible if thrashing < critical else 0, True)
        if self.check_filecache:
            if file_lru * kb < p.filecache_min_kb:
                return ("LOW_FILECACHE_AFTER_THRASHING",
                        f"filecache is low ({file_lru * kb}kB < {p.filecache_min_kb}kB) after thrashing",
                        perceptible, False)
            self.check_filecache = False           # the file cache is big enough: stop checking
        if wmark < WMARK_HIGH:
            return "LOW_MEM", f"{which} watermark is breached", p.lowmem_min_score, False
        return None, "", 0, False

    # --- the victim (find_and_kill_process) --------------------------------------------------
    def refresh_registry(self, host: Any) -> dict[int, Any]:
        """What ActivityManager would have told lmkd: every user process with its current
        oom_score_adj, each (re)registered at the head of its adj's list when it appears or
        its adj changes.  Returns the processes by pid."""
        procs = {pi.pid: pi for pi in host.processes()
                 if not pi.kthread and pi.pid != host.pid and pi.pid != 1}
        for pid in [pid for pid in self.registry if pid not in procs]:
            del self.registry[pid]
        self.removed &= procs.keys()
        for pid, pi in procs.items():
            if pid in self.removed:
                continue
            old = self.registry.get(pid)
            if old is None or old[0] != pi.oom_score_adj:
                self._seq += 1
                self.registry[pid] = (pi.oom_score_adj, self._seq)
        return procs

    async def find_and_kill_process(self, host: Any, min_score_adj: int, now: int, reason: str) -> int:
        """Kill one process at or above ``min_score_adj``, highest adj first.  Returns the
        pages it held (lmkd's "pages freed"), 0 if there was nobody to kill."""
        procs = self.refresh_registry(host)
        slots: dict[int, list[int]] = {}
        for pid, (adj, seq) in self.registry.items():
            slots.setdefault(adj, []).append(pid)
        killed = 0
        heaviest = self.params.kill_heaviest_task
        for adj in range(OOM_SCORE_ADJ_MAX, min_score_adj - 1, -1):
            if not heaviest and adj <= PERCEPTIBLE_APP_ADJ:
                heaviest = True   # a perceptible app: take the biggest to kill as few as possible
            slot = sorted(slots.get(adj, ()), key=lambda pid: self.registry[pid][1], reverse=True)  # head first
            while slot:
                if heaviest:
                    pid = max(slot, key=lambda q: (procs[q].statm_rss, -slot.index(q)))
                else:
                    pid = slot[-1]  # the tail: registered longest ago
                slot.remove(pid)
                killed = await self.kill_one_process(host, procs[pid], now, reason)
                if killed >= 0:
                    break
            if killed:
                break
        return killed

    async def kill_one_process(self, host: Any, proc: Any, now: int, reason: str) -> int:
        self.registry.pop(proc.pid, None)          # pid_remove, whatever happens
        self.removed.add(proc.pid)
        now_proc = host.process(proc.pid)
        if now_proc is None:
            return -1                              # gone (or a zombie) meanwhile
        rss_pages = now_proc.statm_rss
        self.last_kill_pid = proc.pid              # start_wait_for_proc_kill
        res = await host.kill(proc.pid, SIGKILL, reason)
        if res != 0:
            self._stop_wait_for_kill()
            return -1
        self.last_kill_ms = now                    # the time of the wakeup that decided the kill
        if self.params.reaper:
            await host.process_mrelease(proc.pid, nowait=True)   # lmkd's reaper thread
        return rss_pages


# --- helpers ------------------------------------------------------------------------------------
def calc_zone_watermarks(zones: Any) -> tuple[int, int, int]:
    """Every populated zone's min/low/high watermark plus its largest lowmem reserve,
    summed: (min, low, high) in pages."""
    mn = lo = hi = 0
    for z in zones:
        if not z.present:
            continue
        prot = max(z.protection) if z.protection else 0
        mn += prot + z.min
        lo += prot + z.low
        hi += prot + z.high
    return mn, lo, hi


def lowest_watermark(free_pages: int, wm: tuple[int, int, int]) -> int:
    """The lowest watermark free memory is under (WMARK_NONE: none)."""
    mn, lo, hi = wm
    if free_pages < mn:
        return WMARK_MIN
    if free_pages < lo:
        return WMARK_LOW
    if free_pages < hi:
        return WMARK_HIGH
    return WMARK_NONE


def swap_utilization(mi: Mem, free_swap: int) -> int:
    """calc_swap_utilization: swap in use, in percent of everything that could be swapped."""
    used = mi.total_swap - free_swap
    swappable = mi.anon_lru + mi.shmem + used
    return used * 100 // swappable if swappable > 0 else 0
