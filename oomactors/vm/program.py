"""A config turned into what the guest runs: the runner's program text, the ``/init``
script (sysctls, swap, cgroups, calibration dumps) and the machine QEMU emulates.

What the VM cannot express is refused here, before anything boots, with the key path of
the culprit (``tasks[1].program[0]: alloc kind "kernel" ...``): kernel allocations and
orders above 0 (a user program only faults in order-0 user pages), ``block`` (no user
program can sleep uninterruptibly for a chosen time), explicit boot-time memory sizes
(the VM has what its kernel has: ``vm compare`` calibrates the model instead), model-only
switches (``[kernel.fixes]``, 2.4's commit heuristic, a non-``linux`` ``[policy]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..config import (AllocStep, BlockStep, ComputeStep, Config, ExitStep, Fixes, ForkStep, FreeStep,
                      Machine, RepeatStep, SetOomScoreAdjStep, SleepStep, TouchFileStep)
from ..units import GiB, MiB, PAGE_SIZE, format_size
from .assets import VmError

CAP_BITS = {"CAP_KILL": 5, "CAP_IPC_LOCK": 14, "CAP_SYS_RAWIO": 17, "CAP_SYS_ADMIN": 21,
            "CAP_SYS_RESOURCE": 24}
USER_GFP = ("GFP_HIGHUSER_MOVABLE", "GFP_HIGHUSER", "GFP_USER")
MAX_PROCESSES = 2000
NVME = "/dev/nvme0n"  # one NVMe controller (built into the cloud kernel): swap, then the file disk
CACHE_DISK = 1 * GiB  # a sparse image: touch_file reads it into the page cache (wrapping round)
EVENTS_TTY = "/dev/ttyS1"
# dumped for each memcg after the workload (memory.peak: 5.19+)
MEMCG_FILES = ("current", "peak", "max", "high", "swap.current", "swap.max")


@dataclass
class Plan:
    """Everything one VM run needs, derived from a config."""

    program: str
    init: str
    memory: int
    cpus: int
    node_memory: tuple[int, ...]
    node_cpus: tuple[tuple[int, ...], ...]
    swap: int
    cache_disk: int
    memcg_dirs: dict[str, str] = field(default_factory=dict)  # config path -> /sys/fs/cgroup/...
    timeout_s: float = 60.0
    notes: list[str] = field(default_factory=list)


def _ns(d: Any, hz: int) -> int:
    return d.ns if d.jiffies is None else d.jiffies * 1_000_000_000 // hz


def _ms(d: Any, hz: int) -> int:
    return _ns(d, hz) // 1_000_000


def _steps(steps: tuple, where: str, hz: int, out: list[str]) -> int:
    """Append the runner lines of ``steps``; the number of lines written."""
    n0 = len(out)
    for i, s in enumerate(steps):
        at = f"{where}[{i}]"
        if isinstance(s, AllocStep):
            if s.kind == "kernel":
                raise VmError(f"{at}: alloc kind \"kernel\" cannot be expressed in the VM: a user program "
                              "cannot make the kernel allocate for it")
            if s.order != 0:
                raise VmError(f"{at}: alloc order {s.order} cannot be expressed in the VM: user faults "
                              "allocate order-0 pages (transparent huge pages are off)")
            if s.gfp not in USER_GFP:
                raise VmError(f"{at}: alloc gfp {s.gfp!r} cannot be expressed in the VM: a user fault "
                              "allocates with GFP_HIGHUSER_MOVABLE")
            out.append(f"alloc kind={s.kind} size={s.size} chunk={s.chunk} rate={s.rate or 0} "
                       f"on_fail={s.on_fail}")
        elif isinstance(s, TouchFileStep):
            out.append(f"touch_file size={s.size} dirty={int(s.dirty)} mapped={int(s.mapped)} "
                       f"rate={s.rate or 0}")
        elif isinstance(s, FreeStep):
            out.append(f"free size={s.size}")
        elif isinstance(s, SleepStep):
            out.append(f"sleep ns={_ns(s.time, hz)}")
        elif isinstance(s, ComputeStep):
            out.append(f"compute ns={_ns(s.time, hz)}")
        elif isinstance(s, BlockStep):
            raise VmError(f"{at}: block cannot be expressed in the VM: no user program can sleep "
                          "uninterruptibly (D state) for a chosen time")
        elif isinstance(s, SetOomScoreAdjStep):
            out.append(f"adj value={s.value}")
        elif isinstance(s, ExitStep):
            out.append(f"exit code={s.code}")
        elif isinstance(s, ForkStep):
            head = len(out)
            out.append("")
            body = _steps(s.program, f"{at}.program", hz, out)
            out[head] = (f"fork comm={s.comm or '-'} clone_vm={int(s.clone_vm)} on_fail={s.on_fail} "
                         f"body={body}")
        elif isinstance(s, RepeatStep):
            head = len(out)
            out.append("")
            body = _steps(s.steps, f"{at}.steps", hz, out)
            out[head] = f"repeat times={s.times or 0} body={body}"
        else:  # pragma: no cover - every op of the config schema is handled above
            raise VmError(f"{at}: step {type(s).__name__} cannot be expressed in the VM")
    return len(out) - n0


def _auto_machine(m: Machine) -> dict[str, int]:
    """The sizes ``"auto"`` resolves to (config.Machine), to tell them from explicit ones."""
    node0 = m.node_memory[0]
    page = lambda n: n // PAGE_SIZE * PAGE_SIZE  # noqa: E731
    return {"dma32": page(min(node0 // 4, GiB)), "reserved": page(min(m.memory // 64, 256 * MiB)),
            "slab_reclaimable": page(m.memory // 128), "slab_unreclaimable": page(m.memory // 256)}


def check_machine(cfg: Config) -> list[str]:
    """Refuse what the VM cannot be; the notes on what it ignores."""
    m, k = cfg.machine, cfg.kernel
    for key, auto in _auto_machine(m).items():
        if getattr(m, key) != auto:
            raise VmError(f"machine.{key}: an explicit size cannot be expressed in the VM: the guest "
                          f"kernel decides it (leave it \"auto\"; `vm compare` calibrates the model)")
    if m.dirty:
        raise VmError("machine.dirty: dirty page cache at boot cannot be expressed in the VM")
    if m.fragmentation:
        raise VmError("machine.fragmentation: a fragmented boot cannot be expressed in the VM")
    if k.fixes != Fixes():
        raise VmError("kernel.fixes: the real kernel has every fix; a switched-off fix cannot be "
                      "expressed in the VM")
    if k.overcommit_heuristic != "modern":
        raise VmError("kernel.overcommit_heuristic: the guest kernel uses the modern heuristic")
    if tuple(k.lowmem_reserve_ratio) != (256, 256, 32):
        raise VmError("kernel.lowmem_reserve_ratio: only the default can be expressed in the VM")
    if cfg.policy is not None and cfg.policy.name != "linux":
        raise VmError(f"policy.name: {cfg.policy.name!r} cannot run in the VM: the kernel chooses "
                      "its victims itself")
    for i, c in enumerate(cfg.cpusets):
        if c.mem_hardwall:
            raise VmError(f"cpusets[{i}].mem_hardwall: cgroup v2 cpusets have no mem_hardwall")
    total = sum(t.count for t in cfg.tasks)
    if total > MAX_PROCESSES:
        raise VmError(f"tasks: {total} processes at start; the VM runs at most {MAX_PROCESSES}")
    notes = []
    if m.nodes > 1 and m.memory // m.nodes < 64 * MiB:
        raise VmError(f"machine.memory: {format_size(m.memory // m.nodes)} per node is too small to boot "
                      "(at least 64MiB a node)")
    if m.memory < 96 * MiB:
        raise VmError(f"machine.memory: {format_size(m.memory)} is too small for the guest kernel to boot "
                      "(at least 96MiB)")
    if m.memory > 16 * GiB:
        raise VmError(f"machine.memory: {format_size(m.memory)} is more than the VM runner emulates (16GiB)")
    if m.cpus > 16:
        raise VmError(f"machine.cpus: {m.cpus} CPUs is more than the VM runner emulates (16)")
    notes.append("the guest kernel has its own HZ, time slice and per-CPU lists; kernel.hz, time_slice, "
                 "percpu_drift, pcp_high, pcp_batch and the bandwidths are the model's only")
    return notes


def cgroup_layout(cfg: Config) -> tuple[dict[str, str], dict[int, str], list[str]]:
    """Where each memcg is (/sys/fs/cgroup/...), where each task group's processes go, and
    the shell lines that build the hierarchy.

    cgroup v2 keeps processes out of a cgroup that hands controllers down to children (the
    "no internal processes" rule), and a cpuset is a controller of the same tree: a task in
    memcg /a and cpuset c runs in the leaf /a/cs-c; a task of /a whose cgroup has children
    runs in /a/tasks.  /a's memory.max still bounds them both.
    """
    root = "/sys/fs/cgroup"
    for i, c in enumerate(cfg.memcgs):
        if not re.fullmatch(r"(/[\w.-]+)+", c.path):
            raise VmError(f"memcgs[{i}].path: {c.path!r} cannot be a cgroup in the VM's init script: "
                          "use letters, digits, '_', '.', '-' and '/'")
    for i, cs in enumerate(cfg.cpusets):
        if not re.fullmatch(r"[\w.-]+", cs.name):
            raise VmError(f"cpusets[{i}].name: {cs.name!r} cannot be a cgroup in the VM's init script: "
                          "use letters, digits, '_', '.' and '-'")
    leaf: dict[int, str] = {}
    memcg_dirs = {"/": root}
    for c in cfg.memcgs:
        memcg_dirs[c.path] = root + c.path
    cpusets = {c.name: c for c in cfg.cpusets}
    children: dict[str, set[str]] = {p: set() for p in memcg_dirs}
    for c in cfg.memcgs:
        children[c.path.rsplit("/", 1)[0] or "/"].add(c.path)
    wanted: dict[int, str] = {}
    for i, t in enumerate(cfg.tasks):
        base = "" if t.memcg == "/" else t.memcg
        wanted[i] = f"{base}/cs-{t.cpuset}" if t.cpuset != "/" else (base or "/")
        if t.cpuset != "/":
            children.setdefault(t.memcg, set()).add(wanted[i])
    for i, t in enumerate(cfg.tasks):
        if t.cpuset == "/" and t.memcg != "/" and children.get(t.memcg):
            wanted[i] = f"{t.memcg}/tasks"
            children[t.memcg].add(wanted[i])
    lines = []
    use_cpuset = bool(cfg.cpusets)
    ctrl = "+memory +cpuset" if use_cpuset else "+memory"
    lines.append(f"must sh -c 'echo \"{ctrl}\" > {root}/cgroup.subtree_control'")
    made = {"/"}

    def make(path: str) -> None:
        if path in made:
            return
        parent = path.rsplit("/", 1)[0] or "/"
        make(parent)
        lines.append(f"must mkdir -p {root}{path}")
        if parent != "/" and parent not in enabled:
            lines.append(f"must sh -c 'echo \"{ctrl}\" > {root}{parent}/cgroup.subtree_control'")
            enabled.add(parent)
        made.add(path)

    enabled: set[str] = set()
    configured: set[str] = set()
    for c in cfg.memcgs:
        make(c.path)
        for key, fname in (("max", "memory.max"), ("high", "memory.high"), ("swap_max", "memory.swap.max")):
            v = getattr(c, key)
            if v != "max":
                lines.append(f"must sh -c 'echo {v} > {root}{c.path}/{fname}'")
        for key, fname in (("min", "memory.min"), ("low", "memory.low")):
            if getattr(c, key):
                lines.append(f"must sh -c 'echo {getattr(c, key)} > {root}{c.path}/{fname}'")
        if c.oom_group:
            lines.append(f"must sh -c 'echo 1 > {root}{c.path}/memory.oom.group'")
    for i, t in enumerate(cfg.tasks):
        path = wanted[i]
        make(path)
        if t.cpuset != "/" and path not in configured:
            cs = cpusets[t.cpuset]
            if cs.cpus:
                lines.append(f"must sh -c 'echo {','.join(map(str, cs.cpus))} > {root}{path}/cpuset.cpus'")
            lines.append(f"must sh -c 'echo {','.join(map(str, cs.mems))} > {root}{path}/cpuset.mems'")
            configured.add(path)
        leaf[i] = root if path == "/" else root + path
    # a cpuset nobody runs in still exists (cpuset_updates may name it)
    for cs in cfg.cpusets:
        path = f"/cs-{cs.name}"
        if not any(p.endswith(path) for p in made):
            make(path)
            lines.append(f"must sh -c 'echo {','.join(map(str, cs.mems))} > {root}{path}/cpuset.mems'")
    return memcg_dirs, leaf, lines


def program_text(cfg: Config, leaf: dict[int, str]) -> str:
    hz = cfg.kernel.hz
    out = [f"run duration_ms={_ms(cfg.run.duration, hz)} idle_stop={int(cfg.run.stop_when_idle)}"]
    for u in cfg.cpuset_updates:
        for i, t in enumerate(cfg.tasks):
            if t.cpuset == u.cpuset:
                out.append(f"update at_ms={_ms(u.at, hz)} path={leaf[i]} mems={','.join(map(str, u.mems))}")
    for i, t in enumerate(cfg.tasks):
        body: list[str] = []
        _steps(t.program, f"tasks[{i}].program", hz, body)
        caps = sum(1 << CAP_BITS[c] for c in t.caps)
        mpol, nodes = ("none", 0) if t.mempolicy is None else (
            t.mempolicy.mode, sum(1 << n for n in t.mempolicy.nodes))
        out.append(f"task name={t.name} count={t.count} uid={t.uid} caps={caps:x} adj={t.oom_score_adj} "
                   f"nice={t.nice} start_ms={_ms(t.start, hz)} stagger_ms={_ms(t.stagger, hz)} "
                   f"threads={t.threads} cgroup={leaf[i]} mpol={mpol} nodes={nodes:#x} rss={t.rss} "
                   f"nsteps={len(body)}")
        out.extend(body)
    return "\n".join(out) + "\n"


SYSCTLS = ("panic_on_oom", "oom_kill_allocating_task", "oom_dump_tasks", "watermark_scale_factor")


def init_script(cfg: Config, cg_lines: list[str], memcg_dirs: dict[str, str], plan_uses_file: bool = False) -> str:
    k, m = cfg.kernel, cfg.machine
    ev = EVENTS_TTY
    sh = [
        "#!/bin/busybox sh",
        "/bin/busybox --install -s /bin",
        "export PATH=/bin",
        "mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev",
        f"stty -F {ev} raw -echo 2>/dev/null",
        f"exec 3>{ev}",
        "must() { \"$@\" || { echo \"=setup-failed $*\" >&3; poweroff -f; }; }",
        "must mount -t cgroup2 none /sys/fs/cgroup",
        "echo never > /sys/kernel/mm/transparent_hugepage/enabled",
    ]
    for name in SYSCTLS:
        sh.append(f"must sysctl -q -w vm.{name}={getattr(k, name)}")
    for name in ("min_free_kbytes", "admin_reserve_kbytes", "user_reserve_kbytes"):
        v = getattr(k, name)
        if v != "auto":
            sh.append(f"must sysctl -q -w vm.{name}={v}")
    disk = 1
    if m.swap or m.page_cache or plan_uses_file:
        # the NVMe namespaces are scanned asynchronously: /init may start before they exist
        sh.append(f"i=0; while [ ! -b {NVME}1 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done")
    if m.swap:
        sh += [f"must mkswap {NVME}{disk} >/dev/null", f"must swapon {NVME}{disk}"]
        disk += 1
    if m.page_cache:
        sh.append(f"must dd if={NVME}{disk} of=/dev/null bs=1M count={m.page_cache // MiB} 2>/dev/null")
    sh += cg_lines
    # the commit policy last, so that the set-up's own forks are not refused; writing
    # overcommit_kbytes zeroes overcommit_ratio and the reverse (mm/util.c): write one
    if k.overcommit_kbytes:
        sh.append(f"must sysctl -q -w vm.overcommit_kbytes={k.overcommit_kbytes}")
    else:
        sh.append(f"must sysctl -q -w vm.overcommit_ratio={k.overcommit_ratio}")
    sh.append(f"must sysctl -q -w vm.overcommit_memory={k.overcommit_memory}")
    sh += ["echo =meminfo >&3", "cat /proc/meminfo >&3",
           "for n in /sys/devices/system/node/node*; do echo \"=node ${n##*node}\" >&3; "
           "cat $n/meminfo >&3; done",
           "echo =zoneinfo >&3", "grep -E '^Node|present|managed' /proc/zoneinfo >&3",
           "echo =workload >&3",
           f"OOMACTORS_BLOCKDEV={NVME}{disk} /runner /prog {ev}",
           "echo =workload-end >&3",
           # after the workload memory may still be full: shell builtins only, no fork
           # that an OOM (or oom_kill_allocating_task) could hit
           "dump() { while read -r l; do echo \"$l\" >&3; done < \"$1\"; }"]
    for path, d in memcg_dirs.items():
        if path != "/":
            sh += [f"echo '=memcg {path}' >&3", f"dump {d}/memory.events",
                   f"for f in {' '.join(MEMCG_FILES)}; do read v < {d}/memory.$f; echo \"memory.$f $v\" >&3; done",
                   f"echo '=memcg-local {path}' >&3", f"dump {d}/memory.events.local"]
    sh += ["echo =meminfo-end >&3", "dump /proc/meminfo", "echo =done >&3", "poweroff -f"]
    return "\n".join(sh) + "\n"


def plan(cfg: Config) -> Plan:
    """The VM run of ``cfg``, or VmError naming what cannot be expressed."""
    notes = check_machine(cfg)
    memcg_dirs, leaf, cg_lines = cgroup_layout(cfg)
    prog = program_text(cfg, leaf)
    m = cfg.machine
    # QEMU's NUMA nodes: the config's split (whole MiB: QEMU's RAM backends want it), CPUs
    # dealt out round-robin as a two-socket box would have them in blocks
    per_node = [(s // MiB) * MiB for s in m.node_memory]
    memory = sum(per_node)
    node_cpus = tuple(tuple(c for c in range(m.cpus) if c * m.nodes // m.cpus == n) for n in range(m.nodes))
    uses_file = m.page_cache > 0 or "touch_file" in prog
    duration_s = _ns(cfg.run.duration, cfg.kernel.hz) / 1e9
    return Plan(program=prog, init=init_script(cfg, cg_lines, memcg_dirs, uses_file), memory=memory, cpus=m.cpus,
                node_memory=tuple(per_node), node_cpus=node_cpus, swap=m.swap,
                cache_disk=CACHE_DISK if uses_file else 0, memcg_dirs=memcg_dirs,
                timeout_s=60.0 + 6 * duration_s, notes=notes)
