"""earlyoom (rfjakob/earlyoom, v1.8) as a userspace OOM killer.

What the real daemon does, in our words (main.c ``poll_loop``, kill.c):

* it reads ``/proc/meminfo`` and computes MemAvailable as a percentage of "user memory"
  (MemAvailable + AnonPages) and SwapFree as a percentage of SwapTotal (0 % without swap);
* when **both** are at or below their SIGTERM limits (``-m 10``, ``-s 10`` by default) it
  picks a victim and sends SIGTERM; at or below both SIGKILL limits (half the SIGTERM ones by
  default) it sends SIGKILL.  Before killing it reads meminfo once more and stands down if
  memory recovered while it was choosing;
* the victim is the process with the highest ``/proc/PID/oom_score`` (ties: the larger
  VmRSS), skipping pid 1 and 2, kernel threads, ``oom_score_adj = -1000``, root's processes
  with ``--ignore-root-user`` and names matching ``--ignore``.  ``--prefer`` adds 300 to a
  matching process's oom_score, ``--avoid`` subtracts 300 (with ``--sort-by-rss`` the
  victim is the largest VmRSS instead, and prefer/avoid move VmRSS by 3 GiB);
* after a kill it waits for the victim to exit, polling every 100 ms for at most 10 s, and
  escalates SIGTERM to SIGKILL if memory meanwhile fell to the SIGKILL limits.  A signal is
  followed by process_mrelease(), which reaps a dying victim's memory at once;
* between polls it sleeps 100..1000 ms: the headroom above the SIGTERM limits divided by
  the fastest fill rates it expects (6000 MiB/s of memory, 800 MiB/s of swap).

It runs as its systemd unit starts it: comm ``earlyoom``, ``OOMScoreAdjust=-100``,
``Nice=-20``, ``DynamicUser=true`` (a uid from the dynamic range) with CAP_KILL.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from oomactors.kernel.signal import SIGKILL, SIGTERM
from oomactors.units import parse_size

from .api import Daemon

if TYPE_CHECKING:  # pragma: no cover
    from oomactors.userspace import DaemonHost, Meminfo, ProcInfo

Size = Annotated[int, BeforeValidator(parse_size)]

# kill.c
OOM_SCORE_PREFER = 300
OOM_SCORE_AVOID = -300
VMRSS_PREFER = 3 * 1024 * 1024          # kB
VMRSS_AVOID = -3 * 1024 * 1024
PROCINFO_FIELD_NOT_SET = -9999
# main.c sleep_time_ms: the fastest fill rates expected, kB per ms (~MiB/s)
MEM_FILL_RATE = 6000
SWAP_FILL_RATE = 800
MIN_SLEEP_MS = 100
MAX_SLEEP_MS = 1000
KILL_WAIT_POLL_MS = 100


class EarlyoomParams(BaseModel):
    """earlyoom's command line as ``[policy]`` keys (``-m 10,5`` is ``mem_percent = 10``,
    ``mem_kill_percent = 5``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # -m/-s default to 10 only when neither -m nor -M (-s nor -S) is given; with both, the
    # lower limit wins; with only -M (-S), the size alone counts (earlyoom's main.c)
    mem_percent: Optional[float] = Field(None, ge=0, le=99)  # -m PERCENT
    mem_kill_percent: Optional[float] = Field(None, ge=0)     # -m ,KILL_PERCENT (PERCENT/2)
    swap_percent: Optional[float] = Field(None, ge=0, le=100)  # -s PERCENT (100: ignore swap)
    swap_kill_percent: Optional[float] = Field(None, ge=0)    # -s ,KILL_PERCENT
    mem_size: Optional[Size] = None        # -M SIZE: the lower of -m and -M is used
    mem_kill_size: Optional[Size] = None   # -M ,KILL_SIZE (SIZE/2)
    swap_size: Optional[Size] = None       # -S SIZE
    swap_kill_size: Optional[Size] = None  # -S ,KILL_SIZE
    prefer: Optional[str] = None           # --prefer REGEX
    avoid: Optional[str] = None            # --avoid REGEX
    ignore: Optional[str] = None           # --ignore REGEX
    ignore_root_user: bool = False         # --ignore-root-user
    sort_by_rss: bool = False              # --sort-by-rss
    dryrun: bool = False                   # --dryrun
    kill_wait_timeout: float = Field(10.0, gt=0)  # seconds kill_wait waits for the victim

    @field_validator("prefer", "avoid", "ignore")
    @classmethod
    def _regex(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"could not compile regexp {v!r}: {e}") from None
        return v

    @model_validator(mode="after")
    def _kill_below_term(self) -> "EarlyoomParams":
        for what, term, kill in (("mem", _or_default(self.mem_percent), self.mem_kill_percent),
                                 ("swap", _or_default(self.swap_percent), self.swap_kill_percent),
                                 ("mem", self.mem_size, self.mem_kill_size),
                                 ("swap", self.swap_size, self.swap_kill_size)):
            if kill is not None and (term is None or kill > term):
                raise ValueError(f"{what}: the SIGKILL limit {kill} cannot be greater than the "
                                 f"SIGTERM limit {term}")
        return self


