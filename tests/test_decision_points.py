"""The documented decision points are the code's: a run asks an installed scheduler at every
scheduling point it passes, except where ``oomactors.sched.DECISION_EXCEPTIONS`` (shown in
the generated points reference and docs/exploring.md) says otherwise."""

from __future__ import annotations

import re
from pathlib import Path

from oomactors import sim
from oomactors.config import load_config
from oomactors.docgen import points_page
from oomactors.schedule import Scheduler
from oomactors.sched import DECISION_EXCEPTIONS, POINTS

ROOT = Path(__file__).resolve().parent.parent
# configs that between them pass most points: reclaim, swap IO, OOM, the reaper, kswapd,
# a cpuset update, memory.high throttling, the vmstat timer (runs of a second or more)
CONFIGS = ["quickstart.toml", "parallel-oom.toml", "races/cpuset_retry.toml", "memcg-high.toml",
           "thrashing.toml", "races/mmf_oom_skip.toml"]


class Asked(Scheduler):
    def __init__(self) -> None:
        self.points: set[str] = set()

    def decide(self, index: int, pid: int, point: str) -> int:
        self.points.add(point)
        return 0


def test_every_point_passed_asks_the_scheduler_except_the_documented_ones():
    asked: set[str] = set()
    passed: set[str] = set()
    for name in CONFIGS:
        rec = Asked()
        res = sim.run(load_config(ROOT / "configs" / name), scheduler=rec, duration=2 * 250, env_checks=False)
        asked |= rec.points
        passed |= {p for p, n in res.machine.sched.point_hits.items() if n}
    assert asked <= set(POINTS) and passed <= set(POINTS)
    never = {p for p, why in DECISION_EXCEPTIONS.items() if why.startswith("never")}
    assert "cpu.vmstat" in passed and "kswapd.nap" in asked  # the exceptions are exercised
    assert passed - asked == never & passed
    assert len(asked) >= 20, sorted(set(POINTS) - asked)
    assert set(DECISION_EXCEPTIONS) <= set(POINTS)


def test_kswapd_nap_is_only_a_decision_point():
    # no sleep and no CPU time of its own: the nap's sleep is a plain clock sleep after it
    src = (ROOT / "oomactors" / "kernel" / "vmscan_kswapd.py").read_text(encoding="utf-8")
    uses = re.findall(r"sched\.(\w+)\([^)]*\"kswapd\.nap\"", src)
    assert uses == ["decision"]


def test_the_docs_list_the_same_exceptions():
    page = points_page()
    for name, why in DECISION_EXCEPTIONS.items():
        assert f"| `{name}` |" in page and why.split(":")[0] in page
    exploring = (ROOT / "docs" / "exploring.md").read_text(encoding="utf-8")
    # "Every pass through a scheduling point is a *decision point* (except ...)."
    said = re.search(r"is a \*decision point\* \((.*?)\)\.", exploring, re.S)
    assert said is not None
    named = set(re.findall(r"`([a-z_]+\.[a-z_]+)`", said.group(1)))
    assert named == set(DECISION_EXCEPTIONS), named
