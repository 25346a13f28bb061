"""The one list of event kinds the simulator emits.

Every event is recorded as a compact tuple ``(t, id, cpu, pid, *fields)``:

* ``t``   -- virtual time in jiffies (an int);
* ``id``  -- the index of the event kind in :data:`EVENTS`;
* ``cpu`` -- the CPU the event happened on, or ``-1`` when no CPU applies;
* ``pid`` -- the task the event is about (the tracepoint's own ``pid`` where the
  kernel has one), or ``-1`` when no task applies;
* the fields named in :data:`EVENTS`, in that order.

Names follow the kernel's tracepoints (``system:name``) wherever the kernel has one;
events the kernel does not trace live under ``sim:``.  Each kind carries a short
format used by the human renderer, in the spirit of a tracepoint's ``TP_printk``.

The trace header stores this table, so a trace stays readable when the table grows.
"""

from __future__ import annotations

from typing import NamedTuple


class EventKind(NamedTuple):
    name: str
    fields: tuple[str, ...]
    fmt: str


def _k(name: str, fields: str, fmt: str) -> EventKind:
    return EventKind(name, tuple(fields.split()) if fields else (), fmt)


EVENTS: tuple[EventKind, ...] = (
    # --- include/trace/events/oom.h -------------------------------------------------
    _k("oom:mark_victim", "comm total_vm anon_rss file_rss shmem_rss uid pgtables oom_score_adj",
       "pid={pid} comm={comm} total-vm={total_vm}kB anon-rss={anon_rss}kB file-rss:{file_rss}kB "
       "shmem-rss:{shmem_rss}kB uid={uid} pgtables={pgtables}kB oom_score_adj={oom_score_adj}"),
    _k("oom:wake_reaper", "", "pid={pid}"),
    _k("oom:start_task_reaping", "", "pid={pid}"),
    _k("oom:finish_task_reaping", "", "pid={pid}"),
    _k("oom:skip_task_reaping", "", "pid={pid}"),
    _k("oom:reclaim_retry_zone",
       "node zone order reclaimable available min_wmark no_progress_loops wmark_check",
       "node={node} zone={zone:<8} order={order} reclaimable={reclaimable} available={available} "
       "min_wmark={min_wmark} no_progress_loops={no_progress_loops} wmark_check={wmark_check}"),
    _k("oom:compact_retry", "order priority result retries max_retries should_retry",
       "order={order} priority={priority} compaction_result={result} retries={retries} "
       "max_retries={max_retries} should_retry={should_retry}"),
    _k("oom:oom_score_adj_update", "comm oom_score_adj",
       "pid={pid} comm={comm} oom_score_adj={oom_score_adj}"),
    # --- include/trace/events/vmscan.h ----------------------------------------------
    _k("vmscan:mm_vmscan_kswapd_sleep", "nid", "nid={nid}"),
    _k("vmscan:mm_vmscan_kswapd_wake", "nid zid order", "nid={nid} order={order}"),
    _k("vmscan:mm_vmscan_wakeup_kswapd", "nid zid order gfp_flags",
       "nid={nid} zid={zid} order={order} gfp_flags={gfp_flags}"),
    _k("vmscan:mm_vmscan_direct_reclaim_begin", "order gfp_flags",
       "order={order} gfp_flags={gfp_flags}"),
    _k("vmscan:mm_vmscan_direct_reclaim_end", "nr_reclaimed", "nr_reclaimed={nr_reclaimed}"),
    _k("vmscan:mm_vmscan_node_reclaim", "nid nr_scanned nr_reclaimed nr_writeback io_jiffies",
       "nid={nid} nr_scanned={nr_scanned} nr_reclaimed={nr_reclaimed} "
       "nr_writeback={nr_writeback} io_jiffies={io_jiffies}"),
    # --- include/trace/events/compaction.h ------------------------------------------
    # try_to_compact_pages begins (direct compaction); one mm_compaction_end per zone follows
    _k("compaction:mm_compaction_try_to_compact_pages", "order gfp_mask priority",
       "order={order} gfp_mask={gfp_mask} priority={priority}"),
    _k("compaction:mm_compaction_end", "order priority result nr_merged",
       "order={order} priority={priority} status={result} nr_merged={nr_merged}"),
    # --- include/trace/events/sched.h and signal.h ----------------------------------
    _k("sched:sched_switch", "prev_pid next_pid next_comm",
       "prev_pid={prev_pid} ==> next_comm={next_comm} next_pid={next_pid}"),
    _k("sched:sched_process_fork", "comm child_pid child_comm",
       "comm={comm} pid={pid} child_comm={child_comm} child_pid={child_pid}"),
    _k("sched:sched_process_exit", "comm reason", "comm={comm} pid={pid} reason={reason}"),
    _k("signal:signal_generate", "sig comm group result",
       "sig={sig} pid={pid} comm={comm} grp={group} res={result}"),
    # --- include/trace/events/kmem.h ---------------------------------------------------
    # one RSS counter of an mm (member: 0 MM_FILEPAGES, 1 MM_ANONPAGES, 2 MM_SWAPENTS,
    # 3 MM_SHMEMPAGES; size in bytes) of process ``pid`` (curr 1: its own mm; mm_id, a
    # hashed pointer in the kernel, is the owner's tgid here, stable across runs).  The kernel
    # traces every change; we trace the counters that moved since the last sim:meminfo
    # sample, at that sample
    _k("kmem:rss_stat", "mm_id curr member size", "mm_id={mm_id} curr={curr} type={member} size={size}B"),
    # --- simulator events -------------------------------------------------------------
    _k("sim:run_start", "seed hz cpus nodes total_pages profile",
       "seed={seed} hz={hz} cpus={cpus} nodes={nodes} profile={profile}"),
    _k("sim:run_end", "reason", "reason={reason}"),
    _k("sim:task_new", "tgid comm uid oom_score_adj kthread",
       "pid={pid} tgid={tgid} comm={comm} uid={uid} oom_score_adj={oom_score_adj} kthread={kthread}"),
    _k("sim:step", "op pages", "pid={pid} op={op} pages={pages}"),
    _k("sim:step_failed", "op errno", "pid={pid} op={op} errno={errno}"),
    _k("sim:slowpath_enter", "order gfp_flags", "pid={pid} order={order} gfp_flags={gfp_flags}"),
    _k("sim:slowpath_exit", "order result loops",
       "pid={pid} order={order} result={result} loops={loops}"),
    _k("sim:oom_lock_contended", "", "pid={pid}"),
    _k("sim:oom_lock_acquired", "", "pid={pid}"),
    _k("sim:oom_lock_released", "", "pid={pid}"),
    _k("sim:out_of_memory_enter", "gfp_flags order", "pid={pid} gfp_flags={gfp_flags} order={order}"),
    _k("sim:out_of_memory_return", "result reason", "pid={pid} result={result} reason={reason}"),
    _k("sim:oom_header",
       "comm gfp_flags order oom_score_adj constraint nodemask mems_allowed totalpages rows",
       "{comm} invoked oom-killer: gfp_mask={gfp_flags}, order={order}, oom_score_adj={oom_score_adj}"),
    _k("sim:oom_victim_chosen", "comm points totalpages", "pid={pid} comm={comm} points={points}"),
    _k("sim:oom_kill",
       "message comm total_vm anon_rss file_rss shmem_rss uid pgtables oom_score_adj constraint "
       "nodemask mems_allowed cur_comm cur_pid cpuset oom_memcg task_memcg",
       "{message}: Killed process {pid} ({comm}) total-vm:{total_vm}kB, anon-rss:{anon_rss}kB, "
       "file-rss:{file_rss}kB, shmem-rss:{shmem_rss}kB, UID:{uid} pgtables:{pgtables}kB "
       "oom_score_adj:{oom_score_adj}"),
    _k("sim:oom_kill_shared", "comm victim victim_comm",
       "SIGKILL to {pid} ({comm}) sharing the mm of {victim} ({victim_comm})"),
    _k("sim:mmf_oom_skip", "by", "pid={pid} by={by}"),
    _k("sim:reaper_reaped", "comm anon_rss file_rss shmem_rss",
       "oom_reaper: reaped process {pid} ({comm}), now anon-rss:{anon_rss}kB, "
       "file-rss:{file_rss}kB, shmem-rss:{shmem_rss}kB"),
    _k("sim:reaper_unable", "comm", "oom_reaper: unable to reap pid:{pid} ({comm})"),
    _k("sim:reaper_pinned", "comm pinner pinner_comm",
       "oom killer {pid} ({comm}) has mm pinned by {pinner} ({pinner_comm})"),
    _k("sim:exit_mm", "comm pages", "pid={pid} comm={comm} pages={pages}"),
    _k("sim:page_alloc_failure", "comm order gfp_flags nodemask cpuset mems_allowed",
       "{comm}: page allocation failure: order:{order}, mode:{gfp_flags}, nodemask={nodemask},"
       "cpuset={cpuset},mems_allowed={mems_allowed}"),
    _k("sim:no_killable", "", "Out of memory and no killable processes..."),
    # lib/ratelimit.c: messages a ratelimit state swallowed, reported when its window renews
    _k("sim:callbacks_suppressed", "func missed", "{func}: {missed} callbacks suppressed"),
    # __oom_kill_process found no thread of the victim with an mm left
    _k("sim:oom_victim_exiting", "message comm",
       "{message}: OOM victim {pid} ({comm}) is already exiting. Skip killing the task"),
    _k("sim:panic", "message", "Kernel panic - not syncing: {message}"),
    _k("sim:mmap_lock", "op", "pid={pid} op={op}"),
    _k("sim:io_wait", "pages jiffies why", "pid={pid} pages={pages} jiffies={jiffies} why={why}"),
    _k("sim:meminfo", "free free_pcp anon file dirty writeback shmem slab_reclaimable "
       "slab_unreclaimable pagetables kernel swap_free",
       "free={free} free_pcp={free_pcp} anon={anon} file={file} dirty={dirty} "
       "writeback={writeback} shmem={shmem} slab_r={slab_reclaimable} "
       "slab_u={slab_unreclaimable} pagetables={pagetables} kernel={kernel} swap_free={swap_free}"),
    # one zone's free pages and watermarks (/proc/zoneinfo), sampled with sim:meminfo
    _k("sim:zoneinfo", "nid zone free min low high managed",
       "nid={nid} zone={zone:<8} free={free} min={min} low={low} high={high} managed={managed}"),
    _k("sim:kswapd_failures", "nid failures", "nid={nid} kswapd_failures={failures}"),
    _k("sim:throttle", "why jiffies", "pid={pid} why={why} jiffies={jiffies}"),
    # commit accounting (kernel/util.py), one event per check: ``committed`` is Committed_AS
    # with this request charged (modern: what was compared), ``allowed`` the bound it was
    # judged by (mode 2: CommitLimit less the reserves; mode 0: RAM + swap for this single
    # request; 2.4: the free-ish sum; -1: no bound), ``result`` 0 or -12 (-ENOMEM).
    _k("sim:vm_enough_memory", "pages mode committed allowed result heuristic",
       "pid={pid} pages={pages} overcommit_memory={mode} committed={committed} "
       "allowed={allowed} result={result} heuristic={heuristic}"),
    # Committed_AS and CommitLimit (pages), sampled with sim:meminfo and once at the run's end
    _k("sim:commit", "committed_as commit_limit",
       "Committed_AS={committed_as} CommitLimit={commit_limit}"),
    # memory cgroups (kernel/memcontrol.py); page counts are pages, *_kb are kB.
    # One sim:memcg_event per memory.events counter that moved: ``local`` is 1 on the memcg
    # the event was raised on (memory.events.local) and 0 on the ancestors it propagated to.
    _k("sim:memcg_event", "path name local usage",
       "memcg {path}: {name} (local={local}) usage={usage}"),
    # a sample of one memcg's counters, with sim:meminfo and at the run's start and end
    _k("sim:memcg_usage", "path usage max high swap_usage swap_max peak",
       "memcg {path}: usage={usage} max={max} high={high} swap={swap_usage}/{swap_max}"),
    # try_charge went past memory.max (``why``: dying, nofail, oom_failed, ...)
    _k("sim:memcg_force_charge", "path pages why usage",
       "memcg {path}: force charge of {pages} pages ({why}), usage={usage}"),
    _k("sim:memcg_charge_failed", "path pages why usage",
       "memcg {path}: charge of {pages} pages failed ({why}), usage={usage}"),
    _k("sim:memcg_oom_meminfo", "path usage_kb limit_kb failcnt swap_usage_kb swap_limit_kb swap_failcnt",
       "memory: usage {usage_kb}kB, limit {limit_kb}kB, failcnt {failcnt}"),
    # show_mem at an OOM report (kernel/show_mem.py), numbers only, pages unless named kB:
    # ``vm`` the global counters in show_free_areas' order, ``nodes`` one row per node shown,
    # ``zones`` one row per populated zone shown (with its lowmem_reserve and buddy counts),
    # ``totals`` pagecache, swap cache, free swap, total swap, RAM, highmem, reserved
    _k("sim:show_mem", "vm nodes zones totals", "Mem-Info: vm={vm} totals={totals}"),
    # memory_stat_format of the memcg a memcg OOM report is about: [key, value] pairs
    _k("sim:memcg_oom_stat", "path stat", "Memory cgroup stats for {path}:"),
    _k("sim:memcg_oom_group", "path",
       "Tasks in {path} are going to be killed due to memory.oom.group set"),
    _k("vmscan:mm_vmscan_memcg_reclaim_begin", "order gfp_flags", "order={order} gfp_flags={gfp_flags}"),
    _k("vmscan:mm_vmscan_memcg_reclaim_end", "nr_reclaimed", "nr_reclaimed={nr_reclaimed}"),
    # cpusets and mempolicies (kernel/cpuset.py, kernel/mempolicy.py); node sets are
    # printed as %*pbl lists ("0-1,3").  A task put into a cpuset or given a mempolicy:
    _k("sim:cpuset_attach", "cpuset mems mempolicy",
       "pid={pid} cpuset={cpuset} mems_allowed={mems} mempolicy={mempolicy}"),
    # cpuset_change_task_nodemask on task ``pid``: ``begin`` (seqcount now odd), ``union``
    # (mems_allowed = old|new, mempolicy rebound), ``end`` (mems_allowed = new, seq even)
    _k("sim:cpuset_update", "cpuset old new phase seq",
       "pid={pid} cpuset={cpuset} mems {old} -> {new} phase={phase} seq={seq}"),
    # check_retry_cpuset sent the slow path back to retry_cpuset (counters reset); ``where``
    # is before_oom or nopage, ``reason`` seqcount (mems_allowed_seq moved past the
    # cookie) or nodemask (the policy nodemask no longer meets mems_allowed)
    _k("sim:cpuset_retry", "where reason cookie seq",
       "pid={pid} where={where} reason={reason} cookie={cookie} seq={seq}"),
    # 2.6.36-5.0 oom_kill_process: "Kill process %d (%s) score %u or sacrifice child"
    _k("sim:oom_sacrifice", "message comm score",
       "{message}: Kill process {pid} ({comm}) score {score} or sacrifice child"),
    # /proc/PID/oom_score of every process at the end of the run, in the profile's era
    _k("sim:oom_score", "comm oom_score", "pid={pid} comm={comm} oom_score={oom_score}"),
    # 2.4 do_page_fault, out of memory: the faulting process itself dies
    _k("sim:vm_killing", "comm", "VM: killing process {comm}"),
    # controlled scheduling (oomactors/schedule.py): the scheduler departed from the default
    # at decision point ``index``: ``action`` -1 = yield the CPU, k > 0 = held back k jiffies,
    # ">N" (a string) = actor N ran first (oomactors/stepper.py numbers the actors)
    _k("sched:hold", "point action index",
       "pid={pid} held at {point}: action={action} (choice #{index})"),
    # the run's kill policy and userspace OOM killer, when not the kernel's own alone
    _k("sim:policy", "policy daemon", "kill policy {policy}, userspace OOM killer {daemon}"),
    # PSI (oomactors/psi.py) of one group ("/" = /proc/pressure/memory, else the memcg's
    # memory.pressure): averages in hundredths of a percent as printed (avg10=12.34 -> 1234),
    # totals in microseconds.  Sampled every run.psi_samples, and at the end of a run with
    # samples or a userspace daemon
    _k("sim:psi", "path some_avg10 some_avg60 some_avg300 some_total full_avg10 full_avg60 "
       "full_avg300 full_total",
       "{path} some avg10={some_avg10} avg60={some_avg60} avg300={some_avg300} total={some_total} "
       "full avg10={full_avg10} avg60={full_avg60} avg300={full_avg300} total={full_total}"),
    # a userspace OOM killer (oomactors/userspace.py) sent ``sig`` to process ``pid``;
    # ``result`` 0, or -errno (-3 ESRCH: it was gone)
    # (``rss_kb``/``swap_kb``: what the process held when the signal was sent)
    _k("userspace:kill", "daemon comm sig reason result rss_kb swap_kb",
       "{daemon}: kill({pid} {comm}, {sig}) = {result}: {reason}"),
    # ... or SIGKILLed every process of a cgroup subtree (cgroup.kill); pid is the daemon's;
    # ``members``: [pid, rss_kb, swap_kb] of each process signalled
    _k("userspace:cgroup_kill", "daemon path reason nr_tasks members",
       "{daemon}: killed cgroup {path} ({nr_tasks} processes): {reason}"),
    # ... or called process_mrelease on a dying process: ``pages`` reaped, ``result`` 0/-errno
    _k("userspace:mrelease", "daemon comm result pages",
       "{daemon}: process_mrelease({pid} {comm}) = {result}, {pages} pages"),
    # an anonymous fault of ``pid`` completed in an mm the oom_reaper has begun to tear down
    # (MMF_UNSTABLE): ``result`` sigbus (check_stable_address_space, 4.13+) or mapped (before
    # it: a fresh zero-filled page where the victim's data was)
    _k("sim:fault_unstable", "comm pages result",
       "pid={pid} comm={comm}: fault of {pages} pages in an mm the oom_reaper is tearing down: {result}"),
)

EVENT_ID: dict[str, int] = {kind.name: i for i, kind in enumerate(EVENTS)}

# Fixed columns that every record carries before its own fields.
COMMON_FIELDS: tuple[str, ...] = ("t", "event", "cpu", "pid")


def event_id(name: str) -> int:
    """The record id of a named event kind (KeyError for an unknown name)."""
    return EVENT_ID[name]


def schema() -> list[list[object]]:
    """The event table as stored in a trace header: ``[[name, [fields...]], ...]``."""
    return [[kind.name, list(kind.fields)] for kind in EVENTS]
