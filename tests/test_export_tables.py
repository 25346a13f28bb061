"""`trace export --format csv|parquet` streams: the trace is read twice in bounded batches,
and the file is what the frame of the whole run (Run.events, flattened) gives -- the CSV
byte for byte, the Parquet file read back with its dtypes."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import oomactors
from oomactors.cli import main
from oomactors.errors import InputError
from oomactors.events import EVENT_ID
from oomactors.export import tables
from oomactors.trace.stream import TraceWriter

ROOT = Path(__file__).resolve().parent.parent


def _reference(run, tmp_path):
    """Today's frame-based table: the whole run as one frame, written at once."""
    df = tables.flat_events(run)
    csv, pq = tmp_path / "ref.csv", tmp_path / "ref.parquet"
    df.to_csv(csv, index=False)
    df.to_parquet(pq, engine="pyarrow", index=False)
    return csv.read_bytes(), pd.read_parquet(pq)


def _same_as_frame(run, tmp_path, rows=None):
    tables.write_table(run, str(tmp_path / "new.csv"), "csv", rows)
    tables.write_table(run, str(tmp_path / "new.parquet"), "parquet", rows)
    assert "events" not in vars(run)                    # no frame of the whole run was built
    ref_csv, ref_pq = _reference(oomactors.load_trace(run.path, partial=run.partial), tmp_path)
    assert (tmp_path / "new.csv").read_bytes() == ref_csv
    back = pd.read_parquet(tmp_path / "new.parquet")
    pd.testing.assert_frame_equal(back, ref_pq, check_exact=True)   # dtypes included
    return ref_pq


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    d = tmp_path_factory.mktemp("tables")
    out = {}
    for name, cfg, dur in (("quickstart", None, None),                    # an OOM report: list fields
                           ("memcg", ROOT / "tests/data/observe-memcg.toml", None),  # memcg + PSI
                           ("oomd", ROOT / "configs/userspace-oomd.toml", None),     # a daemon's kills
                           ("nofs", ROOT / "configs/nofs-loop.toml", "1s")):
        out[name] = str(d / f"{name}.trace")
        oomactors.run(cfg, seed=3, duration=dur, trace=out[name])
    return out


@pytest.mark.parametrize("name", ["quickstart", "memcg", "oomd", "nofs"])
def test_streamed_table_is_the_frame_of_the_whole_run(traces, tmp_path, name):
    run = oomactors.load_trace(traces[name])
    # small batches: most batches hold only some kinds, and still get the run's dtypes
    ref = _same_as_frame(run, tmp_path, rows=997)
    assert len(ref) == sum(1 for _ in run.records()) > 2 * 997


