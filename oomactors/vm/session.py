"""One VM run of a config: plan, boot, parse; and the model's machine calibrated from it."""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..units import PAGE_SIZE
from .assets import VmError, kernel_image
from .guest import boot, check_boot
from .parse import summarize_vm
from .program import plan


def _nodes_of(cfg: Config):
    """The nodes the OOM's allocation could use, by the invoking task's name."""
    cpusets = {c.name: c.mems for c in cfg.cpusets}

    def nodes(comm: str | None, constraint: str) -> tuple[int, ...] | None:
        task = next((t for t in cfg.tasks if t.name == comm), None)
        if task is None:
            return None
        if constraint == "CONSTRAINT_CPUSET" and task.cpuset != "/":
            return tuple(cpusets[task.cpuset])
        if constraint == "CONSTRAINT_MEMORY_POLICY" and task.mempolicy is not None:
            return tuple(task.mempolicy.nodes)
        return None
    return nodes


def run_vm(cfg: Config, kernel: str | None = None, timeout_s: float | None = None,
           console_path: str | None = None) -> dict[str, Any]:
    """Run ``cfg``'s workload in QEMU: the summary dict (raises VmError for bad input, a
    kernel that does not boot, a workload that hangs)."""
    p = plan(cfg)  # refuses what cannot be expressed before anything is fetched or booted
    image = kernel_image(kernel)
    guest = boot(p, image, timeout_s, keep=console_path)
    check_boot(guest, image)
    summary = summarize_vm(guest.console, guest.events, nodes_of=_nodes_of(cfg), ended=guest.ended)
    if summary["runner_errors"]:
        raise VmError(f"the workload runner could not set a task up in the guest: {summary['runner_errors'][0]}")
    if guest.ended == "timeout" and summary["panic"] is None:
        raise VmError(f"the workload did not finish: the VM was stopped after "
                      f"{p.timeout_s if timeout_s is None else timeout_s:.0f}s (timeout)")
    summary["notes"] = p.notes
    summary["wall_seconds"] = round(guest.wall_s, 3)
    summary["console"] = guest.console
    return summary


def calibration(cfg: Config, vm: dict[str, Any]) -> dict[str, Any]:
    """The model machine's boot-time memory from the guest's /proc/meminfo before the workload.

    * ``reserved`` = RAM the config gives minus MemTotal (totalram_pages: the managed
      pages; the kernel image, memmap, firmware holes and the rest never reach the buddy);
    * ``slab_reclaimable`` = SReclaimable;
    * ``slab_unreclaimable`` = everything else the guest holds and cannot reclaim without
      swap: MemTotal - MemFree - SReclaimable - the clean file cache (the rootfs's files
      are shmem, kernel stacks, page tables, per-CPU areas, vmalloc'd and early memory);
    * ``page_cache`` = clean, unmapped file pages (Cached - Shmem + Buffers).
    """
    mi = vm["meminfo"]
    if not mi.get("MemTotal"):
        return {}
    kib = 1024
    memory = cfg.machine.memory
    total = mi["MemTotal"] * kib
    free = mi["MemFree"] * kib
    sreclaim = mi.get("SReclaimable", 0) * kib
    clean_file = max(0, (mi.get("Cached", 0) - mi.get("Shmem", 0) + mi.get("Buffers", 0))) * kib
    unreclaim = max(0, total - free - sreclaim - clean_file)

    def pages(n: int) -> int:
        return n // PAGE_SIZE * PAGE_SIZE

    return {"reserved": pages(memory - total), "slab_reclaimable": pages(sreclaim),
            "slab_unreclaimable": pages(unreclaim), "page_cache": pages(clean_file) + cfg.machine.page_cache,
            "from": {k: mi.get(k) for k in ("MemTotal", "MemFree", "Cached", "Shmem", "Buffers", "SReclaimable",
                                             "SUnreclaim", "KernelStack", "PageTables", "Percpu")}}


def calibrated_config(cfg: Config, cal: dict[str, Any], profile: str) -> Config:
    """``cfg`` with the calibrated machine sizes and the guest kernel's profile."""
    d = cfg.as_dict()
    for key in ("reserved", "slab_reclaimable", "slab_unreclaimable", "page_cache"):
        if key in cal:
            d["machine"][key] = f"{cal[key] // PAGE_SIZE} pages"
    d["kernel"]["profile"] = profile
    return Config.model_validate(d)
