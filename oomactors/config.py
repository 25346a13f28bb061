"""The run configuration: one TOML file describing the machine, the kernel, the run and
the tasks, validated into frozen pydantic models.

Why pydantic and why so strict:

* Every mistake must be reported as *one line naming the key path*
  (``configs/x.toml: tasks[0].program[2].size: negative size``) -- the same style for
  a typo'd key, a wrong type or a failed cross-field check.  Pydantic gives us the
  ``loc`` of each failure; :func:`_format_error` turns it into that path.
* Integers, booleans and strings are *strict*: TOML already has real types, so
  ``hz = "250"`` is far more likely a mistake than an intent.
* Models are frozen and collections are tuples because the config is stored in the
  trace header and must describe the run exactly; nothing may edit it mid-run.

``"auto"`` machine sizes are resolved during validation (the validated
:class:`Machine` holds plain ints), so :meth:`Config.as_dict` -- what the trace header
stores -- records what was actually simulated.  ``kernel.min_free_kbytes = "auto"`` is
left as is: the kernel model computes it from managed pages, as
``init_per_zone_wmark_min()`` does.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Union

from pydantic import (AfterValidator, AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Field,
                      PlainSerializer, PlainValidator, PrivateAttr, Strict, ValidationError,
                      field_validator, model_validator)
from pydantic_core import PydanticCustomError

from oomactors.errors import ConfigError
from oomactors.kernel.gfp import gfp_problem, parse_gfp
from oomactors.kernel.profiles import DEFAULT_PROFILE
from oomactors.kernel.profiles import PROFILES as KERNEL_PROFILES
from oomactors.units import (GiB, MiB, PAGE_SIZE, Duration, format_size, parse_duration,
                             parse_rate, parse_size, to_jiffies)

PROFILES: tuple[str, ...] = tuple(KERNEL_PROFILES)
"""Kernel behaviour profiles a config may name; later versions add to this tuple."""
HZ_VALUES: tuple[int, ...] = (100, 250, 300, 1000)
CAPABILITIES: tuple[str, ...] = ("CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_SYS_RAWIO",
                                 "CAP_IPC_LOCK", "CAP_KILL")
MAX_MEMORY = 64 * 1024 * GiB  # MAX_PHYSMEM_BITS = 46 with 4-level paging
DMA_ZONE_MAX = 16 * MiB  # arch/x86: MAX_DMA_PFN, the 16 MiB an ISA DMA engine reaches
SEED_MAX = 2 ** 64 - 1  # seeds are stored as msgpack u64
UID_MAX = 2 ** 32 - 2  # uid_t is 32 bits and (uid_t)-1 means "no uid"
TASK_COMM_LEN = 16  # include/linux/sched.h; a comm holds TASK_COMM_LEN - 1 characters

# --- field types -----------------------------------------------------------------------

Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Float = Annotated[float, Strict(), AllowInfNan(False)]  # strict float still takes a TOML integer (0 -> 0.0)
NonNegInt = Annotated[int, Strict(), Field(ge=0)]


def _dump_duration(d: Duration) -> dict[str, Any]:
    return {"ns": d.ns, "jiffies": d.jiffies}


def _check(ok: Callable[[Any], bool], problem: str) -> AfterValidator:
    """An AfterValidator raising ``ValueError(problem)`` unless ``ok(value)``.

    Checks run *after* type validation so a wrong type still reads "expected an integer",
    and after the items of a collection, so a failing item is not also reported as a
    length problem (pydantic's ``min_length`` does that, adding a spurious "(+1 more)").
    """
    def check(v: Any) -> Any:
        if not ok(v):
            raise ValueError(problem)
        return v
    return AfterValidator(check)


def _size_or(word: str, positive: bool = False):
    """A before-validator accepting ``word`` (``"auto"``/``"all"``) or a size."""
    def parse(v: Any) -> int | str:
        if v == word:
            return word
        n = parse_size(v)
        if positive and n == 0:
            raise ValueError(f"must be greater than 0 (or {word!r})")
        return n
    return parse


def _positive_rate_or_none(v: Any) -> int | None:
    if v is None:
        return None
    n = parse_rate(v)
    if n == 0:
        raise ValueError("must be greater than 0")
    return n


def _check_comm(name: str) -> str:
    if not name:
        raise ValueError("must not be empty")
    if len(name) > TASK_COMM_LEN - 1:
        raise ValueError(f"longer than {TASK_COMM_LEN - 1} characters (TASK_COMM_LEN)")
    if re.search(r"\s", name):
        raise ValueError("must not contain whitespace")
    if not name.isprintable():
        raise ValueError("must not contain control characters")
    return name


def _min_free(v: Any) -> int | str:
    if v == "auto":
        return v
    if not isinstance(v, int) or isinstance(v, bool) or v < 128:
        raise ValueError("expected an integer >= 128 (kbytes) or \"auto\"")
    return v


def _kbytes_or_auto(v: Any) -> int | str:
    if v == "auto":
        return v
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError("expected an integer >= 0 (kbytes) or \"auto\"")
    return v


def _int_or_auto(lo: int, hi: int) -> Callable[[Any], int | str]:
    """A before-validator for a sysctl that is ``"auto"`` (its boot default) or an integer
    in the range the kernel's sysctl handler accepts."""
    def check(v: Any) -> int | str:
        if v == "auto":
            return v
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"expected an integer from {lo} to {hi}, or \"auto\"")
        return v
    return check


