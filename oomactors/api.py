"""The Python API for notebooks and scripts: run a simulation or load a trace, and read it
as pandas data frames.

    >>> import oomactors
    >>> run = oomactors.run(seed=3)                 # the embedded quickstart config
    >>> run.summary["kills"][0]["comm"]
    'leaker'
    >>> run.meminfo(unit="MiB")[["free", "anon", "file"]]   # doctest: +SKIP
    >>> run.events.query("event == 'sim:oom_kill'")          # doctest: +SKIP

A :class:`Run` is always read from a trace file: :func:`run` writes the run's trace (to a
temporary file unless ``trace=`` names one) and opens it exactly as :func:`load_trace`
opens a trace written earlier, so a live run and a trace read back from disk give the
same frames, summary and console text.  Nothing keeps the run's events in memory: each
accessor reads the file again, and the frames it builds are cached on the object.

pandas (``pip install 'oomactors[frames]'``) and matplotlib (``oomactors[plot]``) are
imported only when a frame or a figure is asked for.
"""

from __future__ import annotations

import atexit
import os
import tempfile
import weakref
from functools import cached_property
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from .errors import InputError, TraceError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .trace.stream import Trace

PAGE_KB = 4
_UNITS = {"pages": 1, "kB": PAGE_KB, "MiB": PAGE_KB / 1024}


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError("oomactors: data frames need pandas: pip install 'oomactors[frames]'") from None
    return pandas