DEFAULT_PERCENT = 10.0


def _or_default(percent: Optional[float]) -> float:
    return DEFAULT_PERCENT if percent is None else percent


def _merge(percent: Optional[float], kill_percent: Optional[float], size: Optional[int],
           kill_size: Optional[int], total_kib: int) -> tuple[float, float]:
    """(SIGTERM, SIGKILL) limits in percent from -m/-M (or -s/-S): a size becomes a share of
    the total; given both, the lower limit wins; given neither, 10 % (and half of it)."""
    limits = []
    if percent is not None or size is None:
        term = _or_default(percent)
        limits.append((term, kill_percent if kill_percent is not None else term / 2))
    if size is not None:
        kill_kib = kill_size / 1024 if kill_size is not None else size / 2048
        limits.append((100 * (size / 1024) / total_kib, 100 * kill_kib / total_kib))
    return min(t for t, _k in limits), min(k for _t, k in limits)


class Earlyoom(Daemon):
    """earlyoom: SIGTERM then SIGKILL to the highest oom_score when both available memory
    and free swap are low."""

    name = "earlyoom"
    description = "earlyoom 1.8: SIGTERM, then SIGKILL, the highest oom_score once available memory and free swap are both low"
    Params = EarlyoomParams
    comm = "earlyoom"
    uid = 61184                  # DynamicUser: the first uid of systemd's dynamic range
    oom_score_adj = -100         # OOMScoreAdjust=-100 in earlyoom.service
    nice = -20                   # Nice=-20
    caps = ("CAP_KILL", "CAP_IPC_LOCK")

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        p = self.params
        self.prefer = re.compile(p.prefer) if p.prefer else None
        self.avoid = re.compile(p.avoid) if p.avoid else None
        self.ignore = re.compile(p.ignore) if p.ignore else None

    # --- limits --------------------------------------------------------------------------
    def _limits(self, mi: Meminfo) -> tuple[float, float, float, float]:
        """(mem_term, mem_kill, swap_term, swap_kill) in percent, -M/-S merged (the lower wins)."""
        p = self.params
        mem = _merge(p.mem_percent, p.mem_kill_percent, p.mem_size, p.mem_kill_size, mi.MemTotal)
        # zero swap: -S is ignored
        swap = _merge(p.swap_percent, p.swap_kill_percent, p.swap_size if mi.SwapTotal else None,
                      p.swap_kill_size, mi.SwapTotal)
        return mem[0], mem[1], swap[0], swap[1]

    @staticmethod
    def percents(mi: Meminfo) -> tuple[float, float, int]:
        """(MemAvailablePercent, SwapFreePercent, UserMemTotalKiB) as parse_meminfo computes them."""
        user_total = mi.MemAvailable + mi.AnonPages
        mem = mi.MemAvailable * 100 / user_total if user_total else 0.0
        swap = mi.SwapFree * 100 / mi.SwapTotal if mi.SwapTotal > 0 else 0.0
        return mem, swap, user_total

    def lowmem_sig(self, mi: Meminfo) -> int:
        mem, swap, _ = self.percents(mi)
        mem_term, mem_kill, swap_term, swap_kill = self._limits(mi)
        if mem <= mem_kill and swap <= swap_kill:
            return SIGKILL
        if mem <= mem_term and swap <= swap_term:
            return SIGTERM
        return 0

    def sleep_time_ms(self, mi: Meminfo) -> int:
        mem, swap, user_total = self.percents(mi)
        mem_term, _, swap_term, _ = self._limits(mi)
        mem_headroom = max(0, int((mem - mem_term) * user_total / 100))
        swap_headroom = max(0, int((swap - swap_term) * mi.SwapTotal / 100))
        ms = mem_headroom // MEM_FILL_RATE + swap_headroom // SWAP_FILL_RATE
        return min(max(ms, MIN_SLEEP_MS), MAX_SLEEP_MS)

    # --- the victim ----------------------------------------------------------------------
    def is_larger(self, victim: dict, cur: ProcInfo, me: int) -> dict | None:
        """kill.c is_larger: ``cur`` as a new victim candidate (its effective values), or None."""
        if cur.pid <= 2:
            return None  # init, kthreadd
        if self.params.ignore_root_user and cur.uid == 0:
            return None
        if cur.ppid == 2 or cur.kthread:
            return None  # a kernel thread
        score, rss = cur.oom_score, cur.vm_rss_kb
        if self.prefer or self.avoid or self.ignore:
            by_rss = self.params.sort_by_rss
            if self.prefer and self.prefer.search(cur.comm):
                if by_rss:
                    rss += VMRSS_PREFER
                else:
                    score += OOM_SCORE_PREFER
            if self.avoid and self.avoid.search(cur.comm):
                if by_rss:
                    rss += VMRSS_AVOID
                else:
                    score += OOM_SCORE_AVOID
            if self.ignore and self.ignore.search(cur.comm):
                return None
        if self.params.sort_by_rss:
            if rss > 0 and victim["rss"] > 0:
                if rss < victim["rss"] or (rss == victim["rss"] and score <= victim["score"]):
                    return None
            elif score < victim["score"] or (score == victim["score"] and rss <= victim["rss"]):
                return None
        elif score < victim["score"] or (score == victim["score"] and rss <= victim["rss"]):
            return None
        if cur.oom_score_adj == -1000:
            return None  # like the kernel's OOM killer
        return {"pid": cur.pid, "score": score, "rss": rss, "comm": cur.comm, "proc": cur}

    def find_largest_process(self, host: DaemonHost) -> dict:
        victim = {"pid": PROCINFO_FIELD_NOT_SET, "score": PROCINFO_FIELD_NOT_SET,
                  "rss": PROCINFO_FIELD_NOT_SET, "comm": "", "proc": None}
        for cur in host.processes():
            larger = self.is_larger(victim, cur, host.pid)
            if larger is not None:
                victim = larger
        if victim["pid"] == host.pid:
            victim = {"pid": 0, "score": 0, "rss": 0, "comm": "", "proc": None}  # selected myself
        return victim

    # --- killing -------------------------------------------------------------------------
    async def kill_wait(self, host: DaemonHost, pid: int, sig: int, reason: str) -> int:
        """Signal the victim, release its memory, wait up to kill_wait_timeout for it to
        exit; escalate to SIGKILL once memory reaches the SIGKILL limits.  0, or < 0."""
        if self.params.dryrun:
            return 0
        res = await self._kill_release(host, pid, sig, reason)
        if res:
            return res
        polls = int(self.params.kill_wait_timeout * 1000 // KILL_WAIT_POLL_MS)
        start = host.now
        for _ in range(polls):
            if sig != SIGKILL:
                mi = host.meminfo()
                mem, swap, _ = self.percents(mi)
                _, mem_kill, _, swap_kill = self._limits(mi)
                if mem <= mem_kill and swap <= swap_kill:
                    sig = SIGKILL
                    secs = (host.now - start) / host.hz
                    res = await self._kill_release(
                        host, pid, sig, f"escalating to SIGKILL after {secs:.3f} seconds: mem "
                                        f"{mem:.2f}% <= {mem_kill:.2f}%, swap {swap:.2f}% <= {swap_kill:.2f}%")
                    if res:
                        return res
            if not host.is_alive(pid):
                return 0
            await host.sleep_ms(KILL_WAIT_POLL_MS)
        return -1  # ETIME: "process did not exit"

    async def _kill_release(self, host: DaemonHost, pid: int, sig: int, reason: str) -> int:
        res = await host.kill(pid, sig, reason)
        if res == 0:
            await host.process_mrelease(pid)  # fails harmlessly unless the victim is dying
        return res

    async def run(self, host: DaemonHost) -> None:
        while True:
            mi = host.meminfo()
            sig = self.lowmem_sig(mi)
            if sig:
                victim = self.find_largest_process(host)
                # choosing took time: kill only if memory is still low
                mi = host.meminfo()
                if self.lowmem_sig(mi):
                    await self.kill_process(host, sig, victim, mi)
            await host.sleep_ms(self.sleep_time_ms(mi))

    async def kill_process(self, host: DaemonHost, sig: int, victim: dict, mi: Meminfo) -> None:
        if victim["pid"] <= 0:
            await host.sleep_ms(1000)  # "Could not find a process to kill. Sleeping 1 second."
            return
        mem, swap, _ = self.percents(mi)
        mem_term, mem_kill, swap_term, swap_kill = self._limits(mi)
        lim_mem, lim_swap = (mem_kill, swap_kill) if sig == SIGKILL else (mem_term, swap_term)
        which = "SIGKILL" if sig == SIGKILL else "SIGTERM"
        reason = (f"low memory, at or below {which} limits: mem {mem:.2f}% <= {lim_mem:.2f}%, "
                  f"swap {swap:.2f}% <= {lim_swap:.2f}%; oom_score {victim['proc'].oom_score}")
        # a failed kill sleeps 1 s only for EPERM, which CAP_KILL rules out; ESRCH (the
        # victim is gone) and ETIME (it did not exit in time) go straight back to polling
        await self.kill_wait(host, victim["pid"], sig, reason)
