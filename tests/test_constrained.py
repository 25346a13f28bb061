"""A task in a cpuset and a memory cgroup at once (LTP oom05): the limit reached first
decides the kind of OOM and who the candidates are."""

from __future__ import annotations

from pathlib import Path

from helpers import events, pids_of

from oomactors.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "configs" / "cpuset-memcg.toml").read_text()
MIB = 256  # pages


def test_memcg_limit_first_gives_a_memcg_oom_inside_the_box(simulate):
    r = simulate("configs/cpuset-memcg.toml")
    kills = events(r, "sim:oom_kill")
    assert kills and {k["comm"] for k in kills} <= {"boxhog", "boxsvc"}
    assert kills[0]["comm"] == "boxhog"
    assert kills[0]["constraint"] == "CONSTRAINT_MEMCG" and kills[0]["oom_memcg"] == "/box"
    header = events(r, "sim:oom_header")[0]
    assert header["totalpages"] == 128 * MIB  # memory.max + swap.max (0)
    assert {row[8] for row in header["rows"]} == {"boxsvc", "boxhog"}  # bigfree is not a candidate
    assert pids_of(r, "bigfree")[0] not in {e["pid"] for e in events(r, "oom:mark_victim")}


def test_node_first_gives_a_cpuset_oom(simulate):
    text = TEXT.replace('max = "128MiB"', 'max = "900MiB"')
    r = simulate(parse_config(text, "cpuset-memcg (lifted)"))
    kills = events(r, "sim:oom_kill")
    assert kills and kills[0]["comm"] == "boxhog"
    assert kills[0]["constraint"] == "CONSTRAINT_CPUSET" and kills[0]["cpuset"] == "box"
    header = events(r, "sim:oom_header")[0]
    node1_present = r.machine.node_present_pages(1)
    assert header["totalpages"] == node1_present  # no swap
    # bigfree is in the root cpuset, whose mems include node 1: it is a candidate now
    assert "bigfree" in {row[8] for row in header["rows"]}
