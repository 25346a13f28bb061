"""The memory blocks of an OOM report as the console prints them, era by era.

The numbers come from two events recorded at the dump (kernel/show_mem.py):
``sim:show_mem`` for the "Mem-Info:" block of a global OOM and ``sim:memcg_oom_stat`` for
the "Memory cgroup stats for ..." block of a memcg OOM.  The layouts are those of 5.10
(mm/page_alloc.c show_free_areas, lib/show_mem.c, mm/swap_state.c, mm/memcontrol.c
memory_stat_format) and of Debian 12's 6.1 (checked against its console in QEMU).  A
profile without a layout (``Profile.show_mem == ""``) prints neither block.

Left out because the model does not keep them (docs/simplified.md): the migrate types after
each buddy count, 5.10's "Swap cache stats:" line, the "Unreclaimable slab info:" table,
and the memory.stat lines the model does not count per memcg.
"""

from __future__ import annotations

from typing import Any, Sequence

# lowmem_reserve[] has one column per zone type of a CONFIG_ZONE_DEVICE kernel (Debian's):
# DMA DMA32 Normal Movable Device.  The Device zone manages no pages, so its reserve is the
# Movable one's.
_ZONE_DEVICE_COLUMN = True

# memory_stat_format's keys in order (5.10: memory_stats[] then the events, with THP;
# 6.1: as its console printed them, then its event list)
MEMCG_STAT_KEYS = {
    "5.10": ("anon", "file", "kernel_stack", "percpu", "sock", "shmem", "file_mapped", "file_dirty",
             "file_writeback", "anon_thp", "inactive_anon", "active_anon", "inactive_file",
             "active_file", "unevictable", "slab_reclaimable", "slab_unreclaimable", "slab",
             "workingset_refault_anon", "workingset_refault_file", "workingset_activate_anon",
             "workingset_activate_file", "workingset_restore_anon", "workingset_restore_file",
             "workingset_nodereclaim", "pgfault", "pgmajfault", "pgrefill", "pgscan", "pgsteal",
             "pgactivate", "pgdeactivate", "pglazyfree", "pglazyfreed", "thp_fault_alloc",
             "thp_collapse_alloc"),
    "6.1": ("anon", "file", "kernel", "kernel_stack", "pagetables", "sec_pagetables", "percpu", "sock",
            "vmalloc", "shmem", "file_mapped", "file_dirty", "file_writeback", "swapcached", "anon_thp",
            "file_thp", "shmem_thp", "inactive_anon", "active_anon", "inactive_file", "active_file",
            "unevictable", "slab_reclaimable", "slab_unreclaimable", "slab", "workingset_refault_anon",
            "workingset_refault_file", "workingset_activate_anon", "workingset_activate_file",
            "workingset_restore_anon", "workingset_restore_file", "workingset_nodereclaim",
            "pgscan", "pgsteal", "pgscan_kswapd", "pgscan_direct", "pgsteal_kswapd", "pgsteal_direct",
            "pgfault", "pgmajfault", "pgrefill", "pgactivate", "pgdeactivate", "pglazyfree",
            "pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc"),
}

# printk: a record keeps LOG_LINE_MAX - 1 characters (1024 - 32 - 1); the console buffer
# that record_print_text fills with prefixed lines holds 1024 bytes
_RECORD_MAX = 991
_CONSOLE_BUF = 1024


