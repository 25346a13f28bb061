"""Userspace OOM killers as actors: the daemon host.

A userspace killer (a :class:`policies.api.Daemon`: earlyoom, systemd-oomd, oomd, lmkd)
runs as a real process of the model -- its own pid and comm, its service's
``oom_score_adj``, a CPU to run on -- and is driven by one actor that calls
``daemon.run(host)``.  Everything the daemon knows and does goes through the
:class:`DaemonHost`:

* **time**: :attr:`~DaemonHost.now` (jiffies), :attr:`~DaemonHost.now_ms`,
  :attr:`~DaemonHost.monotonic_us`; :meth:`~DaemonHost.sleep_ms` (an interruptible
  sleep off the CPU, scheduling point ``userspace.poll``);
* **what the real daemon reads**, as frozen snapshots in the files' own units:
  :meth:`~DaemonHost.meminfo` (``/proc/meminfo``, kB, MemAvailable as ``si_mem_available``
  computes it), :meth:`~DaemonHost.vmstat` (``/proc/vmstat``), :meth:`~DaemonHost.zoneinfo`
  (``/proc/zoneinfo``), :meth:`~DaemonHost.pressure` (``/proc/pressure/memory`` or a
  cgroup's ``memory.pressure``), :meth:`~DaemonHost.cgroup` (``memory.current``,
  ``memory.swap.current``, the limits, ``memory.stat``, ``memory.events``, children and
  processes), :meth:`~DaemonHost.processes` (``/proc/PID/...``: comm, cmdline, uid,
  ``oom_score`` as the run's kernel profile computes it, ``oom_score_adj``, VmRSS, VmSwap,
  the cgroup);
* **actions**: :meth:`~DaemonHost.kill` (kill(2): SIGTERM honours the target's
  disposition, SIGKILL does not ask), :meth:`~DaemonHost.cgroup_kill` (``cgroup.kill``,
  5.14+: SIGKILL to every process of a subtree), :meth:`~DaemonHost.process_mrelease`
  (5.15+: reap a dying process's memory now);
* **PSI triggers**: :meth:`~DaemonHost.psi_trigger` and :meth:`~DaemonHost.wait_psi`.

Reads cost the daemon CPU time (the ``*_NS`` constants below), charged at its next sleep
or action (scheduling point ``userspace.cpu``), so a daemon competes for CPUs like any
process.  Actions are events: ``userspace:kill``, ``userspace:cgroup_kill``,
``userspace:mrelease`` (and the kernel's own ``signal:signal_generate``).  The snapshots
and how the files' values are computed are :mod:`oomactors.userspace_files`.

A daemon class describes the process it runs as with optional class attributes: ``comm``
(default: its ``name``), ``uid`` (0), ``oom_score_adj`` (0), ``nice`` (0), ``caps``
(``("CAP_KILL",)``) and ``cgroup`` (``"/"``, a memcg path of the config).  The daemon is a
service: the run does not wait for it to exit.  If the kernel's OOM killer (or anyone)
SIGKILLs it, :class:`DaemonKilled` leaves ``run`` and the process exits.  An exception
of any other kind stops the run with a :class:`~policies.api.PolicyError` naming the
daemon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from .kernel.exit import mmap_read_lock
from .kernel.lru import lru_sizes
from .kernel.memcontrol import mem_cgroup_scan_tasks
from .kernel.oom_kill import find_lock_task_mm, task_will_free_mem
from .kernel.oom_reaper import zap_pages
from .kernel.signal import EAGAIN, EINVAL, ESRCH, SIGKILL, SIGTERM, find_process, group_send_sig_info, kill_pid
from .kernel.task import MMF_OOM_SKIP, MMF_UNSTABLE
from .psi import STATE_NAMES, Pressure, PsiTrigger, poll_triggers
# the snapshots and how they are computed, re-exported: `from oomactors.userspace import ...`
from .userspace_files import (CgroupInfo, Meminfo, MemoryStat, ProcInfo, ZoneInfo, _held_kb, cgroup_info, meminfo,
                              proc_info, si_mem_available)

if TYPE_CHECKING:  # pragma: no cover
    from .kernel.task import Task
    from .machine import Machine

__all__ = ["DaemonHost", "DaemonKilled", "Meminfo", "ProcInfo", "CgroupInfo", "MemoryStat",
           "ZoneInfo", "SIGKILL", "SIGTERM", "ESRCH", "EINVAL", "spawn_daemon", "si_mem_available"]

# CPU time a read or an action costs the daemon (ns): earlyoom measures ~6 us for
# parse_meminfo and 2.5 ms for a scan of a desktop's few hundred processes
READ_MEMINFO_NS = 10_000
READ_FILE_NS = 5_000           # one small /proc or cgroup file (pressure, memory.current...)
SCAN_PROC_NS = 10_000          # per process in a /proc scan (oom_score, statm, comm)
SYSCALL_NS = 5_000             # kill(2), process_mrelease(2), a write to cgroup.kill


class DaemonKilled(Exception):
    """The daemon's own process got SIGKILL: leave ``run``."""