KbytesOrAuto = Annotated[Union[int, Literal["auto"]], BeforeValidator(_kbytes_or_auto)]


Size = Annotated[int, BeforeValidator(parse_size)]
PositiveSize = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]
SizeOrAuto = Annotated[Union[int, Literal["auto"]], BeforeValidator(_size_or("auto"))]
Rate = Annotated[int, BeforeValidator(parse_rate)]
PositiveRate = Annotated[int, BeforeValidator(parse_rate), Field(gt=0)]
OptRate = Annotated[Optional[int], BeforeValidator(_positive_rate_or_none)]
DurationT = Annotated[Duration, PlainValidator(parse_duration),
                      PlainSerializer(_dump_duration)]
PositiveDuration = Annotated[DurationT, _check(lambda d: not d.is_zero(), "must be greater than 0")]
CommName = Annotated[str, Strict(), AfterValidator(_check_comm)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sections ----------------------------------------------------------------------------


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
    min_free_kbytes: Annotated[Union[int, Literal["auto"]], BeforeValidator(_min_free)] = "auto"
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


# --- program steps ------------------------------------------------------------------------


class AllocStep(_Model):
    """Allocate ``size`` bytes in ``chunk``-page pieces (paced by ``rate`` if given)."""

    op: Literal["alloc"]
    size: PositiveSize
    gfp: Str = "GFP_HIGHUSER_MOVABLE"
    order: Int = Field(0, ge=0, le=10)
    rate: OptRate = None
    kind: Literal["anon", "shmem", "kernel"] = "anon"
    chunk: Int = Field(32, ge=1, le=4096)
    on_fail: Literal["exit", "retry", "continue"] = "exit"
    _gfp_mask: int = PrivateAttr(0)

    @field_validator("gfp")
    @classmethod
    def _valid_gfp(cls, text: str) -> str:
        parse_gfp(text)  # raises ValueError("unknown GFP flag ...")
        return text

    def model_post_init(self, context: Any) -> None:
        self._gfp_mask = parse_gfp(self.gfp)

    @model_validator(mode="after")
    def _sensible_gfp(self) -> AllocStep:
        problem = gfp_problem(parse_gfp(self.gfp), user_fault=self.kind != "kernel")
        if problem is not None:
            raise _at(("gfp",), f"{self.gfp!r}: {problem}")
        return self

    @property
    def gfp_mask(self) -> int:
        """The parsed ``gfp`` text as the integer mask the allocator tests."""
        # read from pydantic's private store directly: its __getattr__ is a slow path,
        # and every alloc step asks for its mask
        return self.__pydantic_private__["_gfp_mask"]  # type: ignore[index]


class TouchFileStep(_Model):
    """Read (or write, ``dirty``) ``size`` bytes of a file into the page cache."""

    op: Literal["touch_file"]
    size: PositiveSize
    dirty: Bool = False
    mapped: Bool = True
    rate: OptRate = None


class AccessStep(_Model):
    """A working set the task touches again and again: ``size`` bytes (whole pages) of
    ``kind`` memory (its own mapping), swept ``repeat`` times (omitted: until the task ends) at ``rate``
    bytes per second (omitted: as fast as the CPU allows).  The first sweep faults the pages
    in; later sweeps reference the resident ones and fault back those reclaim took: swap-in
    for anon, a read from disk for page cache (docs/thrashing.md)."""

    op: Literal["access"]
    size: PositiveSize
    kind: Literal["anon", "file", "shmem"] = "anon"
    rate: OptRate = None
    repeat: Optional[Int] = Field(None, ge=1)
    chunk: Int = Field(64, ge=1, le=4096)
    on_fail: Literal["exit", "retry", "continue"] = "exit"  # mmap refused with -ENOMEM


class FreeStep(_Model):
    """Free ``size`` bytes (or ``"all"``) of the process's anonymous memory."""

    op: Literal["free"]
    size: Annotated[Union[int, Literal["all"]], BeforeValidator(_size_or("all", positive=True))]


class ForkStep(_Model):
    """Start a child process (``clone_vm``: a thread-like child sharing the mm)."""

    op: Literal["fork"]
    comm: Optional[CommName] = None  # None: the parent's name
    clone_vm: Bool = False
    program: tuple[Step, ...] = ()
    on_fail: Literal["exit", "retry", "continue"] = "continue"  # fork refused with -ENOMEM


class ExitStep(_Model):
    op: Literal["exit"]
    code: Int = Field(0, ge=0, le=255)


class SleepStep(_Model):
    """Interruptible sleep (TASK_INTERRUPTIBLE)."""

    op: Literal["sleep"]
    time: DurationT


class ComputeStep(_Model):
    """Burn CPU for ``time`` (runnable the whole while)."""

    op: Literal["compute"]
    time: DurationT


class BlockStep(_Model):
    """Uninterruptible sleep (TASK_UNINTERRUPTIBLE), by default holding mmap_lock."""

    op: Literal["block"]
    time: DurationT
    hold_mmap_lock: Bool = True


class SetOomScoreAdjStep(_Model):
    op: Literal["set_oom_score_adj"]
    value: Int = Field(ge=-1000, le=1000)


class WriteStep(_Model):
    """Write to ``size`` bytes of the process's anonymous memory: pages still shared
    copy-on-write with its fork parent get private copies (each a new page)."""

    op: Literal["write"]
    size: PositiveSize
    chunk: Int = Field(32, ge=1, le=4096)


class RepeatStep(_Model):
    """Run ``steps`` ``times`` times (``None``, i.e. the key omitted: forever)."""

    op: Literal["repeat"]
    times: Optional[Int] = Field(None, ge=1)
    steps: Annotated[tuple[Step, ...], _check(bool, "must not be empty")]


Step = Annotated[Union[AllocStep, TouchFileStep, AccessStep, FreeStep, ForkStep, ExitStep, SleepStep,
                       ComputeStep, BlockStep, SetOomScoreAdjStep, RepeatStep, WriteStep],
                 Field(discriminator="op")]
STEP_TYPES: dict[str, type[_Model]] = {
    cls.model_fields["op"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in (AllocStep, TouchFileStep, AccessStep, FreeStep, ForkStep, ExitStep, SleepStep,
                ComputeStep, BlockStep, SetOomScoreAdjStep, RepeatStep, WriteStep)
}
OPS: tuple[str, ...] = tuple(STEP_TYPES)
ForkStep.model_rebuild()
RepeatStep.model_rebuild()


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


class Config(_Model):
    """A whole run.  Every section has defaults, so an empty file is a valid config."""

    machine: Machine = Field(default_factory=Machine)
    kernel: Kernel = Field(default_factory=Kernel)
    run: Run = Field(default_factory=Run)
    tasks: tuple[Task, ...] = ()
    memcgs: tuple[Memcg, ...] = ()
    cpusets: tuple[Cpuset, ...] = ()
    cpuset_updates: tuple[CpusetUpdate, ...] = ()
    policy: Optional[PolicyTable] = None

    @model_validator(mode="after")
    def _numa(self) -> Config:
        """Cpuset names are unique and known where used; node and CPU ids exist; a
        mempolicy keeps at least one node of its cpuset (else set_mempolicy: EINVAL)."""
        nodes, cpus = self.machine.nodes, self.machine.cpus

        def check_nodes(path: tuple, ids: tuple[int, ...]) -> None:
            for j, n in enumerate(ids):
                if n >= nodes:
                    raise _at(path + (j,), f"node {n} does not exist (machine.nodes = {nodes})")

        mems: dict[str, frozenset[int]] = {"/": frozenset(range(nodes))}
        for i, c in enumerate(self.cpusets):
            if c.name in mems:
                raise _at(("cpusets", i, "name"), f"duplicate cpuset {c.name!r}")
            check_nodes(("cpusets", i, "mems"), c.mems)
            for j, cpu in enumerate(c.cpus or ()):
                if cpu >= cpus:
                    raise _at(("cpusets", i, "cpus", j), f"CPU {cpu} does not exist (machine.cpus = {cpus})")
            mems[c.name] = frozenset(c.mems)
        for i, t in enumerate(self.tasks):
            if t.cpuset not in mems:
                raise _at(("tasks", i, "cpuset"), f"unknown cpuset {t.cpuset!r}")
            if t.mempolicy is not None:
                check_nodes(("tasks", i, "mempolicy", "nodes"), t.mempolicy.nodes)
                if t.mempolicy.nodes and not frozenset(t.mempolicy.nodes) & mems[t.cpuset]:
                    raise _at(("tasks", i, "mempolicy", "nodes"),
                              f"no node of the policy is in cpuset {t.cpuset!r} (set_mempolicy: EINVAL)")
        for i, u in enumerate(self.cpuset_updates):
            if u.cpuset == "/" or u.cpuset not in mems:
                raise _at(("cpuset_updates", i, "cpuset"),
                          "the root cpuset's mems cannot be written" if u.cpuset == "/"
                          else f"unknown cpuset {u.cpuset!r}")
            check_nodes(("cpuset_updates", i, "mems"), u.mems)
        return self

    @model_validator(mode="after")
    def _starts_in_the_run(self) -> Config:
        """A task group that starts at or after the end of the run would never run: refused,
        since it is almost always a unit slip ("30ms" for "30s")."""
        hz, end = self.kernel.hz, to_jiffies(self.run.duration, self.kernel.hz)
        for i, t in enumerate(self.tasks):
            if to_jiffies(t.start, hz) >= end:
                raise _at(("tasks", i, "start"), f"{t.start} is not before the end of the run "
                                                 f"(run.duration = {self.run.duration})")
        return self

    @model_validator(mode="after")
    def _memcg_tree(self) -> Config:
        """Parents are declared before their children; tasks name declared memcgs; the
        memory tasks hold from boot fits each memory.max."""
        known = {"/"}
        for i, c in enumerate(self.memcgs):
            if c.path in known:
                raise _at(("memcgs", i, "path"), f"duplicate memcg {c.path!r}")
            parent = c.path.rsplit("/", 1)[0] or "/"
            if parent not in known:
                raise _at(("memcgs", i, "path"), f"parent {parent!r} must be declared before it")
            known.add(c.path)
        for i, t in enumerate(self.tasks):
            if t.memcg not in known:
                raise _at(("tasks", i, "memcg"), f"unknown memcg {t.memcg!r}")
        for j, c in enumerate(self.memcgs):
            if c.max == "max":
                continue
            boot = sum(t.rss // PAGE_SIZE * t.count for t in self.tasks
                       if t.memcg == c.path or t.memcg.startswith(c.path + "/"))
            if boot > c.max // PAGE_SIZE:
                raise _at(("memcgs", j, "max"), f"smaller than the rss its tasks hold from boot "
                                                f"({format_size(boot * PAGE_SIZE)})")
        return self

    @model_validator(mode="after")
    def _policy_fits(self) -> Config:
        """The [policy]'s parameters agree with the rest of the config (the cgroups they
        name are declared ...): the policy's ``check_config`` hook, after the memcgs."""
        if self.policy is None:
            return self
        from policies.registry import policy_class, validate_params
        check = getattr(policy_class(self.policy.name), "check_config", None)
        if check is None:  # a plugin class that does not derive from policies.api
            return self
        for key, problem in check(validate_params(self.policy.name, self.policy.params), self):
            raise _at(("policy", *key), problem)
        return self

    @field_validator("tasks")
    @classmethod
    def _unique_names(cls, tasks: tuple[Task, ...]) -> tuple[Task, ...]:
        seen: dict[str, int] = {}
        for i, task in enumerate(tasks):
            if task.name in seen:
                raise _at((i, "name"), f"duplicate task name {task.name!r} "
                                       f"(also tasks[{seen[task.name]}])")
            seen[task.name] = i
        return tasks

    def as_dict(self) -> dict[str, Any]:
        """The normalized config as plain ints/strings/bools/lists/dicts (for the trace
        header).  Durations become ``{"ns": .., "jiffies": ..}``; ``Config.model_validate``
        of the result gives back an equal config."""
        d = self.model_dump(mode="json")
        # all switches on is the kernel as it is: left out, so traces of ordinary configs
        # keep the header they had before [kernel.fixes] existed
        if self.kernel.fixes == Fixes():
            del d["kernel"]["fixes"]
        # likewise the SIGTERM dispositions and PSI samples when left at their defaults
        if self.run.psi_samples == Duration(0):
            del d["run"]["psi_samples"]
        for t, td in zip(self.tasks, d["tasks"]):
            if t.on_sigterm == "exit" and t.sigterm_exit_delay == Duration(0):
                del td["on_sigterm"], td["sigterm_exit_delay"]
        return d


# --- loading and error reporting ------------------------------------------------------------


def _at(subpath: tuple, problem: str) -> PydanticCustomError:
    """An error to raise from a validator that points *below* the validated key."""
    return PydanticCustomError("at_path", "{problem}", {"subpath": subpath, "problem": problem})


_RANGE = {"greater_than_equal": ("ge", "must be at least {}"),
          "greater_than": ("gt", "must be greater than {}"),
          "less_than_equal": ("le", "must be at most {}"),
          "less_than": ("lt", "must be less than {}")}
_FIXED = {
    **dict.fromkeys(("missing", "union_tag_not_found"), "missing required key"),
    "extra_forbidden": "unknown key",
    **dict.fromkeys(("int_type", "int_parsing", "int_from_float"), "expected an integer"),
    **dict.fromkeys(("float_type", "float_parsing"), "expected a number"),
    "finite_number": "expected a finite number (not nan or inf)",
    **dict.fromkeys(("bool_type", "bool_parsing"), "expected true or false"),
    "string_type": "expected a string",
    **dict.fromkeys(("tuple_type", "list_type"), "expected an array"),
    **dict.fromkeys(("dict_type", "model_type", "model_attributes_type"), "expected a table"),
}


def _problem(err: dict[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _FIXED:
        return _FIXED[kind]
    if kind in _RANGE:
        key, text = _RANGE[kind]
        return text.format(ctx[key])
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "at_path":
        return ctx["problem"]
    if kind == "literal_error":
        return f"expected {ctx['expected']}"
    if kind == "union_tag_invalid":
        return f"unknown op {ctx['tag']!r} (expected {ctx['expected_tags']})"
    return err["msg"]


def _key_path(loc: list, data: Any) -> str:
    """``('tasks', 0, 'program', 2, 'alloc', 'size')`` -> ``tasks[0].program[2].size``.

    Walks the input alongside ``loc`` so it can tell the discriminator tag pydantic
    inserts (``'alloc'``: not a key of the step, but its ``op``) from a real key.
    """
    out: list[str] = []
    cur, prev = data, None
    for comp in loc:
        if isinstance(comp, int):
            out.append(f"[{comp}]")
            cur = cur[comp] if isinstance(cur, list) and -len(cur) <= comp < len(cur) else None
        elif isinstance(cur, dict) and comp not in cur and cur.get("op") == comp:
            continue
        elif cur is None and isinstance(prev, int) and comp in OPS:
            continue
        else:
            out.append(f".{comp}" if out else str(comp))
            cur = cur.get(comp) if isinstance(cur, dict) else None
        prev = comp
    return "".join(out)


def _format_error(exc: ValidationError, data: Any, source: str) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = list(first["loc"])
    if first["type"] == "at_path":
        loc += list(first["ctx"]["subpath"])
    elif first["type"] in ("union_tag_not_found", "union_tag_invalid"):
        loc.append("op")
    path = _key_path(loc, data)
    problem = " ".join(_problem(first).splitlines())
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {path}: {problem}{more}" if path else f"{source}: {problem}{more}"


MAX_CONFIG_BYTES = 1024 * 1024
MAX_NESTING = 48
"""Arrays and inline tables nest at most this deep (a ``fork`` or ``repeat`` step inside
another takes two levels), far beyond any real program and well inside Python's stack."""


def _too_deep(text: str) -> str | None:
    """Where ``[``/``{`` nesting first passes MAX_NESTING (``line N col M``), or None.

    Counted on the text before parsing, outside strings and comments, so neither the TOML
    parser nor validation recurses deeper than that."""
    depth, line, col, i, n = 0, 1, 0, 0, len(text)
    while i < n:
        c = text[i]
        col += 1
        if c == "\n":
            line, col = line + 1, 0
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c in "\"'":
            q = text[i:i + 3] if text[i:i + 3] in ('"""', "'''") else c
            j = i + len(q)
            while j < n and not text.startswith(q, j):
                if c == '"' and text[j] == "\\":
                    j += 1
                elif text[j] == "\n":
                    if len(q) == 1:
                        break  # an unterminated string: the parser will say so
                    line, col = line + 1, 0
                j += 1
            col += j + len(q) - i - 1
            i = j + len(q)
            continue
        elif c in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return f"line {line} col {col}"
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return None


_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = "(at end of document)"


def parse_config(text: str, source: str = "<config>") -> Config:
    """Validate TOML *text*; *source* names it in error messages (usually the path)."""
    text = text.removeprefix("\ufeff")  # a UTF-8 byte order mark, as some editors write
    if (where := _too_deep(text)) is not None:
        raise ConfigError(f"{source}: {where}: nested more than {MAX_NESTING} levels deep")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = " ".join(str(e).splitlines())
        if (m := _TOML_POS.search(msg)) is not None:
            where, msg = f"line {m[1]} col {m[2]}: ", msg[: m.start()]
        elif msg.endswith(_TOML_END):  # point at the end of the last line instead
            lines = text.splitlines() or [""]
            where = f"line {len(lines)} col {len(lines[-1]) + 1}: "
            msg = msg[: -len(_TOML_END)].rstrip()
        else:
            where = ""
        raise ConfigError(f"{source}: {where}TOML syntax error: {msg}") from e
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, data, source)) from e


def read_capped_text(path: str | Path, cap: int, error: type[Exception], *, unreadable: str,
                     bad: str) -> str:
    """The UTF-8 text of the file at *path*, read with a bounded read (``/dev/zero`` has no
    size to stat and must not be read for ever).  Every failure is one ``error`` line
    naming the file: ``"PATH: UNREADABLE: why"`` when it cannot be opened or read,
    ``"PATH: BAD: why"`` when it is over ``cap`` bytes or not UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError as e:
        raise error(f"{path}: {unreadable}: {e.strerror or e}") from e
    if len(data) > cap:
        raise error(f"{path}: {bad}: larger than {cap // 1024 // 1024} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: {bad}: not UTF-8 text (byte {e.start})") from e


def load_config(path: str | Path) -> Config:
    """Read and validate the TOML config at *path* (at most :data:`MAX_CONFIG_BYTES`: a
    config is a page or two of text)."""
    text = read_capped_text(path, MAX_CONFIG_BYTES, ConfigError, unreadable="cannot read config",
                            bad="cannot read config")
    return parse_config(text, str(path))


def default_config_text() -> str:
    """The embedded quickstart config (``oomactors/data/default.toml``), comments and all."""
    return resources.files("oomactors").joinpath("data", "default.toml").read_text("utf-8")


def load_default() -> Config:
    return parse_config(default_config_text(), "default.toml")
