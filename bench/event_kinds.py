"""Events per kind: the model's pressure run beside the SimPy peers, so anyone can see
whether they do the same work at the same granularity (untimed runs; run_all prints it).

    .venv/bin/python bench/event_kinds.py [SECONDS]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peer_simpy  # noqa: E402
import peer_simpy_lite  # noqa: E402
import pressure  # noqa: E402


def model_kinds(duration_s: int = pressure.DURATION_S) -> dict[str, int]:
    """The pressure workload run once by oomactors, its events counted per kind."""
    from oomactors.config import parse_config
    from oomactors.events import EVENTS
    from oomactors.sim import run
    counts = [0] * len(EVENTS)

    def sink(rec: tuple) -> None:
        counts[rec[1]] += 1

    run(parse_config(pressure.config_text(duration_s), "<bench pressure>"), sinks=[sink])
    return {EVENTS[i].name: n for i, n in enumerate(counts) if n}


def table(duration_s: int = pressure.DURATION_S) -> dict[str, dict[str, int]]:
    """Print (and return) the per-kind counts of the model, the peer and the lite peer."""
    cols = {"oomactors": model_kinds(duration_s),
            "peer": peer_simpy.bench(duration_s, counts=True)["kinds"],
            "peer-lite": peer_simpy.bench(duration_s, peer_simpy_lite.Peer, counts=True)["kinds"]}
    kinds = sorted(set().union(*cols.values()), key=lambda k: (-cols["oomactors"].get(k, 0), k))
    w = max(len(k) for k in kinds)
    print(f"  {'event kind':<{w}}  {'oomactors':>10}  {'peer':>10}  {'peer-lite':>10}")
    for k in kinds:
        print(f"  {k:<{w}}  " + "  ".join(f"{cols[c][k]:>10,}" if k in cols[c] else f"{'-':>10}"
                                          for c in cols))
    print(f"  {'total':<{w}}  " + "  ".join(f"{sum(v.values()):>10,}" for v in cols.values()))
    return cols


if __name__ == "__main__":
    table(int(sys.argv[1]) if len(sys.argv) > 1 else pressure.DURATION_S)
