"""memory.min and memory.low: effective protection and the reclaim tests that honour it
(mm/memcontrol.c mem_cgroup_calculate_protection, mem_cgroup_below_min/low, Linux 5.10)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .memcontrol import MemCgroup


# --- protection (memory.min / memory.low) ---------------------------------------------------------
def effective_protection(usage: int, parent_usage: int, setting: int, parent_effective: int,
                         siblings_protected: int) -> int:
    """A child's share of its parent's protection (memory_recursiveprot is off by default,
    so unclaimed parental protection is not handed out)."""
    protected = min(usage, setting)
    # the level claims more than the parent affords: shares in proportion to what they use
    if siblings_protected > parent_effective:
        return protected * parent_effective // siblings_protected
    return protected


def mem_cgroup_calculate_protection(root: MemCgroup, memcg: MemCgroup) -> None:
    """emin/elow of ``memcg`` for a reclaim of ``root``; a top-down walk keeps parents fresh.
    The reclaim target's own values are left stale, as 5.10 does."""
    if memcg is root:
        return
    mem = memcg.memory
    usage = mem.usage
    if not usage:
        return
    parent = memcg.parent
    if parent is None:
        return
    if parent is root:
        mem.emin = mem.min
        mem.elow = mem.low
        return
    pmem = parent.memory
    siblings = [c.memory for c in parent.children]
    mem.emin = effective_protection(usage, pmem.usage, mem.min, pmem.emin,
                                    sum(min(s.usage, s.min) for s in siblings))
    mem.elow = effective_protection(usage, pmem.usage, mem.low, pmem.elow,
                                    sum(min(s.usage, s.low) for s in siblings))


def mem_cgroup_below_min(memcg: MemCgroup) -> bool:
    return memcg.memory.emin >= memcg.memory.usage


def mem_cgroup_below_low(memcg: MemCgroup) -> bool:
    return memcg.memory.elow >= memcg.memory.usage


def mem_cgroup_protection(root: MemCgroup, memcg: MemCgroup, in_low_reclaim: bool) -> int:
    """How many pages of this memcg the scan should spare: none for the reclaim target."""
    if memcg is root:
        return 0
    if in_low_reclaim:
        return memcg.memory.emin
    return max(memcg.memory.emin, memcg.memory.elow)
