"""The Python API (oomactors.run / load_trace / compare) and `trace export --format
parquet|csv`: frames read back from the trace agree with the CLI's own outputs."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import oomactors
from oomactors.cli import main
from oomactors.config import default_config_text
from oomactors.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parent.parent

# a memcg that goes OOM, with PSI samples: memcg counters, PSI and a memcg kill
MEMCG = ROOT / "tests/data/observe-memcg.toml"


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "seed3.trace"
    return oomactors.run(seed=3, trace=path)


@pytest.fixture(scope="module")
def memcg_run():
    return oomactors.run(MEMCG, seed=1)


def test_run_summary_and_console_are_what_the_cli_prints(quick):
    out = cli("run", "--seed", "3", "--json")
    assert out.exit_code == 0, out.output
    assert quick.summary == json.loads(out.output)
    assert quick.summary["kills"][0]["comm"] == "leaker"
    text = cli("run", "--seed", "3").output
    assert quick.console and all(line in text for line in quick.console)
    assert any("Killed process 9 (leaker)" in line for line in quick.console)


def test_load_trace_is_the_same_run(quick):
    again = oomactors.load_trace(quick.path)
    assert again.summary == quick.summary
    assert again.seed == 3 and again.hz == 250
    pd.testing.assert_frame_equal(again.events, quick.events)


def test_events_frame_has_a_column_per_field_and_times_in_seconds(quick):
    ev = quick.events
    n = sum(1 for _ in quick.records())
    assert len(ev) == n
    assert list(ev.columns[:4]) == ["t", "event", "cpu", "pid"]
    for col in ("comm", "points", "constraint", "next_pid", "free", "order", "gfp_flags"):
        assert col in ev.columns
    kill = ev[ev["event"] == "sim:oom_kill"]
    assert kill["comm"].tolist() == ["leaker"] and kill["pid"].tolist() == [9]
    assert kill["t"].tolist() == [quick.summary["kills"][0]["t"]]
    chosen = ev[ev["event"] == "sim:oom_victim_chosen"]
    assert chosen["points"].tolist() == [quick.summary["kills"][0]["points"]]
    # a field that only some kinds have is missing on the others
    assert ev.loc[ev["event"] == "sim:meminfo", "comm"].isna().all()
    assert ev["t"].max() == quick.summary["simulated_seconds"]


def test_time_series(quick):
    mem = quick.meminfo()
    assert list(mem.index[:3]) == [1.0, 2.0, 3.0]      # run.meminfo_interval = 1s
    raw = quick.frame("sim:meminfo")
    assert mem["anon"].tolist() == raw["anon"].tolist()
    kb = quick.meminfo(unit="kB")
    assert (kb["free"] == mem["free"] * 4).all()
    assert (quick.meminfo(unit="MiB")["anon"] == mem["anon"] * 4 / 1024).all()
    zones = quick.zoneinfo()
    assert set(zones["zone"]) == {"0:DMA", "0:DMA32", "0:Normal"}  # x86-64 has a 16 MiB ZONE_DMA
    normal = zones[zones["zone"] == "0:Normal"]
    assert (normal["min"] < normal["low"]).all() and (normal["low"] < normal["high"]).all()
    # the zones' free pages add up to the machine's (per-CPU lists aside)
    assert (zones.groupby(level=0)["free"].sum() == mem["free"]).all()
    commit = quick.commit()
    assert commit["committed_as"].iloc[-1] == quick.summary["committed_as"]
    with pytest.raises(ValueError, match="unit"):
        quick.meminfo(unit="GB")


def test_kills_frame(quick, memcg_run):
    k = quick.kills
    assert k[["pid", "comm", "by", "constraint"]].values.tolist() == [[9, "leaker", "kernel", "CONSTRAINT_NONE"]]
    assert k["points"].tolist() == [quick.summary["kills"][0]["points"]]
    kill = quick.frame("sim:oom_kill").iloc[0]
    assert k["freed_kb"].iloc[0] >= kill["anon_rss"] + kill["file_rss"] + kill["shmem_rss"]
    mk = memcg_run.kills
    assert mk["comm"].tolist() == ["hog"] and mk["constraint"].tolist() == ["CONSTRAINT_MEMCG"]


def test_psi_and_memcg_series(memcg_run):
    psi = memcg_run.psi()
    raw = memcg_run.frame("sim:psi")
    root = raw[raw["path"] == "/"]
    assert len(psi) == len(root) > 4
    assert psi["some_avg10"].tolist() == pytest.approx((root["some_avg10"] / 100).tolist())
    assert psi["full_total"].tolist() == pytest.approx((root["full_total"] / 1e6).tolist())
    assert set(memcg_run.psi(path=None)["path"]) >= {"/", "/box"}
    mc = memcg_run.memcg()
    box = mc[mc["path"] == "/box"]
    assert (box["max"] == 100 * 256).all() and (box["high"] == 95 * 256).all()
    assert box["usage"].max() <= 100 * 256
    assert box["usage"].max() > 95 * 256


def test_run_options_and_bad_input(tmp_path):
    short = oomactors.run(seed=3, duration="2s", policy="largest-rss")
    assert short.summary["simulated_seconds"] == 2.0
    assert short.summary["end_reason"] == "duration"
    assert short.summary["policy"] == "largest-rss"
    with pytest.raises(ConfigError, match="missing.toml"):
        oomactors.run(str(tmp_path / "missing.toml"))
    with pytest.raises(InputError, match="duration"):
        oomactors.run(duration="5")
    with pytest.raises(InputError, match="nope"):
        oomactors.run(policy="nope")
    with pytest.raises(InputError, match="not an oomactors trace"):
        oomactors.load_trace(__file__)


def test_a_runs_temporary_trace_goes_with_it():
    r = oomactors.run(seed=3, duration="1s")
    path = r.path
    assert os.path.exists(path)
    del r
    gc.collect()
    assert not os.path.exists(path)


def test_compare_returns_one_row_per_run(tmp_path):
    quick = str(ROOT / "configs/quickstart.toml")
    df = oomactors.compare(quick, ["linux", "largest-rss"], seeds=2)
    assert len(df) == 4
    assert df[["policy", "seed"]].values.tolist() == [["linux", 0], ["linux", 1], ["largest-rss", 0],
                                                      ["largest-rss", 1]]
    data = df.attrs["comparison"]
    first = data["configs"][0]["policies"][0]["runs"][0]
    row = df.iloc[0]
    for key in ("kills", "collateral", "stall_some_s", "alloc_failures", "end_reason"):
        assert row[key] == first[key]
    out = cli("compare", quick, "--policy", "linux", "--policy", "largest-rss", "--seeds", "2", "--json")
    assert json.loads(out.output)["configs"] == data["configs"]


def test_compare_defaults_to_the_embedded_config():
    df = oomactors.compare(seeds=[3])
    assert df["policy"].tolist() == ["linux"] and df["kills"].tolist() == [1]
    assert Path(df["config"][0]).read_text() == default_config_text()


def test_export_parquet_and_csv_read_back(quick, tmp_path):
    pq, csv = tmp_path / "ev.parquet", tmp_path / "ev.csv"
    for out, fmt in ((pq, "parquet"), (csv, "csv")):
        res = cli("trace", "export", quick.path, "--format", fmt, "-o", str(out))
        assert res.exit_code == 0, res.output
    back = pd.read_parquet(pq)
    assert back.shape == quick.events.shape
    assert back["event"].tolist() == quick.events["event"].tolist()
    assert back["t"].tolist() == quick.events["t"].tolist()
    header = back[back["event"] == "sim:oom_header"].iloc[0]
    rows = json.loads(header["rows"])          # a list field is written as JSON text
    assert [r[8] for r in rows if r[0] == 9] == ["leaker"]   # pid ... oom_score_adj comm
    kill = back[back["event"] == "sim:oom_kill"].iloc[0]
    assert (kill["pid"], kill["comm"]) == (9, "leaker")
    table = pd.read_csv(csv, low_memory=False)
    assert len(table) == len(quick.events)
    assert table.loc[table["event"] == "sim:oom_kill", "comm"].tolist() == ["leaker"]
    # the extension picks the format when --format is left out
    res = cli("trace", "export", quick.path, "-o", str(tmp_path / "again.csv"))
    assert res.exit_code == 0 and (tmp_path / "again.csv").read_bytes() == csv.read_bytes()


def test_export_bad_input_is_one_line(quick, tmp_path):
    bad = tmp_path / "bad.trace"
    bad.write_bytes(b"\x00garbage")
    for args, msg in (((quick.path, "-o", str(tmp_path / "x.bin")), "cannot tell the export format"),
                      ((str(bad), "-o", str(tmp_path / "x.csv")), "not an oomactors trace"),
                      ((str(tmp_path / "none"), "-o", str(tmp_path / "x.csv")), "cannot read trace")):
        res = cli("trace", "export", *args)
        assert res.exit_code == 2
        assert res.output.startswith("oomactors: error: ") and msg in res.output
        assert res.output.count("\n") == 1


def test_a_torn_trace_exports_what_it_holds_and_still_fails(quick, tmp_path):
    torn = tmp_path / "torn.trace"
    data = Path(quick.path).read_bytes()
    torn.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        oomactors.load_trace(torn).events
    partial = oomactors.load_trace(torn, partial=True)
    n = len(partial.events)
    assert 1000 < n < len(quick.events) and "truncated" in str(partial.torn)
    cols = list(partial.events.columns)     # only the fields its events use
    pd.testing.assert_frame_equal(partial.events, quick.events.iloc[:n][cols], check_dtype=False)
    out = tmp_path / "torn.csv"
    res = cli("trace", "export", str(torn), "-o", str(out))
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert res.output.startswith("oomactors: error: ") and "holds the events before it" in res.output
    assert len(pd.read_csv(out, low_memory=False)) == n


def test_the_core_does_not_import_the_optional_libraries():
    import subprocess
    import sys
    code = ("import sys, oomactors, oomactors.cli\n"
            "r = oomactors.run(seed=3, duration='1s'); r.summary; r.console\n"
            "print(sorted(m for m in ('pandas', 'matplotlib', 'perfetto', 'pyarrow', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
