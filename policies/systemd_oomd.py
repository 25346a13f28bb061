"""systemd-oomd (systemd's src/oom/: oomd-manager.c, oomd-util.c) as a userspace OOM killer.

systemd-oomd acts on cgroups, never on single processes, and only on the units that ask
for it (``ManagedOOMSwap=kill``, ``ManagedOOMMemoryPressure=kill``).  In our words:

* **the swap rule** (every 150 ms, while some unit has ManagedOOMSwap=kill): when memory
  *and* swap are both more than ``SwapUsedLimit`` (90 %) used -- MemAvailable and SwapFree
  each below 10 % of their totals -- it kills the candidate cgroup with the most swap
  (``memory.swap.current``), among those using more than 5 % of all swap;
* **the memory-pressure rule** (every second): a monitored cgroup whose
  ``memory.pressure`` *full* avg10 stays above its limit (``ManagedOOMMemoryPressureLimit=``,
  default ``DefaultMemoryPressureLimit=60%``) for ``DefaultMemoryPressureDurationSec=``
  (30 s), and that saw reclaim (its ``memory.stat`` pgscan rose) within the last 30 s, has
  the candidate below it with the highest pgscan rate killed (ties: the larger
  ``memory.current``; candidates without any pgscan and memory are skipped).  The rate is
  pgscan's growth since the previous poll that looked at the candidates.  After such an
  action it waits 15 s (the post-action delay: pressure lags) before acting on pressure again;
* **candidates** are the monitored cgroup's leaf descendants, or the highest descendants
  with ``memory.oom.group`` set (the monitored cgroup itself if it is a leaf), ordered
  with ``ManagedOOMPreference=avoid`` ones last and ``omit`` ones left out;
* **a kill** SIGKILLs every process of the candidate's subtree (cg_kill_recursive).

It runs as its unit does: comm ``systemd-oomd``, ``OOMScoreAdjust=-900``,
``User=systemd-oom`` with CAP_KILL.  Reads of the root cgroup use /proc (its
memory.current is MemTotal - MemAvailable and it has no pgscan, as in oomd-util.c); the
root is never a candidate (a real root always has children).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator, model_validator

from oomactors.units import Duration, parse_duration, to_jiffies

from .api import Daemon, PolicyError, config_cgroups

if TYPE_CHECKING:  # pragma: no cover
    from oomactors.userspace import DaemonHost

DurationT = Annotated[Duration, PlainValidator(parse_duration)]

# oomd-manager.h
SWAP_INTERVAL_MS = 150
MEM_PRESSURE_INTERVAL_MS = 1000
DEFAULT_MEM_PRESSURE_DURATION = "30s"
DEFAULT_MEM_PRESSURE_LIMIT_PERCENT = 60
DEFAULT_SWAP_USED_LIMIT_PERCENT = 90
THRESHOLD_SWAP_USED_PERCENT = 5
RECLAIM_DURATION_MS = 30_000
POST_ACTION_DELAY_MS = 15_000

# ManagedOOMPreference=: the sort key (none first, avoid last; omit is never a candidate)
PREFERENCE_NONE, PREFERENCE_AVOID, PREFERENCE_OMIT = 0, 1, 2

LOADAVG_PRECISION_BITS = 11


def loadavg_fixed_point(i: int, f: int) -> int:
    """store_loadavg_fixed_point: "i.ff" percent as systemd's loadavg_t."""
    return (i << LOADAVG_PRECISION_BITS) | -(-(f << LOADAVG_PRECISION_BITS) // 100)  # DIV_ROUND_UP


def _check_path(p: str) -> str:
    if not p.startswith("/"):
        raise ValueError(f"{p!r} is not a cgroup path (\"/\", \"/a\", ...)")
    return p


class SystemdOomdParams(BaseModel):
    """oomd.conf's [OOM] settings and the units' ManagedOOM*= properties, by cgroup path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    swap_used_limit: float = Field(DEFAULT_SWAP_USED_LIMIT_PERCENT, ge=0, le=100)           # SwapUsedLimit=
    default_memory_pressure_limit: float = Field(DEFAULT_MEM_PRESSURE_LIMIT_PERCENT, ge=0, le=100)
    default_memory_pressure_duration: DurationT = parse_duration(DEFAULT_MEM_PRESSURE_DURATION)
    swap: tuple[str, ...] = ("/",)            # ManagedOOMSwap=kill (-.slice by default, as Fedora)
    memory_pressure: tuple[str, ...] = ()     # ManagedOOMMemoryPressure=kill
    memory_pressure_limit: dict[str, float] = {}  # ManagedOOMMemoryPressureLimit= by cgroup
    avoid: tuple[str, ...] = ()               # ManagedOOMPreference=avoid
    omit: tuple[str, ...] = ()                # ManagedOOMPreference=omit
    dry_run: bool = False

    @field_validator("swap", "memory_pressure", "avoid", "omit")
    @classmethod
    def _paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_path(p) for p in v)

    @model_validator(mode="after")
    def _limits(self) -> "SystemdOomdParams":
        for path, lim in self.memory_pressure_limit.items():
            _check_path(path)
            if not 0 <= lim <= 100:
                raise ValueError(f"memory_pressure_limit of {path}: {lim} is not a percentage")
            if path not in self.memory_pressure:
                raise ValueError(f"memory_pressure_limit of {path}: not in memory_pressure")
        return self


@dataclass
class CGroupContext:
    """OomdCGroupContext."""

    path: str
    pressure_avg10: int = 0          # full avg10 as loadavg_t
    current_memory_usage: int = 0
    swap_usage: int = 0
    pgscan: int = 0
    last_pgscan: int = 0
    preference: int = PREFERENCE_NONE
    mem_pressure_limit: int = 0
    mem_pressure_limit_hit_start: int = 0   # us; 0: not above
    last_had_mem_reclaim: int = 0           # us
    mem_pressure_duration_us: int = 0

    def pgscan_rate(self) -> int:
        last = self.last_pgscan if self.last_pgscan <= self.pgscan else 0
        return self.pgscan - last


class SystemdOomd(Daemon):
    """systemd-oomd: kill whole cgroups on swap exhaustion or sustained memory pressure."""

    name = "systemd-oomd"
    description = "systemd-oomd: kills the cgroup with most swap (swap > 90% used) or highest pgscan (full avg10 > 60% for 30s)"
    Params = SystemdOomdParams
    comm = "systemd-oomd"
    uid = 998                    # User=systemd-oom, a system user
    oom_score_adj = -900         # OOMScoreAdjust=-900 in systemd-oomd.service
    caps = ("CAP_KILL",)

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.monitored_pressure: dict[str, CGroupContext] = {}
        self.candidates: dict[str, CGroupContext] = {}
        self.post_action_delay_start = 0

    @classmethod
    def check_config(cls, params: SystemdOomdParams, cfg: Any) -> list[tuple[tuple, str]]:
        """Every unit the ManagedOOM*= / ManagedOOMPreference= paths name is a declared
        cgroup (systemd only sets them on units that exist)."""
        known = set(config_cgroups(cfg))
        return [((key, i), f"no cgroup {path!r} in memcgs")
                for key in ("swap", "memory_pressure", "avoid", "omit")
                for i, path in enumerate(getattr(params, key)) if path not in known]

    # --- reading a cgroup (oomd_cgroup_context_acquire) -----------------------------------
    def acquire(self, host: DaemonHost, path: str, old: Optional[CGroupContext]) -> Optional[CGroupContext]:
        info = host.cgroup(path)
        if info is None:
            return None
        pressure = host.pressure(path)
        avg10 = pressure.full.avg10
        ctx = CGroupContext(path, loadavg_fixed_point(avg10 // 100, avg10 % 100), info.memory_current)
        if not info.is_root:   # the root: /proc only, no swap.current nor memory.stat
            ctx.swap_usage = info.memory_swap_current
            ctx.pgscan = info.stat.pgscan
        if old is not None:
            ctx.last_pgscan = old.pgscan
            ctx.mem_pressure_limit = old.mem_pressure_limit
            ctx.mem_pressure_limit_hit_start = old.mem_pressure_limit_hit_start
            ctx.mem_pressure_duration_us = old.mem_pressure_duration_us
            ctx.last_had_mem_reclaim = old.last_had_mem_reclaim
        if ctx.pgscan_rate() > 0:
            ctx.last_had_mem_reclaim = host.monotonic_us
        return ctx

    def candidate_paths(self, host: DaemonHost, path: str) -> list[str]:
        """recursively_get_cgroup_context: leaves, or the first oom.group cgroups on the way."""
        info = host.cgroup(path)
        if info is None:
            return []
        if not info.children:
            return [] if info.is_root else [path]
        out: list[str] = []
        for child in info.children:
            cinfo = host.cgroup(child)
            if cinfo is None:
                continue
            out.extend([child] if cinfo.oom_group else self.candidate_paths(host, child))
        return out

    def get_candidates(self, host: DaemonHost, monitored: list[str], old: dict[str, CGroupContext]
                       ) -> dict[str, CGroupContext]:
        out: dict[str, CGroupContext] = {}
        for mpath in monitored:
            for path in self.candidate_paths(host, mpath):
                if path in out:
                    continue
                ctx = self.acquire(host, path, old.get(path))
                if ctx is not None:
                    out[path] = ctx
        return out

    def preference(self, path: str) -> int:
        p = self.params
        if path in p.omit:
            return PREFERENCE_OMIT
        if path in p.avoid:
            return PREFERENCE_AVOID
        return PREFERENCE_NONE

    def sorted_candidates(self, cands: dict[str, CGroupContext], key: Any, prefix: Optional[str]
                          ) -> list[CGroupContext]:
        """oomd_sort_cgroup_contexts: under ``prefix``, omit left out, largest first, avoid
        last (ties broken by path, for a deterministic order)."""
        out = []
        for c in cands.values():
            if prefix is not None and prefix != "/" and not (c.path == prefix or c.path.startswith(prefix + "/")):
                continue
            c.preference = self.preference(c.path)
            if c.preference == PREFERENCE_OMIT:
                continue
            out.append(c)
        out.sort(key=lambda c: (c.preference, *key(c), c.path))
        return out

    async def kill_cgroup(self, host: DaemonHost, path: str, reason: str) -> int:
        """oomd_cgroup_kill(recurse): 1 if any process was killed, 0 if none."""
        if self.params.dry_run:
            return 0
        n = await host.cgroup_kill(path, reason)
        return 1 if n > 0 else 0

    # --- the two handlers --------------------------------------------------------------------
    async def monitor_swap(self, host: DaemonHost) -> None:
        """monitor_swap_contexts_handler."""
        mi = host.meminfo()
        mem_total, mem_used = mi.MemTotal * 1024, (mi.MemTotal - mi.MemAvailable) * 1024
        swap_total, swap_used = mi.SwapTotal * 1024, (mi.SwapTotal - mi.SwapFree) * 1024
        threshold_permyriad = 10000 - int(self.params.swap_used_limit * 100)
        mem_below = max(mem_total - mem_used, 0) < mem_total * threshold_permyriad // 10000
        swap_below = (swap_total - swap_used) < swap_total * threshold_permyriad // 10000
        if not (mem_below and swap_below):
            return
        cands = self.get_candidates(host, list(self.params.swap), {})
        threshold = swap_total * THRESHOLD_SWAP_USED_PERCENT // 100
        for c in self.sorted_candidates(cands, lambda c: (-c.swap_usage,), None):
            if c.swap_usage <= threshold:
                continue
            reason = (f"memory used ({mem_used}) / total ({mem_total}) and swap used ({swap_used}) / "
                      f"total ({swap_total}) being more than {self.params.swap_used_limit:.2f}%; "
                      f"swap usage of {c.path}: {c.swap_usage}")
            await self.kill_cgroup(host, c.path, reason)
            return

    async def monitor_memory_pressure(self, host: DaemonHost) -> None:
        """monitor_memory_pressure_contexts_handler."""
        keep_candidates = False
        try:
            if not self.monitored_pressure:
                return
            now = host.monotonic_us
            # update the monitored cgroups (pressure, pgscan growth -> reclaim activity)
            fresh = {}
            for path, old in self.monitored_pressure.items():
                ctx = self.acquire(host, path, old)
                if ctx is not None:
                    fresh[path] = ctx
            self.monitored_pressure = fresh
            # pressure lags: after an action, wait before trusting it again
            in_delay = False
            if self.post_action_delay_start > 0:
                if self.post_action_delay_start + POST_ACTION_DELAY_MS * 1000 > now:
                    in_delay = True
                else:
                    self.post_action_delay_start = 0
            targets = self.pressure_above(now)
            if targets and not in_delay:
                for t in targets:
                    # no reclaim lately: pressure will not drop by killing anything
                    if now - t.last_had_mem_reclaim > RECLAIM_DURATION_MS * 1000:
                        continue
                    self.candidates = self.get_candidates(host, list(self.monitored_pressure), self.candidates)
                    keep_candidates = True
                    limit = t.mem_pressure_limit
                    reason = (f"memory pressure for {t.path} being {t.pressure_avg10 >> 11}."
                              f"{(t.pressure_avg10 & 2047) * 100 >> 11:02d}% > {limit >> 11}."
                              f"{(limit & 2047) * 100 >> 11:02d}% for > "
                              f"{t.mem_pressure_duration_us // 1_000_000}s with reclaim activity")
                    await self.kill_by_pgscan_rate(host, t.path, reason)
                    # one action per interval; the delay starts even if nothing was killed
                    self.post_action_delay_start = now
                    return
            else:
                # somebody is above its limit: keep the candidates' pgscan baselines fresh
                if any(c.mem_pressure_limit_hit_start for c in self.monitored_pressure.values()):
                    self.candidates = self.get_candidates(host, list(self.monitored_pressure), self.candidates)
                    keep_candidates = True
        finally:
            if not keep_candidates:
                self.candidates = {}  # stale candidate data is never used

    def pressure_above(self, now: int) -> list[CGroupContext]:
        """oomd_pressure_above: cgroups over their limit for at least their duration."""
        targets = []
        for ctx in self.monitored_pressure.values():
            if ctx.pressure_avg10 > ctx.mem_pressure_limit:
                if ctx.mem_pressure_limit_hit_start == 0:
                    ctx.mem_pressure_limit_hit_start = now
                if now - ctx.mem_pressure_limit_hit_start >= ctx.mem_pressure_duration_us:
                    targets.append(ctx)
            else:
                ctx.mem_pressure_limit_hit_start = 0
        return targets

    async def kill_by_pgscan_rate(self, host: DaemonHost, prefix: str, reason: str) -> int:
        for c in self.sorted_candidates(self.candidates, lambda c: (-c.pgscan_rate(), -c.current_memory_usage),
                                        prefix):
            if c.pgscan == 0 and c.current_memory_usage == 0:
                continue  # no reclaim and no memory: killing it will not help
            why = f"{reason}; {c.path}: pgscan rate {c.pgscan_rate()}, memory.current {c.current_memory_usage}"
            return await self.kill_cgroup(host, c.path, why)
        return 0

    # --- the event loop --------------------------------------------------------------------
    async def run(self, host: DaemonHost) -> None:
        p = self.params
        # the daemon's state lives for one run (an instance may be run again)
        self.monitored_pressure, self.candidates, self.post_action_delay_start = {}, {}, 0
        duration_us = to_jiffies(p.default_memory_pressure_duration, host.hz) * 1_000_000 // host.hz
        for path in (*p.swap, *p.memory_pressure):
            if host.cgroup(path) is None:
                raise PolicyError(f"policy {self.name!r}: no cgroup {path!r} in the config")
        for path in p.memory_pressure:
            pct = p.memory_pressure_limit.get(path, p.default_memory_pressure_limit)
            permyriad = round(pct * 100)
            ctx = self.acquire(host, path, None)
            ctx.mem_pressure_limit = loadavg_fixed_point(permyriad // 100, permyriad % 100)
            ctx.mem_pressure_duration_us = duration_us
            self.monitored_pressure[path] = ctx
        next_swap = host.now if p.swap else None
        next_pressure = host.now
        swap_every = host.ms_to_jiffies(SWAP_INTERVAL_MS)
        pressure_every = host.ms_to_jiffies(MEM_PRESSURE_INTERVAL_MS)
        while True:
            due = min(t for t in (next_swap, next_pressure) if t is not None)
            if due > host.now:
                await host.sleep_until(due)
            woke = host.now
            if next_swap is not None and next_swap <= woke:
                next_swap = woke + swap_every
                await self.monitor_swap(host)
            if next_pressure <= woke:
                next_pressure = woke + pressure_every
                await self.monitor_memory_pressure(host)
