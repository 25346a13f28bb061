"""A run as a Perfetto trace (``.pftrace``), for https://ui.perfetto.dev and trace_processor.

Written with the ``perfetto`` package's :class:`StreamingTraceProtoBuilder` and its
generated protos (``pip install 'oomactors[perfetto]'``), packet by packet, so memory stays
flat however long the run.

What Perfetto knows natively is written as the kernel would hand it over, so the UI shows
its own Linux views: the process tree (``process_tree``), ftrace events per CPU
(``sched_switch`` -- the UI's CPU tracks, a slice per task while it runs --,
``sched_process_fork``/``exit``, ``signal_generate``, ``mm_vmscan_direct_reclaim_begin/end``,
``mm_vmscan_memcg_reclaim_begin/end``, ``mm_vmscan_kswapd_wake/sleep``,
``mm_compaction_try_to_compact_pages``, ``mark_victim``, ``oom_score_adj_update``,
``rss_stat`` -- the per-process RSS counters), ``/proc/meminfo`` counters and the
system-wide memory PSI totals (``sys_stats``), and ``system_info`` (HZ, CPUs, RAM).

Everything else is a track event (see :mod:`.task_states` for the task states):

* one state track per task (its thread's track) and a ``fate`` track under it;
* counters: each zone's free pages with its min/low/high watermarks, each memcg's usage
  with its max/high, PSI some/full avg10 per group;
* instants on the ``OOM`` track: OOM invocations, kills (victim, points, constraint, who
  invoked), userspace kills, reaper passes, allocation failures and panics;
* one flow per kill: the invoking task's ``oom-kill`` instant -> the kill on the ``OOM``
  track -> the victim's exit -> the oom_reaper's pass over it (a userspace kill: the
  daemon's kill instant -> the victim's exit).

Timestamps are the run's virtual time: ``t × 10⁹ / HZ`` ns for an event at jiffy ``t``,
plus 1 ns for every earlier event of the same jiffy, so events keep their order.
"""

from __future__ import annotations

import re
from typing import Any, BinaryIO

from ..errors import InputError
from .task_states import FATE, Slice, TaskStates

SEQ = 1                      # our one trusted packet sequence
BUNDLE = 512                 # ftrace events per bundle packet
PAGE = 4096
# prev_state bits; a dead task is reported by its exit_state since 4.14 (EXIT_DEAD: "X")
TASK_RUNNING, TASK_INTERRUPTIBLE, TASK_UNINTERRUPTIBLE, EXIT_DEAD = 0, 1, 2, 0x10
PRIO = 120
_UUID_THREAD, _UUID_FATE, _UUID_PROCESS, _UUID_COUNTER, _UUID_GLOBAL = 1, 2, 3, 4, 5
_HEX = re.compile(r"^(0x[0-9a-fA-F]+)")


def protos() -> Any:
    try:
        from perfetto.protos.perfetto.trace import perfetto_trace_pb2
    except ImportError:  # pragma: no cover - depends on the install
        raise InputError("the Perfetto export needs the perfetto package: "
                         "pip install 'oomactors[perfetto]'") from None
    return perfetto_trace_pb2


def _gfp(text: Any) -> int:
    m = _HEX.match(text) if isinstance(text, str) else None
    return int(m[1], 16) if m else 0


