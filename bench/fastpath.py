"""Figure 1: fast-path allocation requests per CPU second (time.process_time; "wall" below is CPU time).

``req_per_s`` is the whole loop (allocations plus the periodic frees) divided by wall
time; ``alloc_only_req_per_s`` leaves out the time spent in the frees (timed separately;
they run once per FREE_EVERY requests, so timing them costs next to nothing).

One trio run, one user task holding a CPU, a machine with plenty of free memory.  The task
calls ``__alloc_pages_nodemask`` N times and every FREE_EVERY requests gives the anon
pages back the way ``oomactors/actors/user.py`` ``_free`` does (uncharge from the mm and
the zone, then ``free_pages`` on the task's CPU), so the LOW-watermark fast path keeps
succeeding.
"""

from __future__ import annotations

import time

import trio

from oomactors.actors.user import new_process
from oomactors.config import parse_config
from oomactors.events import EVENT_ID
from oomactors.kernel.gfp import GFP_HIGHUSER_MOVABLE
from oomactors.kernel.page_alloc import free_pages
from oomactors.kernel.page_alloc_slow import __alloc_pages_nodemask
from oomactors.sim import build

CONFIG = """
[machine]
cpus = 2
memory = "8GiB"
[run]
duration = "1s"
"""

FREE_EVERY = 64


def _free_anon(m, task) -> int:
    """munmap of all the task's anonymous pages (user.py ``_free`` without the event)."""
    mm = task.mm
    freed = 0
    for zone in m.zones:
        g = zone.gid
        k = mm.anon[g]
        if k:
            mm.anon[g] = 0
            zone.nr["anon"] -= k
            zone.anon_lru.pop(mm, None)
            free_pages(m, task.cpu, zone, k)
            freed += k
    return freed


async def _loop(m, task, n: int, nr: int) -> tuple[int, int, float]:
    alloc = __alloc_pages_nodemask
    gfp = GFP_HIGHUSER_MOVABLE
    mm = task.mm
    # the loop in CPU time (the machine is shared); the frees' share of it by the cheap wall
    # clock (a CPU-time read costs ~2 us, too much to take twice every 64 requests)
    failed = 0
    pages = 0
    free_wall = 0.0
    perf = time.perf_counter
    t0, w0 = time.process_time(), perf()
    for i in range(1, n + 1):
        zone = await alloc(m, task, gfp, 0, 0, nr=nr, kind="anon", mm=mm)
        if zone is None:
            failed += 1
        else:
            pages += nr
        if not i % FREE_EVERY:
            f0 = perf()
            _free_anon(m, task)
            free_wall += perf() - f0
    wall = time.process_time() - t0
    free_share = free_wall / (perf() - w0)
    _free_anon(m, task)
    return failed, pages, wall, free_share * wall


def bench(n: int, nr: int) -> dict:
    m = build(parse_config(CONFIG, "<bench fastpath>"))
    out: dict = {"slowpath": 0}
    slow = EVENT_ID["sim:slowpath_enter"]

    def count_slowpaths(rec: tuple) -> None:
        if rec[1] == slow:
            out["slowpath"] += 1

    async def main() -> None:
        task = new_process(m, "bench", 1000, frozenset(), 0)
        await m.sched.get_cpu(task)
        await _loop(m, task, min(n, 2000), nr)  # warm-up
        m.sinks.append(count_slowpaths)
        failed, pages, wall, free_wall = await _loop(m, task, n, nr)
        out.update(failed=failed, pages=pages, wall=wall, free_wall=free_wall)

    trio.run(main)
    wall = out["wall"]
    out.update(n=n, nr=nr, req_per_s=n / wall, pages_per_s=out["pages"] / wall,
               alloc_only_req_per_s=n / (wall - out["free_wall"]),
               free_share=out["free_wall"] / wall)
    return out


if __name__ == "__main__":
    for nr in (1, 32):
        r = bench(200_000, nr)
        print(r)
