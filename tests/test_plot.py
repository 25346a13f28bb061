"""Plots: the figures hold the run's numbers, and the files decode as images of the size
promised (width × dpi by 2.6 inches per panel + 0.6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

import oomactors
from oomactors.cli import main
from oomactors.comparison import compare
from oomactors.plot import compare_figure, timeline

ROOT = Path(__file__).resolve().parent.parent
MEMCG = ROOT / "tests/data/observe-memcg.toml"
QUICK = str(ROOT / "configs/quickstart.toml")
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return oomactors.run(seed=3, trace=tmp_path_factory.mktemp("plot") / "seed3.trace")


def by_gid(ax, gid):
    return [a for a in [*ax.lines, *ax.collections, *ax.texts, *ax.patches] if a.get_gid() == gid]


def test_timeline_holds_the_runs_numbers(quick):
    fig = timeline(quick)
    axes = fig.axes
    assert len(axes) == 3                                 # memory, zones, RSS (no PSI, no memcg)
    mem_ax, zone_ax, rss_ax = axes
    legend = [t.get_text() for t in mem_ax.get_legend().get_texts()]
    assert legend == ["free", "anon", "file", "shmem", "slab", "other"]
    # the stack's top is all the memory the samples account for
    mem = quick.meminfo()
    total = sum(mem[k] for k in ("free", "free_pcp", "anon", "file", "shmem", "slab_reclaimable",
                                 "slab_unreclaimable", "pagetables", "kernel")) * 4096 / MIB
    top = mem_ax.collections[-1].get_paths()[0].vertices
    first_t = mem.index[0]
    assert max(y for x, y in top if x == first_t) == pytest.approx(total.iloc[0])
    zones = quick.zoneinfo()
    normal = zones[zones["zone"] == "0:Normal"]
    (free,) = by_gid(zone_ax, "zone-0:Normal-free")
    assert list(free.get_ydata()) == pytest.approx(list(normal["free"] * 4096 / MIB))
    (wmin,) = by_gid(zone_ax, "zone-0:Normal-min")
    assert set(wmin.get_ydata()) == {normal["min"].iloc[0] * 4096 / MIB}
    (leaker,) = by_gid(rss_ax, "rss-9")
    rss = quick.frame("kmem:rss_stat").query("pid == 9 and member == 1")
    assert max(leaker.get_ydata()) == pytest.approx(rss["size"].max() / MIB)
    assert leaker.get_ydata()[-1] == 0                    # killed: its RSS drops at its exit
    assert leaker.get_label() == "leaker (9)"
    kill_t = quick.kills["t"].iloc[0]
    for ax in axes:
        assert [line.get_xdata()[0] for line in by_gid(ax, "kill")] == [kill_t]
    assert [t.get_text() for t in by_gid(mem_ax, "kill-label")] == ["killed leaker (9)"]


def test_timeline_has_psi_and_memcg_panels_when_the_run_has_them():
    run = oomactors.run(MEMCG, seed=1)
    fig = run.plot()
    assert len(fig.axes) == 5
    psi_ax, memcg_ax = fig.axes[3], fig.axes[4]
    psi = run.psi("/box")
    line = next(li for li in psi_ax.lines if li.get_label() == "/box some")
    assert list(line.get_ydata()) == pytest.approx(list(psi["some_avg10"]))
    usage = next(li for li in memcg_ax.lines if li.get_label() == "/box")
    assert max(usage.get_ydata()) == pytest.approx(run.memcg(unit="MiB").query("path == '/box'")["usage"].max())
    assert [t.get_text() for t in fig.axes[0].texts] == ["killed hog (4)"]


@pytest.mark.parametrize(("ext", "magic"), [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_plot_command_writes_the_image(quick, tmp_path, ext, magic):
    out = tmp_path / f"timeline{ext}"
    res = CliRunner().invoke(main, ["plot", quick.path, "-o", str(out), "--width", "10", "--dpi", "80"])
    assert res.exit_code == 0, res.output
    data = out.read_bytes()
    assert data.startswith(magic)
    if ext == ".png":
        with Image.open(out) as img:
            img.load()
            assert img.size == (10 * 80, round((2.6 * 3 + 0.6) * 80))


def test_plot_bad_input(quick, tmp_path):
    for args, msg in (([quick.path, "-o", str(tmp_path / "x.jpg")], "must end in"),
                      ([str(tmp_path / "none"), "-o", str(tmp_path / "x.png")], "cannot read trace"),
                      ([quick.path, "-o", str(tmp_path / "no" / "x.png")], "cannot write"),
                      ([quick.path, "-o", str(tmp_path / "x.png"), "--width", "100", "--dpi", "600"],
                       "pixels wide")):
        res = CliRunner().invoke(main, ["plot", *args])
        assert res.exit_code == 2, res.output
        assert res.output.startswith("oomactors: error: ") and msg in res.output
        assert res.output.count("\n") == 1


def test_compare_plot(tmp_path):
    data = compare([QUICK], ["linux", "largest-rss"], [0, 1])
    fig = compare_figure(data)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible][:2] == ["kills", "collateral"]
    kills_ax = visible[0]
    for x, pol in enumerate(data["configs"][0]["policies"]):
        (dots,) = by_gid(kills_ax, f"seeds-kills-{x}")
        assert sorted(y for _x, y in dots.get_offsets()) == sorted(r["kills"] for r in pol["runs"])
        (bar,) = by_gid(kills_ax, f"median-kills-{x}")
        assert bar.get_height() == pol["median"]["kills"]
    assert [t.get_text() for t in kills_ax.get_xticklabels()] == ["linux", "largest-rss"]
    out = tmp_path / "cmp.png"
    res = CliRunner().invoke(main, ["compare", QUICK, "--policy", "linux", "--policy", "largest-rss",
                                    "--seeds", "2", "--json", "--plot", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["configs"] == data["configs"]
    with Image.open(out) as img:
        assert img.size == (1400, round((2.6 * 2 + 0.6) * 100))
    res = CliRunner().invoke(main, ["compare", QUICK, "--seeds", "1", "--plot", str(tmp_path / "x.gif")])
    assert res.exit_code == 2 and "must end in" in res.output
