"""ZONE_DMA: the 16 MiB DMA zone of an x86-64 node 0, what GFP_DMA requests get from it,
and what a hopeless lowmem request costs (the OOM killer does not help it)."""

from __future__ import annotations

import pytest

from helpers import events
from oomactors.config import parse_config
from oomactors.errors import ConfigError
from oomactors.kernel.mmzone import ZONE_DMA, ZONE_DMA32, ZONE_NORMAL
from oomactors.machine import Machine
from oomactors.units import MiB

PAGE = 4096


def _cfg(gfp: str, size: str, duration: str = "2s", extra: str = "") -> str:
    return f"""
[machine]
memory = "1GiB"
{extra}
[run]
duration = "{duration}"
[[tasks]]
name = "drv"
program = [ {{ op = "alloc", size = "{size}", gfp = "{gfp}", kind = "kernel", on_fail = "continue" }},
            {{ op = "sleep", time = "10s" }} ]
"""


def test_node0_has_a_16mib_dma_zone_protected_by_lowmem_reserve():
    m = Machine(parse_config("[machine]\nmemory = \"2GiB\"\nnodes = 2"))
    dma = [z for z in m.zones if z.idx == ZONE_DMA]
    assert len(dma) == 1 and dma[0].node.nid == 0 and dma[0].present == 16 * MiB // PAGE
    zones = {z.idx: z for z in m.nodes[0].zones}
    above = zones[ZONE_DMA32].managed + zones[ZONE_NORMAL].managed
    # lowmem_reserve_ratio[DMA] = 256: a NORMAL request leaves 1/256 of the zones above alone
    assert dma[0].lowmem_reserve[ZONE_NORMAL] == above // 256
    assert dma[0].lowmem_reserve[ZONE_DMA32] == zones[ZONE_DMA32].managed // 256
    # node 1 has no DMA zone; zonelists go node by node, each node's zones highest first
    assert [z.idx for z in m.nodes[1].zones] == [ZONE_NORMAL]
    assert [(z.node.nid, z.idx) for z in m.zonelists[0]] == [(0, ZONE_NORMAL), (0, ZONE_DMA32),
                                                             (0, ZONE_DMA), (1, ZONE_NORMAL)]
    assert m.zonelists[1][-1] is dma[0]
    # machine.dma = 0: CONFIG_ZONE_DMA off
    m0 = Machine(parse_config("[machine]\ndma = 0"))
    assert all(z.idx != ZONE_DMA for z in m0.zones)


def test_gfp_dma_is_served_from_the_dma_zone(simulate):
    r = simulate(parse_config(_cfg("GFP_KERNEL | __GFP_DMA", "4MiB")))
    dma = next(z for z in r.machine.zones if z.idx == ZONE_DMA)
    assert dma.nr["kernel"] == 4 * MiB // PAGE
    assert not events(r, "sim:step_failed")


def test_gfp_dma_larger_than_the_zone_fails_without_a_kill(simulate):
    r = simulate(parse_config(_cfg("GFP_KERNEL | __GFP_DMA", "64MiB")))
    dma = next(z for z in r.machine.zones if z.idx == ZONE_DMA)
    # it took what the zone had above its min watermark, then failed: no kill for lowmem
    assert 0 < dma.nr["kernel"] < 16 * MiB // PAGE
    assert [e["op"] for e in events(r, "sim:step_failed")] == ["alloc"]
    assert not events(r, "sim:out_of_memory_enter") and not events(r, "oom:mark_victim")


def test_gfp_dma_nofail_spins_without_kills_and_bounded_work(simulate):
    r = simulate(parse_config(_cfg("GFP_KERNEL | __GFP_DMA | __GFP_NOFAIL", "64MiB")))
    assert r.reason == "duration" and r.end_jiffies == 2 * r.hz
    assert not events(r, "sim:out_of_memory_enter") and not events(r, "oom:mark_victim")
    assert not events(r, "sim:step_failed")   # __GFP_NOFAIL never fails
    # the hopeless rounds cost a jiffy each: a bounded stream, not one per 5 µs round
    assert len(r.records) < 40 * r.hz * 2


@pytest.mark.parametrize("gfp, kind, problem", [
    ("0xffffffff", "kernel", "undefined GFP bits 0xff800000"),
    ("GFP_KERNEL | __GFP_DMA | __GFP_DMA32", "kernel", "names two zones at once"),
    ("GFP_USER | __GFP_DMA", "anon", "a DMA zone modifier on a user page fault"),
])
def test_senseless_masks_are_refused_in_one_line(gfp, kind, problem):
    text = f'[[tasks]]\nname = "a"\nprogram = [{{ op = "alloc", size = "1MiB", gfp = "{gfp}", kind = "{kind}" }}]\n'
    with pytest.raises(ConfigError) as e:
        parse_config(text, "x.toml")
    msg = str(e.value)
    assert msg.startswith("x.toml: tasks[0].program[0].gfp: ") and problem in msg and "\n" not in msg


def test_dma_zone_size_is_checked():
    with pytest.raises(ConfigError, match=r"machine.dma: must be at most 16MiB"):
        parse_config('[machine]\ndma = "32MiB"', "x.toml")