class Run:
    """One run, read from its trace.

    ``seed``, ``hz``, ``config`` (the normalized config as a dict) and ``header`` come
    from the trace header; :attr:`summary`, :attr:`console`, :attr:`events`,
    :attr:`kills` and the time series (:meth:`meminfo`, :meth:`zoneinfo`, :meth:`psi`,
    :meth:`memcg`, :meth:`commit`) from its events.  Times are simulated seconds.
    """

    def __init__(self, trace: Trace, *, temporary: bool = False, partial: bool = False) -> None:
        from .report import EventTable
        self._trace = trace
        self.path: str = trace.path
        self.header: dict[str, Any] = trace.header
        self.seed: int | None = trace.seed
        self.hz: int = trace.hz
        self.config: dict[str, Any] | None = trace.config
        self.table = EventTable(trace.names, trace.fields)
        # a trace written for this object alone goes when the object does
        self._cleanup = weakref.finalize(self, _unlink, self.path) if temporary else None
        self.partial = partial
        #: with ``partial``: the error that cut a torn trace short (None: the trace is whole)
        self.torn: TraceError | None = None

    def __repr__(self) -> str:
        return f"<oomactors.Run seed={self.seed} hz={self.hz} trace={self.path!r}>"

    @classmethod
    def from_result(cls, result: Any) -> "Run":
        """The :class:`Run` of a finished :class:`oomactors.sim.RunResult` that kept its
        records -- what the pytest plugin's ``oom_sim`` returns, or ``sim.run(...,
        keep_records=True)`` -- read from memory exactly as from a trace file: events by
        name with named fields (:meth:`iter_events`, :meth:`frame`), :attr:`summary`,
        :attr:`kills`, the time series.  ``path`` is ``"<memory>"``."""
        return cls.from_records(result.records, seed=result.seed, hz=result.hz,
                                config=result.machine.cfg.as_dict())

    @classmethod
    def from_records(cls, records: Sequence[tuple], *, seed: int, hz: int,
                     config: dict[str, Any] | None = None) -> "Run":
        """A :class:`Run` over raw ``(t, id, cpu, pid, *fields)`` records held in memory
        (the current event table), e.g. a ``SimFailure``'s."""
        return cls(_KeptRecords(records, seed=seed, hz=hz, config=config))

    # --- raw events ---------------------------------------------------------------------
    def records(self) -> Iterator[tuple]:
        """The raw ``(t_jiffies, id, cpu, pid, *fields)`` records, read from the file.  A
        torn trace raises :class:`TraceError` after its last complete record, unless the
        Run was opened with ``partial=True`` (then :attr:`torn` holds the error)."""
        if not self.partial:
            yield from self._trace.records()
            return
        try:
            yield from self._trace.records()
        except TraceError as err:
            self.torn = err

    def iter_events(self, names: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """Decoded events as dicts (``t`` in seconds), optionally only the named kinds."""
        wanted = None
        if names is not None:
            wanted = {i for i, n in enumerate(self.table.names) if n in set(names)}
        decode, hz = self.table.decode, self.hz
        for rec in self.records():
            if wanted is None or rec[1] in wanted:
                yield decode(rec, hz)

    # --- what `oomactors run` prints --------------------------------------------------
    @cached_property
    def summary(self) -> dict[str, Any]:
        """The run summary, as ``oomactors run --json`` prints it."""
        from .report import summarize
        return summarize(self.records(), seed=self.seed, hz=self.hz, table=self.table)

    @cached_property
    def console(self) -> list[str]:
        """The kernel console lines of the run (the OOM reports, the reaper, panics)."""
        from .report import console_lines
        return console_lines(self.records(), hz=self.hz, table=self.table)

    # --- frames --------------------------------------------------------------------------
    @cached_property
    def events(self) -> pd.DataFrame:
        """Every event, one row each: ``t`` (s), ``event``, ``cpu``, ``pid``, then one
        column per field name of any kind (missing where a kind has no such field).
        Columns get pandas' nullable dtypes; a field whose values differ in type between
        kinds (``result`` is a word in one, a number in another) stays ``object``."""
        return events_frame(self.records(), self.table.names, self.table.fields, self.hz)

    def frame(self, name: str) -> pd.DataFrame:
        """The events of one kind (e.g. ``"sim:oom_kill"``) with exactly its fields."""
        pd = _pandas()
        if name not in self.table.ids:
            raise KeyError(f"no event kind {name!r} in this trace")
        fields = self.table.fields[self.table.ids[name]]
        return pd.DataFrame.from_records(list(self.iter_events([name])),
                                         columns=["t", "event", "cpu", "pid", *fields])

    def _series(self, name: str, fields: Sequence[str], unit: str = "pages",
                by: str | None = None) -> pd.DataFrame:
        if unit not in _UNITS:
            raise ValueError(f"unit must be one of {', '.join(_UNITS)}, not {unit!r}")
        df = self.frame(name) if name in self.table.ids else _pandas().DataFrame(
            columns=["t", *([by] if by else []), *fields])
        keep = ["t", *([by] if by else []), *fields]
        df = df[keep].copy()
        if unit != "pages":
            for f in fields:
                df[f] = df[f].astype("float64") * _UNITS[unit]
        return df.set_index("t")

    def meminfo(self, unit: str = "pages") -> pd.DataFrame:
        """The ``sim:meminfo`` samples (every ``run.meminfo_interval``), indexed by time:
        free, free_pcp, anon, file, dirty, writeback, shmem, slab_reclaimable,
        slab_unreclaimable, pagetables, kernel, swap_free; in ``unit`` (pages, kB or
        MiB)."""
        return self._series("sim:meminfo", self._fields("sim:meminfo"), unit)

    def zoneinfo(self, unit: str = "pages") -> pd.DataFrame:
        """Each zone's free pages and min/low/high watermarks (``sim:zoneinfo``), with a
        ``zone`` column ("0:Normal" = node 0's Normal zone), indexed by time."""
        df = self._series("sim:zoneinfo", ["free", "min", "low", "high", "managed"], unit)
        if "sim:zoneinfo" in self.table.ids:
            raw = self.frame("sim:zoneinfo")
            df.insert(0, "zone", (raw["nid"].astype(str) + ":" + raw["zone"]).to_numpy())
        else:
            df.insert(0, "zone", [])
        return df

    def psi(self, path: str | None = "/") -> pd.DataFrame:
        """PSI samples (``sim:psi``): some/full avg10/avg60/avg300 in percent and the
        totals in seconds, for one group (``"/"``: the whole machine; a memcg path), or
        every group with a ``path`` column (``path=None``)."""
        fields = ["some_avg10", "some_avg60", "some_avg300", "some_total",
                  "full_avg10", "full_avg60", "full_avg300", "full_total"]
        df = self._series("sim:psi", fields, by="path")
        for f in fields:
            scale = 1e6 if f.endswith("_total") else 100
            df[f] = df[f].astype("float64") / scale
        return df if path is None else df[df["path"] == path].drop(columns="path")

    def memcg(self, unit: str = "pages") -> pd.DataFrame:
        """Each memory cgroup's usage against its limits (``sim:memcg_usage``), with a
        ``path`` column; limits that are "max" hold the kernel's PAGE_COUNTER_MAX."""
        return self._series("sim:memcg_usage", ["usage", "max", "high", "swap_usage", "swap_max"],
                            unit, by="path")

    def commit(self, unit: str = "pages") -> pd.DataFrame:
        """Committed_AS and CommitLimit (``sim:commit``), indexed by time."""
        return self._series("sim:commit", ["committed_as", "commit_limit"], unit)

    @cached_property
    def kills(self) -> pd.DataFrame:
        """Every killed process, once, in kill order (the same rules as ``oomactors
        compare``): ``t`` (s), ``pid``, ``comm``, ``by`` (kernel or userspace),
        ``freed_kb``, and for the kernel's kills the victim's ``points`` and the OOM's
        ``constraint``."""
        from .run_metrics import RunMetrics
        pd = _pandas()
        metrics = RunMetrics(self.table)
        for rec in self.records():
            metrics.feed(rec)
        kills = metrics.kills()
        points: dict[int, Any] = {}
        chosen: dict[int, tuple[Any, Any]] = {}
        for ev in self.iter_events(["sim:oom_victim_chosen", "sim:oom_kill"]):
            if ev["event"] == "sim:oom_victim_chosen":
                points[ev["pid"]] = ev["points"]
            elif ev["pid"] not in chosen:
                chosen[ev["pid"]] = (points.pop(ev["pid"], None), ev["constraint"])
        rows = [{"t": round(k.t / self.hz, 6), "pid": k.pid, "comm": k.comm, "by": k.by,
                 "freed_kb": k.freed_kb, "points": chosen.get(k.pid, (None, None))[0],
                 "constraint": chosen.get(k.pid, (None, None))[1]} for k in kills]
        return _nullable(pd.DataFrame.from_records(
            rows, columns=["t", "pid", "comm", "by", "freed_kb", "points", "constraint"]))

    def _fields(self, name: str) -> tuple[str, ...]:
        from .events import EVENT_ID, EVENTS
        if name in self.table.ids:
            return tuple(self.table.fields[self.table.ids[name]])
        return EVENTS[EVENT_ID[name]].fields

    # --- pictures and files -----------------------------------------------------------
    def plot(self, path: str | os.PathLike[str] | None = None, **kw: Any) -> Any:
        """The run's timeline as a matplotlib Figure (see :func:`oomactors.plot.timeline`);
        saved to ``path`` as well when given (.png, .svg, .pdf)."""
        from .plot import timeline
        return timeline(self, path, **kw)

    def export(self, path: str | os.PathLike[str], format: str | None = None) -> None:
        """Write the run as ``perfetto``, ``parquet`` or ``csv`` (default: from the
        file's extension: .pftrace/.perfetto-trace, .parquet, .csv).  Every format is
        streamed from the records, a batch at a time (:mod:`oomactors.export.tables`):
        the table written is :attr:`events`, but no frame of the whole run is built."""
        from .export import export
        export(self, os.fspath(path), format)


class _KeptRecords:
    """What a :class:`Run` reads of a trace file, from records kept in memory: the header a
    trace of them would carry (format, version, seed, hz, config, the event table)."""

    path = "<memory>"

    def __init__(self, records: Sequence[tuple], *, seed: int, hz: int, config: dict[str, Any] | None) -> None:
        from .trace.stream import FORMAT, VERSION
        from .events import schema
        self.header = {"format": FORMAT, "version": VERSION, "seed": seed, "hz": hz, "config": config,
                       "events": schema()}
        self.seed, self.hz, self.config = seed, hz, config
        self.names = [e[0] for e in self.header["events"]]
        self.fields = [tuple(e[1]) for e in self.header["events"]]
        self._records = records

    def records(self) -> Iterator[tuple]:
        # as a trace file gives them back: nested arrays are tuples (msgpack, use_list=False)
        for rec in self._records:
            yield tuple(map(_tuples, rec)) if any(type(f) is list for f in rec) else rec


def _tuples(value: Any) -> Any:
    return tuple(map(_tuples, value)) if type(value) in (list, tuple) else value


def events_frame(records: Iterable[tuple], names: Sequence[str], fields: Sequence[Sequence[str]],
                 hz: int) -> pd.DataFrame:
    """:attr:`Run.events` of any records (a whole trace's, or one batch of the streaming
    table export, :mod:`oomactors.export.tables`)."""
    pd = _pandas()
    columns = ["t", "event", "cpu", "pid"]
    seen = set(columns)
    for kind_fields in fields:
        for f in kind_fields:
            if f not in seen:
                seen.add(f)
                columns.append(f)
    # one frame per kind (rows of equal shape build fast), then aligned on the columns
    # and put back in trace order
    by_kind: dict[int, tuple[list[int], list[tuple]]] = {}
    for i, rec in enumerate(records):
        idx, rows = by_kind.setdefault(rec[1], ([], []))
        idx.append(i)
        rows.append((round(rec[0] / hz, 6), rec[2], rec[3], *rec[4:]))
    frames = []
    for kid, (idx, rows) in by_kind.items():
        f = pd.DataFrame(rows, columns=["t", "cpu", "pid", *fields[kid]], index=idx)
        f.insert(1, "event", names[kid])
        frames.append(f)
    if not frames:
        return pd.DataFrame(columns=columns[:4])
    df = pd.concat(frames).sort_index()
    used = [c for c in columns if c in df.columns]
    return _nullable(df[used])


def _nullable(df: pd.DataFrame) -> pd.DataFrame:
    """pandas' nullable dtypes (an int column with gaps stays int), times kept as floats."""
    out = df.convert_dtypes()
    out["t"] = df["t"].astype("float64")
    return out


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def load_trace(path: str | os.PathLike[str], *, partial: bool = False) -> Run:
    """Open a trace written by ``oomactors run --trace`` (or :func:`run`) as a
    :class:`Run`.  A file that is not a trace raises :class:`oomactors.errors.TraceError`;
    a torn one (a crashed run's) reads up to its last complete event before raising it, or,
    with ``partial=True``, ends there quietly and leaves the error in :attr:`Run.torn`."""
    from .trace.stream import read_trace
    return Run(read_trace(path), partial=partial)


def _config(config_or_path: Any) -> Any:
    from .config import Config, load_config, load_default, parse_config
    if config_or_path is None:
        return load_default()
    if isinstance(config_or_path, Config):
        return config_or_path
    if isinstance(config_or_path, (str, os.PathLike)):
        text = os.fspath(config_or_path)
        if "\n" in text or text.lstrip().startswith("["):
            return parse_config(text, "<config text>")   # TOML given inline
        return load_config(text)
    raise InputError(f"config: expected a path, TOML text or a Config, not {type(config_or_path).__name__}")


def run(config_or_path: Any = None, *, seed: int | None = None, policy: Any = None,
        backend: str = "trio", duration: str | None = None, trace: str | os.PathLike[str] | None = None,
        fixes: dict[str, bool] | None = None) -> Run:
    """Simulate a config and return the :class:`Run`.

    ``config_or_path``: a TOML file's path, TOML text, a validated
    :class:`oomactors.config.Config`, or None for the embedded quickstart config.
    ``seed`` overrides the config's ``run.seed``; ``policy`` is a kill policy name (as
    ``--policy``) or a policy object; ``duration`` ("30s", "500 jiffies") overrides
    ``run.duration``; ``trace`` keeps the run's trace at that path (default: a temporary
    file removed with the Run).  Bad input raises :class:`oomactors.errors.InputError`
    with the same one-line message the command line prints.
    """
    from . import sim
    from .trace.stream import TraceWriter, read_trace
    from .units import parse_duration, to_jiffies

    cfg = _config(config_or_path)
    if isinstance(policy, str) or policy is None:
        from policies.registry import policy_for
        policy = policy_for(cfg, policy)
    dur = None
    if duration is not None:
        try:
            dur = to_jiffies(parse_duration(duration), cfg.kernel.hz)
        except ValueError as e:
            raise InputError(f"duration: {e}: {duration!r}") from None
    run_seed = cfg.run.seed if seed is None else seed
    if trace is None:
        fd, path = tempfile.mkstemp(prefix="oomactors-", suffix=".trace")
        os.close(fd)
    else:
        path = os.fspath(trace)
    try:
        with TraceWriter(path, seed=run_seed, hz=cfg.kernel.hz, config=cfg.as_dict()) as writer:
            sim.run(cfg, seed=run_seed, backend=backend, policy=policy, sinks=[writer.write],
                    duration=dur, fixes=fixes)
        return Run(read_trace(path), temporary=trace is None)
    except BaseException:
        if trace is None:
            _unlink(path)
        raise


def compare(configs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
            policies: Sequence[str] = (), seeds: int | Sequence[int] = 3, *, first_seed: int = 0,
            jobs: int = 1) -> pd.DataFrame:
    """Run every (config, policy, seed) and return one row per run with its metrics (the
    columns of ``oomactors compare --json``'s runs: kills, collateral, freed_per_kill_mib,
    pressure_to_recovery_s, stall_some_s, ...), plus ``config`` and ``policy``.

    ``configs``: a path or a list of paths (None: the embedded quickstart config);
    ``policies``: names or specs (none: each config's own); ``seeds``: how many
    (``first_seed``, ``first_seed`` + 1, ...) or the seeds themselves.  The JSON object
    of the whole comparison (medians, ranges) is in ``df.attrs["comparison"]``."""
    from .comparison import compare as do_compare
    pd = _pandas()
    if configs is None:
        from .config import default_config_text
        configs = [_default_config_file(default_config_text())]
    elif isinstance(configs, (str, os.PathLike)):
        configs = [configs]
    seed_list = list(range(first_seed, first_seed + seeds)) if isinstance(seeds, int) else list(seeds)
    data = do_compare([os.fspath(c) for c in configs], list(policies), seed_list, jobs=jobs)
    rows = [{"config": conf["config"], "policy": pol["policy"], **r}
            for conf in data["configs"] for pol in conf["policies"] for r in pol["runs"]]
    df = pd.DataFrame.from_records(rows)
    df.attrs["comparison"] = data
    return df


_DEFAULT_FILE: list[str] = []


def _default_config_file(text: str) -> str:
    """The quickstart config as a file (compare's workers load configs by path)."""
    if not _DEFAULT_FILE:
        fd, path = tempfile.mkstemp(prefix="oomactors-default-", suffix=".toml")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        atexit.register(_unlink, path)
        _DEFAULT_FILE.append(path)
    return _DEFAULT_FILE[0]
