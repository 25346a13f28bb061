"""The SimPy peer's reclaim (bench/peer_simpy.py): shrink_node, direct reclaim and kswapd,
at the model's granularity -- a pass per priority, an event and its CPU time per pass."""

from __future__ import annotations

from peer_common import Task
from peer_consts import (DEF_PRIORITY, DIRECT_BEGIN, DIRECT_END, HZ, IO_WAIT, KSWAPD_FAILURES, KSWAPD_SLEEP,
                         KSWAPD_WAKE, MAX_RECLAIM_RETRIES, PAGE, RECLAIM, RECLAIM_BASE_NS, SCAN_NS_PER_PAGE,
                         SWAP_BW, SWAP_CLUSTER_MAX, SWAPPINESS, WAKEUP_KSWAPD, WRITEBACK_BW)


class Vmscan:
    """mm/vmscan.c for :class:`peer_simpy.Peer` (a mixin: the peer's memory counters,
    ``run``, ``sleep``, ``point``, ``get_cpu``/``put_cpu`` and ``emit`` are the Peer's)."""

    def io(self, busy: int, pages: int, bw: int) -> int:
        """Queue ``pages`` of IO on a disk busy until ``busy``: the jiffy it completes."""
        return max(self.env.now, busy) + max(1, -(-pages * PAGE * HZ // bw))

    # --- reclaim (mm/vmscan.c) ----------------------------------------------------------------
    def shrink_node(self, t: Task, req, prio: int, kswapd: bool):
        """One pass at ``prio``: scan lru >> prio pages, anon and file by swappiness; clean
        cache is freed, dirty cache written back (kswapd only), anon swapped out, the
        reclaimer waiting for its IO.  Returns (req, scanned, reclaimed)."""
        filesz = self.file + self.dirty
        anon = self.anon if self.swap_free else 0
        size = filesz + anon
        total = max(size >> prio, min(size, SWAP_CLUSTER_MAX)) if size else 0
        anon_scan = file_scan = reclaimed = io_pages = io_j = 0
        if total:
            if anon:
                wa, wf = SWAPPINESS * anon, (200 - SWAPPINESS) * filesz
                anon_scan = total * wa // (wa + wf)
            file_scan = min(total - anon_scan, filesz)
            dirty_scan = file_scan * self.dirty // filesz if filesz else 0
            reclaimed = min(file_scan - dirty_scan, self.file)
            self.file -= reclaimed
            self.free += reclaimed
            wb = dirty_scan if kswapd else 0
            swapped = 0
            want = min(anon_scan, self.swap_free)
            lru = self.lru
            while swapped < want and lru:
                pid, v = next(iter(lru.items()))
                k = min(want - swapped, v.rss)
                v.rss -= k
                v.swap += k
                swapped += k
                if not v.rss:
                    del lru[pid]
            self.anon -= swapped
            self.swap_free -= swapped
            self.dirty -= wb
            self.writeback += wb
            io_pages = swapped + wb
        scanned = anon_scan + file_scan
        req = yield from self.run(t, req, RECLAIM_BASE_NS + scanned * SCAN_NS_PER_PAGE)
        if io_pages:
            done = self.env.now
            if swapped:
                done = self.swap_busy = self.io(self.swap_busy, swapped, SWAP_BW)
            if wb:
                done = max(done, self.io(self.wb_busy, wb, WRITEBACK_BW))
                self.wb_busy = done
            io_j = done - self.env.now
            self.emit(IO_WAIT, t.cpu, t.pid, io_pages, io_j, "reclaim")
            req = yield from self.sleep(t, req, io_j, interruptible=False)
            self.writeback -= wb
            self.free += io_pages
            reclaimed += io_pages
        if reclaimed:
            self.kswapd_failures = 0               # any success revives a hopeless kswapd
        self.emit(RECLAIM, t.cpu, t.pid, 0, scanned, reclaimed, io_pages, io_j)
        return req, scanned, reclaimed

    def try_to_free_pages(self, t: Task, req):
        """Direct reclaim: every priority from DEF_PRIORITY down to 0 until
        SWAP_CLUSTER_MAX pages came back.  Returns (req, reclaimed)."""
        self.emit(DIRECT_BEGIN, t.cpu, t.pid, 0)
        got = 0
        for prio in range(DEF_PRIORITY, -1, -1):
            req, _, k = yield from self.shrink_node(t, req, prio, False)
            got += k
            if got >= SWAP_CLUSTER_MAX:
                break
        self.emit(DIRECT_END, t.cpu, t.pid, got)
        return req, got

    def wake_kswapd(self, t: Task) -> None:
        """wakeup_kswapd: only a sleeping kswapd of a node neither hopeless nor balanced."""
        if self.kswapd_sleeping and self.kswapd_failures < MAX_RECLAIM_RETRIES \
                and self.free < self.high and not self.kswapd_wake.triggered:
            self.emit(WAKEUP_KSWAPD, t.cpu, t.pid, 0)
            self.kswapd_wake.succeed()

    def kswapd(self):
        t = self.new_task("kswapd0", 0, kthread=True)
        req = yield from self.get_cpu(t)
        env = self.env
        while True:
            # kswapd_try_to_sleep: a HZ/10 nap, then sleep until woken if still balanced
            if self.kswapd_failures >= MAX_RECLAIM_RETRIES or self.free >= self.high:
                self.put_cpu(t, req)
                self.kswapd_sleeping = True
                wake = self.kswapd_wake
                yield env.any_of((env.timeout(HZ // 10), wake))
                self.kswapd_sleeping = False
                premature = wake.triggered
                if premature:
                    self.kswapd_wake = env.event()
                req = yield from self.get_cpu(t)
                if not premature and (self.kswapd_failures >= MAX_RECLAIM_RETRIES
                                      or self.free >= self.high):
                    self.emit(KSWAPD_SLEEP, t.cpu, t.pid, 0)
                    self.put_cpu(t, req)
                    self.kswapd_sleeping = True
                    yield self.kswapd_wake
                    self.kswapd_sleeping = False
                    self.kswapd_wake = env.event()
                    req = yield from self.get_cpu(t)
            self.emit(KSWAPD_WAKE, t.cpu, t.pid, 0)
            req = yield from self.balance_pgdat(t, req)

    def balance_pgdat(self, t: Task, req):
        """Raise the priority from DEF_PRIORITY to 1 until the node is balanced (HIGH)."""
        prio, passes, got, balanced = DEF_PRIORITY, 0, 0, False
        nr_to_reclaim = max(self.high, SWAP_CLUSTER_MAX)
        while prio >= 1:
            if self.free >= self.high:
                if not passes:                     # "goto out" still costs the checks
                    req = yield from self.run(t, req, RECLAIM_BASE_NS)
                balanced = True
                break
            passes += 1
            req, scanned, k = yield from self.shrink_node(t, req, prio, True)
            got += k
            if scanned < nr_to_reclaim or not k:
                prio -= 1
            req = yield from self.point(t, req)
        if not balanced and not got:
            self.kswapd_failures += 1
            self.emit(KSWAPD_FAILURES, t.cpu, t.pid, 0, self.kswapd_failures)
        return req

    # --- the allocator (mm/page_alloc.c) -------------------------------------------------------
