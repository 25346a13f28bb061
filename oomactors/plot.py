"""Pictures of runs and comparisons, drawn with matplotlib (``pip install 'oomactors[plot]'``).

Figures are built with :class:`matplotlib.figure.Figure` directly, never through
``pyplot``: no window, no global state, and the image is rendered by Agg (PNG) or the
vector backends (SVG, PDF) matplotlib picks from the file's extension.

* :func:`timeline` -- one run: memory by kind stacked over time (free at the bottom, so
  the zones' summed min/low/high watermarks read directly against it), the kills as
  labelled lines across every panel, the largest tasks' RSS, and PSI and memory-cgroup
  panels when the run has those samples;
* :func:`compare_figure` -- a comparison: each metric per policy, every seed's value as a
  dot and the median with the min-max range.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import InputError

MIB = 1024 * 1024
PAGE = 4096
IMAGE_TYPES = (".png", ".svg", ".pdf")
PANEL_IN = 2.6            # inches per panel
MAX_PIXELS = 16_000       # widest image `oomactors plot` draws (Agg's own limit is 2^16)
KINDS = (("free", "#9bd39b"), ("anon", "#e07b5a"), ("file", "#6fa8dc"), ("shmem", "#b48ad6"),
         ("slab", "#f2c94c"), ("other", "#bdbdbd"))


def check_image_path(path: str | os.PathLike[str]) -> None:
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in IMAGE_TYPES:
        raise InputError(f"{os.fspath(path)}: an image must end in {', '.join(IMAGE_TYPES)}")


def _figure(width: float, panels: int, dpi: int) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the install
        raise InputError("plots need matplotlib: pip install 'oomactors[plot]'") from None
    return Figure(figsize=(width, PANEL_IN * panels + 0.6), dpi=dpi, layout="constrained")


def _save(fig: Any, path: str | os.PathLike[str] | None, dpi: int) -> None:
    if path is None:
        return
    check_image_path(path)
    try:
        fig.savefig(os.fspath(path), dpi=dpi)
    except OSError as e:
        raise InputError(f"{os.fspath(path)}: cannot write: {e.strerror or e}") from None


def timeline(run: Any, path: str | os.PathLike[str] | None = None, *, width: float = 12, dpi: int = 100,
             top: int = 5) -> Any:
    """The timeline of ``run`` (an :class:`oomactors.api.Run`) as a Figure, also saved to
    ``path`` when given.  The image is ``width`` inches wide and 2.6 inches per panel
    (+0.6) high, at ``dpi``."""
    mem = run.meminfo(unit="pages")
    zones = run.zoneinfo(unit="pages")
    rss = run.frame("kmem:rss_stat") if "kmem:rss_stat" in run.table.ids else None
    psi = run.psi(path=None)
    memcg = run.memcg(unit="MiB")
    memcg = memcg[memcg["path"] != "/"] if len(memcg) else memcg
    kills = run.kills
    panels = ["memory"]
    if len(zones):
        panels.append("zones")
    if rss is not None and len(rss):
        panels.append("rss")
    if len(psi):
        panels.append("psi")
    if len(memcg):
        panels.append("memcg")
    fig = _figure(width, len(panels), dpi)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    byname = dict(zip(panels, axes))
    end = run.summary["simulated_seconds"]
    _memory(byname["memory"], mem)
    if "zones" in byname:
        _zones(byname["zones"], zones)
    if "rss" in byname:
        _rss(byname["rss"], rss, run, top, end)
    if "psi" in byname:
        _psi(byname["psi"], psi)
    if "memcg" in byname:
        _memcg(byname["memcg"], memcg)
    for ax in axes:
        ax.set_xlim(0, max(end, 1e-3))
        ax.grid(True, alpha=0.3)
    for i, k in enumerate(kills.itertuples()):
        for ax in axes:
            ax.axvline(k.t, color="#c0392b", lw=1.2, ls="--", gid="kill")
        label = f"{'killed' if k.by == 'kernel' else k.by + ' killed'} {k.comm} ({k.pid})"
        axes[0].annotate(label, xy=(k.t, 1.0), xycoords=("data", "axes fraction"),
                         xytext=(3, -12 - 11 * (i % 4)), textcoords="offset points", fontsize=8,
                         color="#c0392b", gid="kill-label")
    axes[-1].set_xlabel("simulated time (s)")
    policy = run.summary["policy"] + (f" + {run.summary['daemon']}" if run.summary["daemon"] else "")
    fig.suptitle(f"oomactors run: seed {run.seed}, {run.summary['profile']}, policy {policy}, "
                 f"ended by {run.summary['end_reason']}", fontsize=11)
    _save(fig, path, dpi)
    return fig


def _memory(ax: Any, mem: Any) -> None:
    ax.set_title("memory by kind (stacked; other = page tables + kernel)", fontsize=10, loc="left")
    ax.set_ylabel("MiB")
    if not len(mem):
        ax.text(0.5, 0.5, "no sim:meminfo samples (run.meminfo_interval = 0)", ha="center",
                transform=ax.transAxes)
        return
    t = mem.index.to_numpy(dtype=float)
    parts = {"free": mem["free"] + mem["free_pcp"], "anon": mem["anon"], "file": mem["file"],
             "shmem": mem["shmem"], "slab": mem["slab_reclaimable"] + mem["slab_unreclaimable"],
             "other": mem["pagetables"] + mem["kernel"]}
    ys = [parts[k].to_numpy(dtype=float) * PAGE / MIB for k, _c in KINDS]
    ax.stackplot(t, ys, labels=[k for k, _c in KINDS], colors=[c for _k, c in KINDS], alpha=0.85,
                 step=None)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)


def _zones(ax: Any, zones: Any) -> None:
    ax.set_title("free memory per zone near its min (dotted), low (dashed) and high (dash-dot) watermarks",
                 fontsize=10, loc="left")
    ax.set_ylabel("MiB")
    top = 0.0
    lowest = float("inf")      # the least free memory of the zone that came closest
    for zone, g in zones.groupby("zone", sort=True):
        t = g.index.to_numpy(dtype=float)
        free = g["free"].to_numpy(dtype=float) * PAGE / MIB
        lowest = min(lowest, float(free.min()))
        line = ax.plot(t, free, marker=".", label=f"zone {zone} free", gid=f"zone-{zone}-free")[0]
        for key, style in (("min", ":"), ("low", "--"), ("high", "-.")):
            v = g[key].to_numpy(dtype=float) * PAGE / MIB
            ax.plot(t, v, ls=style, lw=1, color=line.get_color(), gid=f"zone-{zone}-{key}")
            top = max(top, float(v.max()))
    # the interesting part is the approach to the watermarks, not the idle free memory;
    # a run that never came near them shows how far it stayed
    ax.set_ylim(0, max(top * 4, lowest * 1.15, 1.0))
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)


def rss_series(rss: Any, exits: dict[int, float], end: float) -> dict[int, tuple[list[float], list[float]]]:
    """Each process's RSS (anon + file + shmem, MiB) as step points from its kmem:rss_stat
    samples: held until the next sample, dropping to 0 at its exit, else held to ``end``."""
    series = {}
    for pid, g in rss.groupby("pid", sort=True):
        cur = [0, 0, 0, 0]
        xs, ys = [], []
        for t, member, size in zip(g["t"], g["member"], g["size"]):
            cur[member] = size
            if xs and xs[-1] == t:
                ys[-1] = (cur[0] + cur[1] + cur[3]) / MIB
            else:
                xs.append(float(t))
                ys.append((cur[0] + cur[1] + cur[3]) / MIB)
        if pid in exits and exits[pid] >= xs[-1]:
            xs.append(exits[pid])
            ys.append(0.0)
        elif xs[-1] < end:
            xs.append(end)
            ys.append(ys[-1])
        series[pid] = (xs, ys)
    return series


def _rss(ax: Any, rss: Any, run: Any, top: int, end: float) -> None:
    ax.set_title(f"RSS of the {top} largest processes (anon + file + shmem, sampled by kmem:rss_stat)",
                 fontsize=10, loc="left")
    ax.set_ylabel("MiB")
    names, exits = {}, {}
    for e in run.iter_events(["sim:task_new", "sched:sched_process_exit"]):
        if e["event"] == "sim:task_new":
            names[e["pid"]] = e["comm"]
        else:
            exits[e["pid"]] = e["t"]
    series = rss_series(rss, exits, end)
    largest = sorted(series, key=lambda p: (-max(series[p][1]), p))[:top]
    for pid in largest:
        xs, ys = series[pid]
        ax.step(xs, ys, where="post", label=f"{names.get(pid, '?')} ({pid})", gid=f"rss-{pid}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)


def _psi(ax: Any, psi: Any) -> None:
    ax.set_title("memory pressure (PSI avg10)", fontsize=10, loc="left")
    ax.set_ylabel("% of time")
    for path, g in psi.groupby("path", sort=True):
        t = g.index.to_numpy(dtype=float)
        line = ax.plot(t, g["some_avg10"].to_numpy(dtype=float), label=f"{path} some")[0]
        ax.plot(t, g["full_avg10"].to_numpy(dtype=float), ls="--", color=line.get_color(), label=f"{path} full")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)


def _memcg(ax: Any, memcg: Any) -> None:
    from .kernel.memcontrol import PAGE_COUNTER_MAX
    ax.set_title("memory cgroups: usage (solid) against memory.max (dashed) and memory.high (dotted)",
                 fontsize=10, loc="left")
    ax.set_ylabel("MiB")
    unlimited = PAGE_COUNTER_MAX * PAGE / MIB
    for path, g in memcg.groupby("path", sort=True):
        t = g.index.to_numpy(dtype=float)
        line = ax.step(t, g["usage"].to_numpy(dtype=float), where="post", label=path)[0]
        for key, style in (("max", "--"), ("high", ":")):
            v = g[key].to_numpy(dtype=float)
            if (v < unlimited).any():
                ax.step(t, v, where="post", ls=style, color=line.get_color(), lw=1)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)


def compare_figure(data: dict[str, Any], path: str | os.PathLike[str] | None = None, *, width: float = 14,
                   dpi: int = 100) -> Any:
    """A comparison (the object :func:`oomactors.comparison.compare` returns) as a Figure:
    one panel per metric, a column per (config, policy): every seed's value as a dot, the
    median as a bar end with the min-max range; saved to ``path`` when given."""
    from .comparison import COLUMNS
    metrics = [(k, h) for k, h in COLUMNS] + [("panic", "panics")]
    cols = 4
    rows = -(-len(metrics) // cols)
    fig = _figure(width, rows, dpi)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    # a group of bars per config, a bar per policy (same colour for a policy everywhere)
    names = list(dict.fromkeys(pol["policy"] for conf in data["configs"] for pol in conf["policies"]))
    colour = {name: f"C{i % 10}" for i, name in enumerate(names)}
    groups, xs = [], []
    for ci, conf in enumerate(data["configs"]):
        n = len(conf["policies"])
        width = 0.8 / max(n, 1)
        for pj, pol in enumerate(conf["policies"]):
            groups.append((conf["config"], pol))
            xs.append(ci + (pj - (n - 1) / 2) * width if len(data["configs"]) > 1 else pj)
    one_config = len(data["configs"]) == 1
    bar_w = 0.6 if one_config else 0.8 / max(len(c["policies"]) for c in data["configs"]) * 0.85
    for ax, (key, head) in zip(axes, metrics):
        ax.set_title(head, fontsize=10)
        for x, ((_c, pol), xpos) in enumerate(zip(groups, xs)):
            vals = [r[key] for r in pol["runs"] if r[key] is not None]
            if not vals:
                continue
            c = colour[pol["policy"]]
            ax.scatter([xpos] * len(vals), vals, s=14, color="#444444", zorder=3, gid=f"seeds-{key}-{x}")
            lo, med, hi = pol["min"].get(key), pol["median"].get(key), pol["max"].get(key)
            if med is not None:
                ax.bar(xpos, med, width=bar_w, alpha=0.4, color=c, gid=f"median-{key}-{x}")
                ax.vlines(xpos, lo, hi, color=c, lw=2, gid=f"range-{key}-{x}")
        if one_config:
            ax.set_xticks(xs, [pol["policy"] for _c, pol in groups], fontsize=8,
                          rotation=25 if len(groups) > 3 else 0, ha="right" if len(groups) > 3 else "center")
        else:
            ax.set_xticks(range(len(data["configs"])),
                          [os.path.basename(conf["config"]) for conf in data["configs"]], fontsize=8)
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1))
        ax.grid(True, axis="y", alpha=0.3)
    if not one_config:
        from matplotlib.patches import Patch
        fig.legend(handles=[Patch(color=colour[n], alpha=0.6, label=n) for n in names], loc="outside lower center",
                   ncols=min(len(names), 6), fontsize=9, frameon=False)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    seeds = data["seeds"]
    fig.suptitle(f"oomactors compare: {len(seeds)} seed{'s' if len(seeds) != 1 else ''} per policy "
                 "(dots: seeds; bar: median; line: min–max)", fontsize=11)
    _save(fig, path, dpi)
    return fig