def test_a_torn_and_an_incomplete_trace_give_what_they_hold(traces, tmp_path):
    data = Path(traces["quickstart"]).read_bytes()
    torn = tmp_path / "torn.trace"
    torn.write_bytes(data[: len(data) // 2])
    run = oomactors.load_trace(torn, partial=True)
    ref = _same_as_frame(run, tmp_path, rows=500)
    assert 1000 < len(ref) and "truncated" in str(run.torn)
    # the run's end is not on record: exported as is (the exit status does not change)
    incomplete = tmp_path / "incomplete.trace"
    with TraceWriter(incomplete, seed=3, hz=250, config={}) as w:
        for rec in oomactors.load_trace(traces["quickstart"]).records():
            if rec[1] != EVENT_ID["sim:run_end"]:
                w.write(rec)
    res = CliRunner().invoke(main, ["trace", "export", str(incomplete), "-o", str(tmp_path / "i.csv")])
    assert res.exit_code == 0, res.output
    _same_as_frame(oomactors.load_trace(incomplete), tmp_path, rows=700)


def test_mixed_values_keep_the_one_type_per_column_rule_across_batches(tmp_path):
    """Field values of every sort a trace can hold, scattered over batches of 4 rows:
    a column is text wherever any value anywhere makes it so, numbers stay numbers."""
    sorts = ["x", 5, -7, 2.5, 3.0, None, True, (1, (2, "a")), 2**64 - 1, 2**63, -2**63,
             float("nan"), float("inf"), "", {"a": 1}, 0]
    ce, sg = EVENT_ID["compaction:mm_compaction_end"], EVENT_ID["signal:signal_generate"]
    for seed in range(12):
        rnd = random.Random(seed)
        mine, theirs = rnd.sample(sorts, rnd.randint(1, 3)), rnd.sample(sorts, rnd.randint(1, 2))
        path = tmp_path / f"mixed{seed}.trace"
        with TraceWriter(path, seed=0, hz=250, config={}) as w:
            for t in range(80):
                if rnd.random() < 0.3:   # compaction's result, signal's result: one column
                    w.write((t, ce, 0, 5, 1, 3, rnd.choice(mine), rnd.choice([7, 2.5])))
                else:
                    w.write((t, sg, -1, 6, 9, "a", rnd.choice(theirs), 0))
        _same_as_frame(oomactors.load_trace(path), tmp_path, rows=4)


def test_batches_are_bounded(traces, tmp_path, monkeypatch):
    """The export holds one batch at a time: every frame it writes has at most
    batch_rows() rows however long the trace (here ~6 batches at a 4096-cell bound)."""
    monkeypatch.setattr(tables, "BATCH_CELLS", 4096 * 90)
    monkeypatch.setattr(tables, "MIN_ROWS", 16)
    written: list[int] = []
    real = pd.DataFrame.to_csv

    def counting(df, *a, **kw):
        written.append(len(df))
        return real(df, *a, **kw)

    monkeypatch.setattr(pd.DataFrame, "to_csv", counting)
    run = oomactors.load_trace(traces["quickstart"])
    n = sum(1 for _ in run.records())
    res = CliRunner().invoke(main, ["trace", "export", traces["quickstart"], "-o", str(tmp_path / "q.csv")])
    assert res.exit_code == 0, res.output
    cols = len(pd.read_csv(tmp_path / "q.csv", nrows=1).columns)
    limit = tables.batch_rows(cols)
    assert limit < n and len(written) >= n // limit
    assert max(written) <= limit and sum(written) == n


def test_a_failure_midway_leaves_no_partial_table(traces, tmp_path, monkeypatch):
    out = tmp_path / "t.csv"
    out.write_text("an older table\n")
    calls = []
    real = tables.flatten

    def failing(df):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(df)

    monkeypatch.setattr(tables, "flatten", failing)
    run = oomactors.load_trace(traces["quickstart"])
    for fmt in ("csv", "parquet"):
        calls.clear()
        with pytest.raises(InputError, match="cannot write: No space left on device"):
            tables.write_table(run, str(out), fmt, rows=1000)
        assert out.read_text() == "an older table\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]   # no temporary left


def test_export_bad_output_is_one_line(traces, tmp_path):
    q = traces["quickstart"]
    for args, msg in (((q, "-o", str(tmp_path / "no" / "x.csv")), "cannot write: No such file or directory"),
                      ((q, "-o", q, "--format", "csv"), "refusing to overwrite an input"),
                      ((q, "-o", str(tmp_path / "x.parquet"), "--format", "tsv"), "--format")):
        res = CliRunner().invoke(main, ["trace", "export", *args])
        assert res.exit_code == 2, res.output
        assert res.output.startswith("oomactors: error: ") and msg in res.output
        assert res.output.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_run_export_writes_the_table_of_the_whole_run(traces, tmp_path):
    run = oomactors.load_trace(traces["memcg"])
    run.export(tmp_path / "m.parquet")
    run.export(tmp_path / "m.csv")
    assert "events" not in vars(run)
    ref_csv, ref_pq = _reference(oomactors.load_trace(traces["memcg"]), tmp_path)
    assert (tmp_path / "m.csv").read_bytes() == ref_csv
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "m.parquet"), ref_pq, check_exact=True)
