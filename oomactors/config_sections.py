"""The sections of a config: ``[machine]``, ``[kernel]`` (with ``[kernel.fixes]``),
``[run]``, ``[[tasks]]``, ``[[memcgs]]``, ``[[cpusets]]``, ``[[cpuset_updates]]`` and
``[policy]``.  Each validates itself; what spans sections (a task's memcg is declared, a
cpuset's nodes exist) is :class:`oomactors.config.Config`'s to check.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from oomactors.kernel.profiles import DEFAULT_PROFILE
from oomactors.units import GiB, MiB, PAGE_SIZE, Duration, format_size, parse_duration

from .config_steps import Step
from .config_types import (CAPABILITIES, DMA_ZONE_MAX, HZ_VALUES, MAX_MEMORY, PROFILES, SEED_MAX, UID_MAX, Bool,
                           CommName, DurationT, Float, Int, KbytesOrAuto, NonNegInt, PositiveDuration, PositiveRate,
                           Size, SizeOrAuto, Str, _at, _check, _int_or_auto, _kbytes_or_auto, _Model, _size_or)


class Machine(_Model):
    """The simulated hardware and what memory already holds at boot."""

    cpus: Int = Field(4, ge=1, le=1024)
    nodes: Int = Field(1, ge=1, le=64)
    memory: Annotated[Size, _check(lambda n: n >= 16 * MiB, "must be at least 16MiB"),
                      _check(lambda n: n <= MAX_MEMORY, "must be at most 64TiB (x86-64 4-level "
                                                        "paging: 46 physical address bits)")] = 2 * GiB
    dma: SizeOrAuto = "auto"  # ZONE_DMA on node 0 (the ISA DMA range, at most 16 MiB)
    dma32: SizeOrAuto = "auto"
    reserved: SizeOrAuto = "auto"
    swap: Size = 0
    swap_bandwidth: PositiveRate = 200 * MiB
    writeback_bandwidth: PositiveRate = 100 * MiB
    page_cache: Size = 0
    dirty: Size = 0
    slab_reclaimable: SizeOrAuto = "auto"
    slab_unreclaimable: SizeOrAuto = "auto"
    fragmentation: Float = Field(0.0, ge=0.0, le=1.0)

    @property
    def node_memory(self) -> tuple[int, ...]:
        """Bytes of RAM per NUMA node: whole pages split evenly, the remainder on the last."""
        pages = self.memory // PAGE_SIZE
        per, extra = divmod(pages, self.nodes)
        return tuple((per + (extra if i == self.nodes - 1 else 0)) * PAGE_SIZE
                     for i in range(self.nodes))

    @model_validator(mode="after")
    def _resolve_and_check(self) -> Machine:
        # object.__setattr__: the model is frozen, but "auto" must become the real size.
        def resolve(name: str, auto: int) -> int:
            if getattr(self, name) == "auto":
                object.__setattr__(self, name, auto // PAGE_SIZE * PAGE_SIZE)
            return getattr(self, name)

        node0 = self.node_memory[0]
        if resolve("dma", min(DMA_ZONE_MAX, node0 // 16)) > DMA_ZONE_MAX:
            raise _at(("dma",), "must be at most 16MiB (ISA DMA reaches the first 16 MiB)")
        if resolve("dma32", min(node0 // 4, 1 * GiB)) + self.dma >= node0:
            raise _at(("dma32",), f"dma + dma32 must be smaller than node 0's memory ({format_size(node0)})")
        if resolve("reserved", min(self.memory // 64, 256 * MiB)) >= self.memory:
            raise _at(("reserved",), "must be smaller than memory")
        resolve("slab_reclaimable", self.memory // 128)
        resolve("slab_unreclaimable", self.memory // 256)
        used = (self.page_cache + self.dirty + self.slab_reclaimable
                + self.slab_unreclaimable + self.reserved)
        if self.memory - used < self.memory / 4:
            raise _at((), f"page_cache + dirty + slab_* + reserved = {format_size(used)} leave "
                          f"less than 1/4 of memory free at boot")
        return self


class Fixes(_Model):
    """``[kernel.fixes]``: the kernel fixes that guard the OOM path, each a switch that is on
    by default.  Turning one off brings back the race it closes (the README's "Race
    catalogue"; a config per switch in ``configs/races/``)."""

    # the oom_lock mutex serialising the OOM killer (4.2 dc56401fc9f2): off, every CPU that
    # detects OOM selects and kills at once, and two victims die for one shortage
    oom_lock: Bool = True
    # the last get_page_from_freelist at the HIGH watermark under oom_lock, "only to catch a
    # parallel oom killing": off, memory a parallel kill just freed is ignored and a second,
    # unnecessary victim dies
    high_wmark_last_attempt: Bool = True
    # oom_evaluate_task aborting the scan on a victim that has no MMF_OOM_SKIP yet ("one
    # victim at a time"): off, a new victim is chosen while the last one is still exiting
    pending_victim_abort: Bool = True
    # the oom_reaper kthread (4.6 aac453635549): off, a victim that cannot exit (D state, a
    # lock held by an allocator) holds every later OOM up: the system stalls
    oom_reaper: Bool = True
    # skipping victims whose mm has MMF_OOM_SKIP (reaped or given up on, 4.8): off, one
    # unkillable victim blocks every later OOM forever, even after the reaper gave up
    mmf_oom_skip: Bool = True
    # check_retry_cpuset before the OOM killer and at nopage (cpuset mems seqcount): off, an
    # allocation racing a cpuset.mems update fails or goes OOM on its stale nodemask
    cpuset_retry: Bool = True
    # task_will_free_mem: an exiting current, or a chosen victim that is exiting, gets reserves
    # and the reaper instead of a kill: off, a dying task's mm is killed again
    task_will_free_mem: Bool = True
    # 5.18+ OOM_REAPER_DELAY (2 s, e4a38402c36e; the linux-6.12 profile): off, the reaper
    # races the victim's own exit (robust futex cleanup) and reaps at once
    reaper_delay: Bool = True
    # 5.9 "memcg, oom: check memcg margin for parallel oom" (1378b37d03e8): a task that waited
    # for oom_lock in mem_cgroup_out_of_memory checks the memcg's margin before it kills: off,
    # it kills a second victim although the first one's memory has come back meanwhile
    memcg_oom_margin: Bool = True
    # 4.13 "mm, oom: fix potential data corruption when oom_reaper races with writer"
    # (6b31d5955cb2): a fault in an mm the reaper has begun to unmap (MMF_UNSTABLE) fails with
    # SIGBUS: off, the victim maps a fresh zero page where its data was and reads it back
    mmf_unstable: Bool = True
    # 5.1 "memcg: killed threads should not invoke memcg OOM killer" (7775face2079): the wait
    # for oom_lock in mem_cgroup_out_of_memory is killable and a task dying by the time it
    # holds the lock forces its charge: off, a killed thread kills again once the first
    # victim is reaped (another process, or "no killable processes")
    memcg_dying_bypass: Bool = True


FIXES: tuple[str, ...] = tuple(Fixes.model_fields)
"""The switch names of ``[kernel.fixes]``, in the catalogue's order."""


class Kernel(_Model):
    """Kernel tunables; names and defaults follow the sysctls of the profile's kernel."""

    profile: Annotated[Str, _check(lambda p: p in PROFILES,
                                   f"unknown profile (known: {', '.join(PROFILES)})")] = DEFAULT_PROFILE
    hz: Annotated[Int, _check(lambda hz: hz in HZ_VALUES,
                              f"must be one of {', '.join(map(str, HZ_VALUES))}")] = 250
    min_free_kbytes: Annotated[Union[int, Literal["auto"]], BeforeValidator(_kbytes_or_auto(128))] = "auto"
    watermark_scale_factor: Int = Field(10, ge=1, le=3000)
    lowmem_reserve_ratio: Annotated[tuple[NonNegInt, ...], _check(
        lambda t: len(t) == 3, "expected 3 integers (DMA, DMA32, NORMAL)")] = (256, 256, 32)
    panic_on_oom: Int = Field(0, ge=0, le=2)
    oom_kill_allocating_task: Int = Field(0, ge=0, le=1)
    oom_dump_tasks: Int = Field(1, ge=0, le=1)
    time_slice: PositiveDuration = parse_duration("12ms")
    percpu_drift: Int = Field(32, ge=0)
    pcp_high: Int = Field(186, ge=0)
    pcp_batch: Int = Field(31, ge=1)
    # commit accounting (kernel/util.py): vm.overcommit_memory 0 GUESS, 1 ALWAYS, 2 NEVER;
    # CommitLimit = overcommit_kbytes if non-zero, else overcommit_ratio % of RAM, + swap.
    # The reserves' "auto" is mm/util.c's boot default (3% of free memory, capped at
    # 8 MiB / 128 MiB), resolved by the kernel model like min_free_kbytes.
    overcommit_memory: Int = Field(0, ge=0, le=2)
    overcommit_ratio: Int = Field(50, ge=0)
    overcommit_kbytes: Int = Field(0, ge=0)
    admin_reserve_kbytes: KbytesOrAuto = "auto"
    user_reserve_kbytes: KbytesOrAuto = "auto"
    # which vm_enough_memory(): 5.2+ ("modern") or 2.4's; kernel profiles will choose it
    overcommit_heuristic: Literal["modern", "2.4"] = "modern"
    # kernel.pid_max and kernel.threads-max (kernel/fork.py): "auto" is the boot default
    # (32768, or 1024 per CPU if more; RAM / (8 * THREAD_SIZE)).  Fork fails with -EAGAIN at
    # either limit, or at RLIMIT_NPROC (threads-max / 2) for a user without the capabilities.
    pid_max: Annotated[Union[int, Literal["auto"]], BeforeValidator(_int_or_auto(301, 4 * 1024 * 1024))] = "auto"
    threads_max: Annotated[Union[int, Literal["auto"]], BeforeValidator(_int_or_auto(20, 0x3FFFFFFF))] = "auto"
    # the race catalogue's switches (all on: the kernel as it is)
    fixes: Fixes = Field(default_factory=Fixes)


class Run(_Model):
    """How long to simulate and with which random seed."""

    duration: PositiveDuration = parse_duration("30s")
    seed: Int = Field(0, ge=0, le=SEED_MAX)  # a u64: what the trace stores
    stop_when_idle: Bool = True
    meminfo_interval: DurationT = parse_duration("1s")  # 0 = no periodic meminfo samples
    # period of sim:psi samples (PSI averages and totals of every group); 0 = none, except
    # one at the run's end when a userspace daemon runs
    psi_samples: DurationT = Duration(0)




# --- cpusets and memory policies -------------------------------------------------------------


def _check_cpuset_name(name: str) -> str:
    if not name:
        raise ValueError("must not be empty")
    if "/" in name or name in (".", "..") or re.search(r"\s", name) or not name.isprintable():
        raise ValueError("expected a cgroup name (no '/', no whitespace, not '.' or '..')")
    return name


NodeList = Annotated[tuple[NonNegInt, ...], _check(bool, "must not be empty")]


class MemPolicy(_Model):
    """A task's NUMA memory policy (set_mempolicy): ``bind`` and ``interleave`` need nodes;
    ``preferred`` takes its first node (no nodes: local allocation)."""

    mode: Literal["bind", "preferred", "interleave"]
    nodes: tuple[NonNegInt, ...] = ()

    @model_validator(mode="after")
    def _nodes_given(self) -> MemPolicy:
        if not self.nodes and self.mode != "preferred":
            raise _at(("nodes",), f"must not be empty for mode {self.mode!r}")
        return self


class Cpuset(_Model):
    """A cpuset under the root: the nodes (``mems``) and CPUs its tasks may use."""

    name: Annotated[Str, AfterValidator(_check_cpuset_name)]
    mems: NodeList
    cpus: Optional[Annotated[tuple[NonNegInt, ...], _check(bool, "must not be empty")]] = None
    mem_hardwall: Bool = False


class CpusetUpdate(_Model):
    """At ``at``, write ``mems`` into the cpuset's mems file."""

    at: DurationT
    cpuset: Str
    mems: NodeList


class Task(_Model):
    """A group of ``count`` identical processes of ``threads`` threads each."""

    name: CommName
    count: Int = Field(1, ge=1, le=100_000)
    threads: Int = Field(1, ge=1, le=1024)
    uid: Int = Field(1000, ge=0, le=UID_MAX)
    caps: tuple[Literal[CAPABILITIES], ...] = ()  # type: ignore[valid-type]
    oom_score_adj: Int = Field(0, ge=-1000, le=1000)
    start: DurationT = Duration(0)
    stagger: DurationT = Duration(0)
    nice: Int = Field(0, ge=-20, le=19)
    rss: Size = 0
    program: tuple[Step, ...] = ()
    memcg: Str = "/"  # the memory cgroup its processes run in ("/": the root)
    cpuset: Str = "/"  # the cpuset its processes run in ("/": the root cpuset, every node)
    mempolicy: Optional[MemPolicy] = None  # None: the default policy (local node first)
    # SIGTERM (kill(2) from a userspace OOM killer): "exit" is the default action (dies like
    # SIGKILL), or with sigterm_exit_delay > 0 a handler that cleans up that long and then
    # exits; "ignore" is SIG_IGN
    on_sigterm: Literal["exit", "ignore"] = "exit"
    sigterm_exit_delay: DurationT = Duration(0)

    @model_validator(mode="after")
    def _sigterm(self) -> "Task":
        if self.on_sigterm == "ignore" and not self.sigterm_exit_delay.is_zero():
            raise _at(("sigterm_exit_delay",), 'a cleanup time needs on_sigterm = "exit"')
        return self


def _check_memcg_path(path: str) -> str:
    parts = path.split("/")
    if not path.startswith("/") or path == "/" or any(p in ("", ".", "..") for p in parts[1:]):
        raise ValueError('expected a cgroup path such as "/a" or "/a/b" (the root "/" is implicit)')
    if re.search(r"\s", path):
        raise ValueError("must not contain whitespace")
    if not path.isprintable():
        raise ValueError("must not contain control characters")
    return path


SizeOrMax = Annotated[Union[int, Literal["max"]], BeforeValidator(_size_or("max"))]


class Memcg(_Model):
    """A cgroup v2 memory controller (memory.max, .high, .swap.max, .min, .low, .oom.group)."""

    path: Annotated[Str, AfterValidator(_check_memcg_path)]
    max: SizeOrMax = "max"
    high: SizeOrMax = "max"
    swap_max: SizeOrMax = "max"
    min: Size = 0
    low: Size = 0
    oom_group: Bool = False


class PolicyTable(BaseModel):
    """``[policy]``: the kill policy of the run by name (a built-in, a plugin's entry-point
    name, or ``package.module:Name``) and its parameters, validated by the policy."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _known_and_valid(self) -> PolicyTable:
        from policies.registry import ParamProblem, PolicyError, validate_params
        try:
            validate_params(self.name, self.params)
        except ParamProblem as e:
            raise _at(e.key, e.problem) from None
        except PolicyError as e:
            raise _at(("name",), str(e)) from None
        return self