def mem_info_lines(layout: str, ev: dict[str, Any]) -> list[str]:
    """The Mem-Info block of ``sim:show_mem`` (decoded) in ``layout`` ("5.10" or "6.1")."""
    vm, nodes, zones, totals = ev["vm"], ev["nodes"], ev["zones"], ev["totals"]
    (aa, ia, iso_a, af, i_f, iso_f, unevictable, dirty, writeback, slab_r, slab_u, mapped, shmem,
     pagetables, bounce, free, free_pcp, free_cma) = vm
    six = layout == "6.1"
    out = ["Mem-Info:",
           f"active_anon:{aa} inactive_anon:{ia} isolated_anon:{iso_a}",
           f" active_file:{af} inactive_file:{i_f} isolated_file:{iso_f}",
           f" unevictable:{unevictable} dirty:{dirty} writeback:{writeback}",
           f" slab_reclaimable:{slab_r} slab_unreclaimable:{slab_u}"]
    if six:
        out += [f" mapped:{mapped} shmem:{shmem} pagetables:{pagetables}",
                f" sec_pagetables:0 bounce:{bounce}", " kernel_misc_reclaimable:0"]
    else:
        out.append(f" mapped:{mapped} shmem:{shmem} pagetables:{pagetables} bounce:{bounce}")
    out.append(f" free:{free} free_pcp:{free_pcp} free_cma:{free_cma}")
    for nid, n_aa, n_ia, n_af, n_if, n_mapped, n_dirty, n_wb, n_shmem, stack_kb, n_pt, hopeless in nodes:
        line = (f"Node {nid} active_anon:{n_aa * 4}kB inactive_anon:{n_ia * 4}kB active_file:{n_af * 4}kB "
                f"inactive_file:{n_if * 4}kB unevictable:0kB isolated(anon):0kB isolated(file):0kB "
                f"mapped:{n_mapped * 4}kB dirty:{n_dirty * 4}kB writeback:{n_wb * 4}kB shmem:{n_shmem * 4}kB "
                f"shmem_thp: 0kB shmem_pmdmapped: 0kB anon_thp: 0kB writeback_tmp:0kB "
                f"kernel_stack:{stack_kb}kB ")
        if six:
            line += f"pagetables:{n_pt * 4}kB sec_pagetables:0kB "
        out.append(line + f"all_unreclaimable? {'yes' if hopeless else 'no'}")
    for (nid, name, z_free, z_min, z_low, z_high, z_aa, z_ia, z_af, z_if, wpend, present, managed,
         z_pt, z_pcp, local_pcp, reserve, _area) in zones:
        boost = "boost:0kB " if six else ""
        pt = "" if six else f"pagetables:{z_pt * 4}kB "
        out.append(f"Node {nid} {name} free:{z_free * 4}kB {boost}min:{z_min * 4}kB low:{z_low * 4}kB "
                   f"high:{z_high * 4}kB reserved_highatomic:0KB active_anon:{z_aa * 4}kB "
                   f"inactive_anon:{z_ia * 4}kB active_file:{z_af * 4}kB inactive_file:{z_if * 4}kB "
                   f"unevictable:0kB writepending:{wpend * 4}kB present:{present * 4}kB "
                   f"managed:{managed * 4}kB mlocked:0kB {pt}bounce:0kB free_pcp:{z_pcp * 4}kB "
                   f"local_pcp:{local_pcp * 4}kB free_cma:0kB")
        cols = list(reserve) + ([reserve[-1]] if _ZONE_DEVICE_COLUMN else [])
        out.append("lowmem_reserve[]: " + " ".join(str(r) for r in cols))
    for z in zones:
        nid, name, area = z[0], z[1], z[17]
        blocks = " ".join(f"{n}*{4 << o}kB" for o, n in enumerate(area))
        out.append(f"Node {nid} {name}: {blocks} = {sum(n << o for o, n in enumerate(area)) * 4}kB")
    pagecache, swapcache, free_swap, total_swap, ram, highmem, reserved, nr_nodes = totals
    # hugetlb_show_meminfo: the 2 MiB hstate of every node with memory (the model reserves
    # none); from 6.0 (dcadcf1c3061) only the nodes the report shows
    hnodes = [row[0] for row in nodes] if six else range(nr_nodes)
    out += [f"Node {nid} hugepages_total=0 hugepages_free=0 hugepages_surp=0 hugepages_size=2048kB"
            for nid in hnodes]
    out += [f"{pagecache} total pagecache pages", f"{swapcache} pages in swap cache",
            f"Free swap  = {free_swap * 4}kB", f"Total swap = {total_swap * 4}kB",
            f"{ram} pages RAM", f"{highmem} pages HighMem/MovableOnly", f"{reserved} pages reserved"]
    return out


def memcg_stat_lines(layout: str, path: str, stat: Sequence[Sequence[Any]], prefix_len: int) -> list[str]:
    """"Memory cgroup stats for PATH:" and the memory.stat text in ``layout``'s key order, the
    latter cut as printk cuts one record of several lines on the console (5.10-6.3 print it
    with one pr_info): the record keeps 991 characters, and the console buffer of 1024 bytes
    takes whole prefixed lines until the next would not fit."""
    values = {str(k): v for k, v in stat}
    text = "".join(f"{k} {values[k]}\n" for k in MEMCG_STAT_KEYS[layout] if k in values)
    return [f"Memory cgroup stats for {path}:", *record_print_lines(text, prefix_len)]


def record_print_lines(text: str, prefix_len: int) -> list[str]:
    """The lines of one printk record as the console shows them (kernel/printk/printk.c
    vprintk_store and record_print_text, 5.10): a line goes out while it fits with its
    prefix and newline; once the buffer is short, a line cut off at the record's end is
    dropped."""
    text = text[:_RECORD_MAX]
    if text.endswith("\n"):
        text = text[:-1]  # vprintk_store drops the record's trailing newline
    out: list[str] = []
    used = pos = 0
    text_len = len(text)
    truncated = False
    while True:
        nl = text.find("\n", pos, pos + text_len)
        if nl >= 0:
            line_len = nl - pos
        elif truncated:
            break
        else:
            line_len = text_len
        if used + prefix_len + text_len + 1 > _CONSOLE_BUF:
            if used + prefix_len + line_len + 1 > _CONSOLE_BUF:
                break
            text_len = min(_CONSOLE_BUF - used - prefix_len - 1, len(text) - pos)
            truncated = True
        out.append(text[pos:pos + line_len])
        used += prefix_len + line_len + 1
        if text_len == line_len:
            break
        pos += line_len + 1
        text_len -= line_len + 1
    return out