# --- the host ------------------------------------------------------------------------------------
class DaemonHost:
    """What a userspace OOM killer sees and does (see the module docstring)."""

    def __init__(self, m: "Machine", daemon: Any, task: "Task") -> None:
        self.m = m
        self.daemon = daemon
        self.task = task
        self.name: str = daemon.name
        self._debt_ns = 0

    # --- identity and time ---------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.task.pid

    @property
    def hz(self) -> int:
        return self.m.hz

    @property
    def now(self) -> int:
        """Virtual time in jiffies."""
        return self.m.now

    @property
    def now_ms(self) -> int:
        return self.m.now * 1000 // self.m.hz

    @property
    def monotonic_us(self) -> int:
        """CLOCK_MONOTONIC in microseconds (boot is 0)."""
        return self.m.now * 1_000_000 // self.m.hz

    def ms_to_jiffies(self, ms: float) -> int:
        """Rounded up, as msecs_to_jiffies does: a non-zero wait is at least one jiffy."""
        return max(0, -(-int(ms * self.m.hz) // 1000))

    def charge(self, ns: int) -> None:
        """Account CPU time the daemon spends (paid at its next sleep or action)."""
        self._debt_ns += ns

    async def cpu(self, ns: int = 0) -> None:
        """Spend ``ns`` of CPU time now, with whatever reads cost since the last payment."""
        self._debt_ns += ns
        await self._pay()

    async def _pay(self) -> None:
        ns, self._debt_ns = self._debt_ns, 0
        if ns:
            await self.m.sched.run(self.task, ns, "userspace.cpu")

    def _check_killed(self) -> None:
        if self.task.sigkill:
            raise DaemonKilled()

    async def sleep_ms(self, ms: float) -> None:
        await self.sleep_jiffies(self.ms_to_jiffies(ms))

    async def sleep_jiffies(self, jiffies: int) -> None:
        """An interruptible sleep off the CPU (nanosleep); SIGKILL ends the daemon."""
        await self._pay()
        self._check_killed()
        end = self.m.now + max(0, jiffies)
        while self.m.now < end:
            await self.m.sched.sleep(self.task, end - self.m.now, "userspace.poll", interruptible=True)
            self._check_killed()

    async def sleep_until(self, jiffy: int) -> None:
        await self.sleep_jiffies(jiffy - self.m.now)

    # --- reading ----------------------------------------------------------------------------
    def meminfo(self) -> Meminfo:
        """/proc/meminfo now."""
        self._debt_ns += READ_MEMINFO_NS
        return meminfo(self.m)

    def vmstat(self) -> dict[str, int]:
        """/proc/vmstat: the counters the model keeps (pgscan_kswapd, pgscan_direct,
        pgsteal_*, allocstall, oom_kill, compact_*, pswpout, pswpin, pgmajfault,
        pgactivate, pgdeactivate, workingset_refault/activate/restore_anon and _file)."""
        self._debt_ns += READ_MEMINFO_NS
        v = self.m.vmstat
        out = {k: v[k] for k in ("pgscan_kswapd", "pgscan_direct", "pgsteal_kswapd", "pgsteal_direct",
                                 "allocstall", "oom_kill", "compact_stall", "compact_success",
                                 "compact_fail")}
        out["pswpout"] = self.m.vmstat["pswpout"]   # pages swapped out since boot
        for key in ("workingset_refault_anon", "workingset_refault_file", "workingset_activate_anon",
                    "workingset_activate_file", "workingset_restore_anon", "workingset_restore_file",
                    "pswpin", "pgmajfault", "pgactivate", "pgdeactivate"):
            out[key] = self.m.vmstat[key]
        out["nr_free_pages"] = sum(z.vm_free for z in self.m.zones)
        return out

    def zoneinfo(self) -> list[ZoneInfo]:
        """/proc/zoneinfo: every populated zone."""
        self._debt_ns += READ_MEMINFO_NS
        return [ZoneInfo(z.node.nid, z.name, z.vm_free, z.min_wmark, z.low_wmark, z.high_wmark,
                         z.present, z.managed, tuple(z.lowmem_reserve), z.nr["anon"],
                         z.nr["file"] + z.nr["dirty"]) for z in self.m.zones]

    def pressure(self, path: str = "/") -> Pressure:
        """Read /proc/pressure/memory ("/") or ``<path>/memory.pressure``: like the real
        read, this folds the per-CPU stall times and updates the averages if due."""
        self._debt_ns += READ_FILE_NS
        return self.m.psi.show(path)

    def cgroup_paths(self) -> list[str]:
        """Every cgroup, parents before children ("/" first)."""
        return list(self.m.memcgs)

    def cgroup(self, path: str) -> CgroupInfo | None:
        """A cgroup's files now, or None if there is no such cgroup."""
        memcg = self.m.memcgs.get(path)
        if memcg is None:
            return None
        self._debt_ns += READ_FILE_NS * 4
        return cgroup_info(self.m, memcg)

    def processes(self) -> list[ProcInfo]:
        """A scan of /proc: every process (kernel threads too), in pid order."""
        procs = self.m.processes()
        self._debt_ns += SCAN_PROC_NS * len(procs)
        return [proc_info(self.m, p) for p in procs]

    def process(self, pid: int) -> ProcInfo | None:
        p = find_process(self.m, pid)
        self._debt_ns += SCAN_PROC_NS
        return None if p is None else proc_info(self.m, p)

    def is_alive(self, pid: int) -> bool:
        """The process still exists (a process is gone once its last thread exited)."""
        self._debt_ns += READ_FILE_NS
        return find_process(self.m, pid) is not None

    # --- acting ------------------------------------------------------------------------------
    async def kill(self, pid: int, sig: int, reason: str = "") -> int:
        """kill(pid, sig) for SIGTERM or SIGKILL: 0, or -ESRCH / -EINVAL."""
        self._debt_ns += SYSCALL_NS
        await self._pay()
        p = find_process(self.m, pid)
        comm = p.comm if p is not None else ""
        rss_kb, swap_kb = _held_kb(p)
        res = kill_pid(self.m, self.task, pid, sig)
        self.m.emit("userspace:kill", pid, self.name, comm, sig, reason, res, rss_kb, swap_kb)
        return res

    async def cgroup_kill(self, path: str, reason: str = "") -> int:
        """Write 1 to ``<path>/cgroup.kill``: SIGKILL to every process of the subtree (the
        daemon's own process excepted).  Returns how many processes were signalled, or
        -EINVAL (the root has no cgroup.kill; an unknown path)."""
        self._debt_ns += SYSCALL_NS
        await self._pay()
        memcg = self.m.memcgs.get(path)
        if memcg is None or memcg.is_root:
            return -EINVAL
        members = []
        for p in mem_cgroup_scan_tasks(self.m, memcg):
            if p.signal is self.task.signal or not p.signal.live_threads():
                continue
            members.append([p.pid, *_held_kb(p)])
            group_send_sig_info(self.m, SIGKILL, p)
        self.m.emit("userspace:cgroup_kill", self.task.pid, self.name, path, reason, len(members), members)
        return len(members)

    async def process_mrelease(self, pid: int, *, nowait: bool = False) -> int:
        """process_mrelease(pidfd): reap the anonymous memory of a process that is dying
        (SIGKILLed or exiting) right now, in the daemon's context.  0; -ESRCH (gone);
        -EINVAL (not dying and not yet reaped).

        ``nowait`` is what lmkd's reaper thread does after a kill without holding up the
        daemon's main loop: when the victim's mmap_lock is taken (the real reaper thread
        would block on it) it gives up at once with -EAGAIN, and the victim's own exit
        frees the memory."""
        self._debt_ns += SYSCALL_NS
        await self._pay()
        m = self.m
        p = find_process(m, pid)
        t = find_lock_task_mm(p) if p is not None else None
        if t is None:
            m.emit("userspace:mrelease", pid, self.name, p.comm if p else "", -ESRCH, 0)
            return -ESRCH
        mm = t.mm
        if not task_will_free_mem(m, t):
            res = 0 if mm.flags & MMF_OOM_SKIP else -EINVAL
            m.emit("userspace:mrelease", pid, self.name, p.comm, res, 0)
            return res
        if nowait:
            if not mm.mmap_lock.read_trylock():
                m.emit("userspace:mrelease", pid, self.name, p.comm, -EAGAIN, 0)
                return -EAGAIN
        else:
            # (mmgrab keeps the struct, not the mappings: the victim's own exit may tear it
            # down meanwhile; both unmap batch by batch)
            await mmap_read_lock(m, self.task, mm, "task.mmap_lock")
        freed = 0
        try:
            if not mm.flags & MMF_OOM_SKIP:
                # __oom_reap_task_mm: the anonymous memory goes, in the caller's context
                mm.flags |= MMF_UNSTABLE
                freed = await zap_pages(m, self.task, mm, anon_only=True, point="reaper.zap")
        finally:
            mm.mmap_lock.read_unlock()
        m.emit("userspace:mrelease", pid, self.name, p.comm, 0, freed)
        return 0

    # --- PSI triggers ----------------------------------------------------------------------------
    def psi_trigger(self, path: str, kind: str, threshold_us: int, window_us: int) -> PsiTrigger:
        """Write "some|full THRESHOLD_US WINDOW_US" to the pressure file of ``path`` ("/" is
        /proc/pressure/memory).  Bad arguments raise ValueError (the kernel's -EINVAL)."""
        from .psi import WINDOW_MAX_US, WINDOW_MIN_US
        if kind not in STATE_NAMES:
            raise ValueError(f"psi trigger: {kind!r} is not 'some' or 'full'")
        if not WINDOW_MIN_US <= window_us <= WINDOW_MAX_US:
            raise ValueError(f"psi trigger: window {window_us} us outside {WINDOW_MIN_US}..{WINDOW_MAX_US}")
        if not 0 < threshold_us <= window_us:
            raise ValueError(f"psi trigger: threshold {threshold_us} us not in 1..window")
        self._debt_ns += SYSCALL_NS
        return PsiTrigger(self.m.psi.group(path), STATE_NAMES.index(kind), threshold_us, window_us,
                          self.m.now)

    async def wait_psi(self, triggers: Sequence[PsiTrigger], timeout_ms: float | None) -> list[PsiTrigger]:
        """poll() on the triggers' files: returns the triggers that fired (empty on timeout).

        The kernel's poller runs every window/10 while stalls change; here it runs at that
        period for as long as a daemon waits (see README "What is simplified")."""
        m = self.m
        period_ns = min(t.poll_period for t in triggers)
        period = max(1, -(-period_ns * m.hz // 1_000_000_000))
        deadline = None if timeout_ms is None else m.now + self.ms_to_jiffies(timeout_ms)
        while True:
            fired = poll_triggers(triggers, m.now)
            if fired:
                self._debt_ns += READ_FILE_NS
                return fired
            if deadline is not None and m.now >= deadline:
                return []
            step = period if deadline is None else min(period, deadline - m.now)
            await self.sleep_jiffies(step)

    # --- added for lmkd (policies/lmkd.py) -------------------------------------------------------
    def workingset(self) -> dict[str, int]:
        """The /proc/vmstat lines lmkd's thrashing estimate reads: ``workingset_refault_file``
        (page cache read back after reclaim evicted it, kernel/workingset.py) and the file
        LRU, ``nr_inactive_file`` + ``nr_active_file`` (kernel/lru.py)."""
        self._debt_ns += READ_MEMINFO_NS
        m = self.m
        sizes = [lru_sizes(z) for z in m.zones]
        return {"workingset_refault_file": m.vmstat["workingset_refault_file"],
                "nr_inactive_file": sum(s[2] for s in sizes),
                "nr_active_file": sum(s[3] for s in sizes)}

# --- the actor --------------------------------------------------------------------------------
def spawn_daemon(m: "Machine") -> "Task":
    """Create the daemon's process (after the workload: its pid comes after theirs) and
    start its actor."""
    from .actors.user import new_process
    d = m.daemon
    comm = getattr(d, "comm", None) or d.name
    caps = frozenset(getattr(d, "caps", ("CAP_KILL",)))
    task = new_process(m, comm, getattr(d, "uid", 0), caps, getattr(d, "oom_score_adj", 0),
                       nice=getattr(d, "nice", 0))
    task.group = comm
    task.service = True
    path = getattr(d, "cgroup", "/")
    memcg = m.memcgs.get(path)
    if memcg is None:
        from policies.api import PolicyError
        raise PolicyError(f"policy {d.name!r}: its cgroup {path!r} is not a memcg of the config")
    task.memcg = task.mm.memcg = None if memcg.is_root else memcg
    m.spawn(_daemon_actor, m, d, task)
    return task


async def _daemon_actor(m: "Machine", daemon: Any, task: "Task") -> None:
    from .errors import OomactorsError
    from .kernel.exit import do_exit
    await m.sched.get_cpu(task)
    host = DaemonHost(m, daemon, task)
    reason = "exit"
    try:
        await daemon.run(host)
    except DaemonKilled:
        reason = "killed"
    except OomactorsError:
        raise
    except Exception as exc:  # a bug in the daemon: stop the run, naming it
        from policies.api import PolicyError
        raise PolicyError(f"policy {daemon.name!r} raised {type(exc).__name__}: {exc}") from exc
    await do_exit(m, task, reason)