def kernel_release(profile: str) -> str:
    """The kernel version a profile models, as uname -r prints it ("linux-5.10" ->
    "5.10.0"): Perfetto reads prev_state's bits by kernel version."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", profile)
    return f"{m[1]}.{m[2]}.{m[3] or 0}" if m else profile


def _uuid(kind: int, n: int) -> int:
    return (kind << 40) | (n & ((1 << 40) - 1))


class PerfettoWriter:
    """Turn decoded events (``write(ev)``, in trace order) into Perfetto packets."""

    def __init__(self, file: BinaryIO, *, hz: int, header: dict[str, Any]) -> None:
        from perfetto.trace_builder.proto_builder import StreamingTraceProtoBuilder
        self.P = protos()
        self.builder = StreamingTraceProtoBuilder(file)
        self.hz = hz
        self.header = header
        self.comm: dict[int, str] = {0: "swapper"}
        self.tgid: dict[int, int] = {}
        self.kthread: dict[int, bool] = {}
        self.bundles: dict[int, Any] = {}
        self.tracks: set[int] = set()
        self.counters: dict[str, int] = {}
        self.points: dict[int, Any] = {}
        self.flows: dict[int, int] = {}      # victim pid -> flow id
        self.nflows = 0
        self.first = True
        self.exited: set[int] = set()
        self.total_pages = 0
        self.last_jiffy = -1
        self.seq_in_jiffy = 0
        self.ts = 0
        self.states = TaskStates(self._slice, jiffy=10**9 // hz)
        self._global_track("OOM")

    # --- time ---------------------------------------------------------------------------
    def _stamp(self, t: int) -> int:
        if t != self.last_jiffy:
            self.last_jiffy, self.seq_in_jiffy = t, 0
        else:
            self.seq_in_jiffy += 1
        base = t * 10**9 // self.hz
        room = (t + 1) * 10**9 // self.hz - base - 1
        return base + min(self.seq_in_jiffy, room)

    # --- packets ----------------------------------------------------------------------
    def _packet(self, ts: int | None = None, seq: bool = True) -> Any:
        pkt = self.builder.create_packet()
        if ts is not None:
            pkt.timestamp = ts
        if seq:
            pkt.trusted_packet_sequence_id = SEQ
            if self.first:
                pkt.sequence_flags = self.P.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
                self.first = False
        return pkt

    def _write(self, pkt: Any) -> None:
        self.builder.write_packet(pkt)

    def _ftrace(self, cpu: int, ts: int, pid: int, kind: str | None = None) -> Any:
        """A new ftrace event in CPU ``cpu``'s bundle; with ``kind``, its payload of that
        kind (marked present even if every field stays 0)."""
        cpu = max(cpu, 0)
        if cpu in self.bundles and len(self.bundles[cpu].event) >= BUNDLE:
            self._flush_bundle(cpu)       # full: the caller fills the new event after we return
        bundle = self.bundles.get(cpu)
        if bundle is None:
            bundle = self.bundles[cpu] = self.P.FtraceEventBundle(cpu=cpu)
        ev = bundle.event.add()
        ev.timestamp = ts
        ev.pid = max(pid, 0)
        payload = ev
        if kind is not None:
            payload = getattr(ev, kind)
            payload.SetInParent()
        return payload

    def _flush_bundle(self, cpu: int) -> None:
        bundle = self.bundles.pop(cpu, None)
        if bundle is not None and len(bundle.event):
            pkt = self._packet(seq=False)
            pkt.ftrace_events.CopyFrom(bundle)
            pkt.trusted_packet_sequence_id = 2 + cpu   # one writer per CPU, as traced does
            self._write(pkt)

    def _track(self, uuid: int, fill: Any) -> int:
        if uuid not in self.tracks:
            self.tracks.add(uuid)
            pkt = self._packet()
            pkt.track_descriptor.uuid = uuid
            fill(pkt.track_descriptor)
            self._write(pkt)
        return uuid

    def _global_track(self, name: str) -> int:
        def fill(d: Any) -> None:
            d.name = name
        return self._track(_uuid(_UUID_GLOBAL, sum(map(ord, name)) + 7919 * len(name)), fill)

    def _thread_track(self, pid: int) -> int:
        tgid = self.tgid.get(pid, pid)

        def proc(d: Any) -> None:
            d.process.pid = tgid
            d.process.process_name = self.comm.get(tgid, "?")

        parent = self._track(_uuid(_UUID_PROCESS, tgid), proc)

        def fill(d: Any) -> None:
            d.parent_uuid = parent
            d.thread.pid = tgid
            d.thread.tid = pid
            d.thread.thread_name = self.comm.get(pid, "?")
        return self._track(_uuid(_UUID_THREAD, pid), fill)

    def _fate_track(self, pid: int) -> int:
        parent = self._thread_track(pid)

        def fill(d: Any) -> None:
            d.parent_uuid = parent
            d.name = f"{self.comm.get(pid, '?')} {pid} fate"
        return self._track(_uuid(_UUID_FATE, pid), fill)

    def _counter(self, name: str, value: float, unit: str = "bytes") -> None:
        uuid = self.counters.get(name)
        if uuid is None:
            uuid = self.counters[name] = _uuid(_UUID_COUNTER, len(self.counters) + 1)

            def fill(d: Any) -> None:
                d.name = name
                if unit == "bytes":
                    d.counter.unit = self.P.CounterDescriptor.UNIT_SIZE_BYTES
                else:
                    d.counter.unit_name = unit
            self._track(uuid, fill)
        pkt = self._packet(self.ts)
        pkt.track_event.type = self.P.TrackEvent.TYPE_COUNTER
        pkt.track_event.track_uuid = uuid
        if isinstance(value, float):
            pkt.track_event.double_counter_value = value
        else:
            pkt.track_event.counter_value = value
        self._write(pkt)

    def _event(self, track: int, name: str | None, kind: str, ts: int | None = None,
               args: dict[str, Any] | None = None, flows: tuple[int, ...] = ()) -> None:
        pkt = self._packet(self.ts if ts is None else ts)
        te = pkt.track_event
        te.type = {"begin": self.P.TrackEvent.TYPE_SLICE_BEGIN, "end": self.P.TrackEvent.TYPE_SLICE_END,
                   "instant": self.P.TrackEvent.TYPE_INSTANT}[kind]
        te.track_uuid = track
        if name is not None:
            te.name = name
        for k, v in (args or {}).items():
            a = te.debug_annotations.add()
            a.name = k
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                a.string_value = str(v)
            elif isinstance(v, int):
                a.int_value = v
            else:
                a.double_value = v
        te.flow_ids.extend(flows)
        self._write(pkt)

    def _slice(self, s: Slice) -> None:
        track = self._fate_track(s.pid) if s.track == FATE else self._thread_track(s.pid)
        flows: tuple[int, ...] = ()
        if not s.end and s.name.startswith("reaping "):
            victim = int(s.name.split()[1])
            flows = (self.flows[victim],) if victim in self.flows else ()
        self._event(track, None if s.end else s.name, "end" if s.end else "begin", ts=s.ts,
                    args=s.args, flows=flows)

    # --- the events ----------------------------------------------------------------
    def write(self, rec: tuple, ev: dict[str, Any]) -> None:
        ts = self.ts = self._stamp(rec[0])
        self.states.advance(ts)      # states that ended by now, before anything at ``ts``
        name, cpu, pid = ev["event"], ev["cpu"], ev["pid"]
        handler = _HANDLERS.get(name)
        if handler is not None:
            handler(self, ts, cpu, pid, ev)
        self.states.feed(ts, ev)

    def close(self, end_t: int) -> None:
        self.ts = self._stamp(end_t) if end_t >= self.last_jiffy else self.ts
        self.states.finish(self.ts)
        for cpu in sorted(self.bundles):
            self._flush_bundle(cpu)

    # handlers (one per event kind with something to write besides task states)
    def _run_start(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        self.total_pages = ev["total_pages"]
        pkt = self._packet(ts, seq=False)
        si = pkt.system_info
        si.utsname.sysname = "Linux"
        si.utsname.release = kernel_release(str(ev["profile"]))
        si.utsname.machine = "oomactors"
        si.hz = ev["hz"]
        si.page_size = PAGE
        si.num_cpus = ev["cpus"]
        si.system_ram_bytes = ev["total_pages"] * PAGE
        self._write(pkt)

    def _task_new(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        self.comm[pid] = ev["comm"]
        self.tgid[pid] = ev["tgid"]
        self.kthread[pid] = bool(ev["kthread"])
        pkt = self._packet(ts, seq=False)
        tree = pkt.process_tree
        if ev["tgid"] == pid:
            p = tree.processes.add()
            p.pid = pid
            p.ppid = 0 if ev["kthread"] or pid == 1 else 1
            p.cmdline.append(ev["comm"])
            p.uid = ev["uid"]
        t = tree.threads.add()
        t.tid = pid
        t.tgid = ev["tgid"]
        t.name = ev["comm"]
        self._write(pkt)

    def _sched_switch(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        prev, nxt = ev["prev_pid"], ev["next_pid"]
        f = self._ftrace(cpu, ts, prev, "sched_switch")
        f.prev_pid, f.prev_comm, f.prev_prio = prev, self._comm(prev, cpu), PRIO
        f.prev_state = self._prev_state(prev)
        f.next_pid, f.next_comm, f.next_prio = nxt, ev["next_comm"] if nxt else f"swapper/{cpu}", PRIO

    def _comm(self, pid: int, cpu: int) -> str:
        return self.comm.get(pid, "?") if pid else f"swapper/{cpu}"

    def _prev_state(self, pid: int) -> int:
        if pid <= 0:
            return TASK_RUNNING
        if pid in self.exited:
            return EXIT_DEAD
        stack = self.states.stacks.get(pid) or ()
        if stack and (stack[-1][0].startswith("D:") or stack[-1][0] == "oom_lock back-off"):
            return TASK_UNINTERRUPTIBLE
        return TASK_INTERRUPTIBLE

    def _fork(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        f = self._ftrace(cpu, ts, pid, "sched_process_fork")
        f.parent_pid, f.parent_comm = pid, ev["comm"]
        f.child_pid, f.child_comm = ev["child_pid"], ev["child_comm"]

    def _exit(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        self.exited.add(pid)
        f = self._ftrace(cpu, ts, pid, "sched_process_exit")
        f.pid, f.comm, f.tgid, f.prio = pid, ev["comm"], self.tgid.get(pid, pid), PRIO
        flow = self.flows.get(pid)
        self._event(self._fate_track(pid), f"exit ({ev['reason']})", "instant",
                    flows=(flow,) if flow else ())

    def _signal(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        f = self._ftrace(cpu, ts, pid, "signal_generate")
        f.sig, f.pid, f.comm, f.group, f.result = ev["sig"], pid, ev["comm"], int(ev["group"]), ev["result"]

    def _reclaim(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        kind = ev["event"].split(":", 1)[1]          # the ftrace event of the same name
        f = self._ftrace(cpu, ts, pid, kind)
        if kind.endswith("_begin"):
            f.order, f.gfp_flags = ev["order"], _gfp(ev["gfp_flags"])
        else:
            f.nr_reclaimed = ev["nr_reclaimed"]

    def _kswapd(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        kind = ev["event"].split(":", 1)[1]
        f = self._ftrace(cpu, ts, pid, kind)
        f.nid = ev["nid"]
        if kind == "mm_vmscan_kswapd_wake":
            f.order, f.zid = ev["order"], ev["zid"]

    def _compact(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        f = self._ftrace(cpu, ts, pid, "mm_compaction_try_to_compact_pages")
        f.order, f.gfp_mask = ev["order"], _gfp(ev["gfp_mask"])
        f.prio = ("COMPACT_PRIO_SYNC_FULL", "COMPACT_PRIO_SYNC_LIGHT",
                  "COMPACT_PRIO_ASYNC").index(ev["priority"]) if isinstance(ev["priority"], str) else 0

    def _mark_victim(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        self._ftrace(cpu, ts, pid, "mark_victim").pid = pid

    def _adj(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        f = self._ftrace(cpu, ts, pid, "oom_score_adj_update")
        f.pid, f.comm, f.oom_score_adj = pid, ev["comm"], ev["oom_score_adj"]

    def _rss(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        f = self._ftrace(cpu, ts, pid, "rss_stat")
        f.member, f.size, f.curr, f.mm_id = ev["member"], ev["size"], ev["curr"], ev["mm_id"]

    def _meminfo(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        M = self.P.MeminfoCounters
        slab = ev["slab_reclaimable"] + ev["slab_unreclaimable"]
        values = {M.MEMINFO_MEM_TOTAL: self.total_pages, M.MEMINFO_MEM_FREE: ev["free"] + ev["free_pcp"],
                  M.MEMINFO_CACHED: ev["file"] + ev["shmem"], M.MEMINFO_ANON_PAGES: ev["anon"],
                  M.MEMINFO_SHMEM: ev["shmem"], M.MEMINFO_SLAB: slab,
                  M.MEMINFO_SLAB_RECLAIMABLE: ev["slab_reclaimable"],
                  M.MEMINFO_SLAB_UNRECLAIMABLE: ev["slab_unreclaimable"],
                  M.MEMINFO_PAGE_TABLES: ev["pagetables"], M.MEMINFO_DIRTY: ev["dirty"],
                  M.MEMINFO_WRITEBACK: ev["writeback"], M.MEMINFO_SWAP_FREE: ev["swap_free"]}
        self._sys_meminfo(ts, values)

    def _commit(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        M = self.P.MeminfoCounters
        self._sys_meminfo(ts, {M.MEMINFO_COMMITED_AS: ev["committed_as"],
                               M.MEMINFO_COMMIT_LIMIT: ev["commit_limit"]})

    def _sys_meminfo(self, ts: int, pages: dict[int, int]) -> None:
        pkt = self._packet(ts, seq=False)
        for key, value in pages.items():
            mv = pkt.sys_stats.meminfo.add()
            mv.key, mv.value = key, value * PAGE // 1024     # kB, as /proc/meminfo
        self._write(pkt)

    def _zoneinfo(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        zone = f"zone {ev['nid']}:{ev['zone']}"
        for key in ("free", "min", "low", "high"):
            self._counter(f"{zone} {key}", ev[key] * PAGE)

    def _memcg(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        from ..kernel.memcontrol import PAGE_COUNTER_MAX
        for key in ("usage", "max", "high"):
            if ev[key] != PAGE_COUNTER_MAX:
                self._counter(f"memcg {ev['path']} {key}", ev[key] * PAGE)

    def _psi(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        for kind in ("some", "full"):
            self._counter(f"PSI memory {ev['path']} {kind} avg10", ev[f"{kind}_avg10"] / 100.0, "%")
        if ev["path"] == "/":
            R = self.P.SysStats.PsiSample
            pkt = self._packet(ts, seq=False)
            for res, key in ((R.PSI_RESOURCE_MEMORY_SOME, "some_total"), (R.PSI_RESOURCE_MEMORY_FULL, "full_total")):
                s = pkt.sys_stats.psi.add()
                s.resource, s.total_ns = res, ev[key] * 1000
            self._write(pkt)

    # instants on the OOM track
    def _oom_enter(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        self._event(self._global_track("OOM"), f"out_of_memory by {self.comm.get(pid, '?')} ({pid})",
                    "instant", args={"pid": pid, "gfp_flags": ev["gfp_flags"], "order": ev["order"]})

    def _chosen(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        self.points[pid] = ev["points"]

    def _kill(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        self.nflows += 1
        flow = self.flows[pid] = self.nflows
        args = {"victim": ev["comm"], "pid": pid, "points": self.points.pop(pid, "?"),
                "constraint": ev["constraint"], "anon_rss_kB": ev["anon_rss"], "file_rss_kB": ev["file_rss"],
                "shmem_rss_kB": ev["shmem_rss"], "invoked_by": f"{ev['cur_comm']} ({ev['cur_pid']})"}
        if ev["cur_pid"] > 0:
            self._event(self._thread_track(ev["cur_pid"]), f"oom-kill {ev['comm']} ({pid})", "instant",
                        args=args, flows=(flow,))
        self._event(self._global_track("OOM"), f"oom-kill {ev['comm']} ({pid})", "instant", args=args,
                    flows=(flow,))

    def _user_kill(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        what = f"kill {ev['comm']} ({pid})" if ev["event"] == "userspace:kill" else f"kill cgroup {ev['path']}"
        args = {k: v for k, v in ev.items() if k in ("daemon", "sig", "reason", "result", "nr_tasks")}
        # a flow from the signal to each signalled process's exit (one per victim)
        victims = [pid] if ev["event"] == "userspace:kill" else [m[0] for m in ev["members"]]
        flows = []
        for victim in victims if ev.get("result", 0) == 0 else ():
            if victim not in self.flows:
                self.nflows += 1
                self.flows[victim] = self.nflows
            flows.append(self.flows[victim])
        self._event(self._global_track("OOM"), f"{ev['daemon']}: {what}", "instant", args=args,
                    flows=tuple(flows))

    def _reaped(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        ok = ev["event"] == "sim:reaper_reaped"
        args = {k: ev[k] for k in ("anon_rss", "file_rss", "shmem_rss") if ok}
        self._event(self._global_track("OOM"), f"{'reaped' if ok else 'unable to reap'} {ev['comm']} ({pid})",
                    "instant", args=args)

    def _alloc_failure(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        self._event(self._thread_track(pid), "page allocation failure", "instant",
                    args={"order": ev["order"], "gfp_flags": ev["gfp_flags"]})

    def _panic(self, ts: int, cpu: int, pid: int, ev: dict[str, Any]) -> None:
        self._event(self._global_track("OOM"), f"Kernel panic: {ev['message']}", "instant")


_HANDLERS = {
    "sim:run_start": PerfettoWriter._run_start, "sim:task_new": PerfettoWriter._task_new,
    "sched:sched_switch": PerfettoWriter._sched_switch, "sched:sched_process_fork": PerfettoWriter._fork,
    "sched:sched_process_exit": PerfettoWriter._exit, "signal:signal_generate": PerfettoWriter._signal,
    "vmscan:mm_vmscan_direct_reclaim_begin": PerfettoWriter._reclaim,
    "vmscan:mm_vmscan_direct_reclaim_end": PerfettoWriter._reclaim,
    "vmscan:mm_vmscan_memcg_reclaim_begin": PerfettoWriter._reclaim,
    "vmscan:mm_vmscan_memcg_reclaim_end": PerfettoWriter._reclaim,
    "vmscan:mm_vmscan_kswapd_wake": PerfettoWriter._kswapd, "vmscan:mm_vmscan_kswapd_sleep": PerfettoWriter._kswapd,
    "compaction:mm_compaction_try_to_compact_pages": PerfettoWriter._compact,
    "oom:mark_victim": PerfettoWriter._mark_victim, "oom:oom_score_adj_update": PerfettoWriter._adj,
    "kmem:rss_stat": PerfettoWriter._rss, "sim:meminfo": PerfettoWriter._meminfo,
    "sim:commit": PerfettoWriter._commit, "sim:zoneinfo": PerfettoWriter._zoneinfo,
    "sim:memcg_usage": PerfettoWriter._memcg, "sim:psi": PerfettoWriter._psi,
    "sim:out_of_memory_enter": PerfettoWriter._oom_enter, "sim:oom_victim_chosen": PerfettoWriter._chosen,
    "sim:oom_kill": PerfettoWriter._kill, "userspace:kill": PerfettoWriter._user_kill,
    "userspace:cgroup_kill": PerfettoWriter._user_kill, "sim:reaper_reaped": PerfettoWriter._reaped,
    "sim:reaper_unable": PerfettoWriter._reaped, "sim:page_alloc_failure": PerfettoWriter._alloc_failure,
    "sim:panic": PerfettoWriter._panic,
}


def write_perfetto(run: Any, path: str) -> None:
    """Write ``run`` (an :class:`oomactors.api.Run`) to ``path`` as a Perfetto trace."""
    protos()
    try:
        f = open(path, "wb")  # noqa: SIM115
    except OSError as e:
        raise InputError(f"{path}: cannot write: {e.strerror or e}") from None
    with f:
        w = PerfettoWriter(f, hz=run.hz, header=run.header)
        decode, hz, end = run.table.decode, run.hz, 0
        try:
            for rec in run.records():
                end = rec[0]
                w.write(rec, decode(rec, hz))
        finally:  # a torn trace: what it held is written, then its error is raised
            w.close(end)
