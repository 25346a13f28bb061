"""Figure 4: virtual sleeps per CPU second vs a bare trio checkpoint loop.

(a) K actors each loop ``await clock.sleep_until(clock.now + 1)`` on the simulator's own
    ``Sched``/``Clock``, stepped by its own stepper and clock driver (``oomactors.sim._drive``:
    the clock advances itself when the last running actor parks).
(b) one task looping ``await trio.lowlevel.checkpoint()``, trio seeded as it used to be.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import trio

from oomactors.sched import Sched
from oomactors.sim import _drive, _seed_trio


def _sched() -> Sched:
    return Sched(250, 1, 1, 3, "trio", lambda *a: None)


def virtual_sleeps(k: int, jiffies: int) -> dict:
    """``k`` actors sleeping one jiffy at a time for ``jiffies`` jiffies."""
    sched = _sched()
    clock = sched.clock
    shim = SimpleNamespace(sched=sched, interrupted=False)  # all that _drive reads
    out: dict = {}

    async def actor() -> None:
        sleep_until = clock.sleep_until
        while True:
            await sleep_until(clock.now + 1)

    async def main() -> None:
        clock.limit = jiffies
        t0 = time.process_time()
        for _ in range(k):
            clock.active += 1  # counted as running until it parks, as sim.spawn does
            sched.stepper.spawn(actor())
        out["reason"] = await _drive(shim)
        out["wall"] = time.process_time() - t0
        out["sleeps"] = clock.sleeps
        sched.stepper.close()

    trio.run(main)
    out.update(k=k, jiffies=jiffies, per_s=out["sleeps"] / out["wall"])
    return out


def bare_checkpoints(n: int) -> dict:
    out: dict = {}

    async def main() -> None:
        checkpoint = trio.lowlevel.checkpoint
        t0 = time.process_time()
        for _ in range(n):
            await checkpoint()
        out["wall"] = time.process_time() - t0

    _seed_trio(0)
    trio.run(main)
    out.update(n=n, per_s=n / out["wall"])
    return out


if __name__ == "__main__":
    print(bare_checkpoints(200_000))
    for k, j in ((1, 50_000), (10, 10_000), (100, 2_000), (1000, 200)):
        print(virtual_sleeps(k, j))
