"""Boot cost against machine size: building the machine (zones, free lists, boot-time
caches, fragmentation) must not grow with memory.  Prints CPU ms per boot, the minimum
of several runs, for 1 GiB .. 64 TiB (the model's ceiling)."""

from __future__ import annotations

import time

from oomactors import sim
from oomactors.config import parse_config


def boot_ms(mem: str, frag: float, runs: int = 5) -> float:
    cfg = parse_config(f'[machine]\nmemory = "{mem}"\nfragmentation = {frag}\n'
                       '[[tasks]]\nname = "a"\nrss = "64MiB"\n')
    best = float("inf")
    for _ in range(runs):
        t = time.process_time()
        sim.check_boot(cfg)
        best = min(best, time.process_time() - t)
    return best * 1000


def main() -> None:
    boot_ms("1GiB", 0.0)  # warm up imports
    for mem in ("1GiB", "64GiB", "4TiB", "64TiB"):
        print(f"boot {mem:>6}: {boot_ms(mem, 0.0):6.2f} ms, fragmentation 0.5: {boot_ms(mem, 0.5):6.2f} ms")


if __name__ == "__main__":
    main()
