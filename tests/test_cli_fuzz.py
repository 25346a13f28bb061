"""The whole command line under hostile input: mutated configs (structure, types,
magnitudes, nesting, encodings), mutated trace bytes and mutated kernel logs, each run as
a real ``oomactors`` subprocess under an address-space limit and a timeout.

Every run must end in time with exit status 0 or 2, print no traceback, and -- for exit 2
-- exactly one line on stderr.  Bounded: a few dozen examples per kind, derandomized, so
the suite stays deterministic and takes about a minute.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
LIMIT_AS = 1536 * 1024 * 1024   # the host memory a run may map
TIMEOUT = 60                    # seconds of wall time per run (the machine may be loaded)
SETTINGS = settings(max_examples=int(os.environ.get("OOMACTORS_FUZZ_EXAMPLES", "12")), deadline=None,
                    derandomize=not os.environ.get("OOMACTORS_FUZZ_RANDOM"), database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TRIED: dict[str, int] = {"config": 0, "trace": 0, "log": 0}


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))


def oomactors(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OOMACTORS_DEBUG"}
    try:
        return subprocess.run([sys.executable, "-m", "oomactors", *args], capture_output=True, text=True,
                              errors="replace", cwd=ROOT, env=env, preexec_fn=_limit, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"oomactors {' '.join(args)}: still running after {TIMEOUT} s")


def on_file(kind: str, tmp_path: Path, data: bytes, *args: str) -> subprocess.CompletedProcess:
    """Count one input of ``kind``, write it, and run ``oomactors ARGS`` with FILE naming it."""
    TRIED[kind] += 1
    path = tmp_path / f"fuzz.{kind}"
    path.write_bytes(data)
    return oomactors(*(str(path) if a == "FILE" else a for a in args))


def check(p: subprocess.CompletedProcess, what: str) -> None:
    where = f"{what}: exit {p.returncode}, stderr: {p.stderr[-2000:]!r}"
    assert "Traceback" not in p.stderr, where
    assert p.returncode in (0, 2), where
    if p.returncode == 2:
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("oomactors: error: "), where


# --- configs ---------------------------------------------------------------------------------
BASE: dict[str, Any] = {
    "machine": {"cpus": 2, "memory": "128MiB", "swap": "16MiB", "page_cache": "8MiB"},
    "kernel": {"hz": 250},
    "run": {"duration": "150ms", "seed": 1},
    "memcgs": [{"path": "/a", "max": "48MiB"}],
    "tasks": [
        {"name": "hog", "memcg": "/a", "rss": "4MiB", "program": [
            {"op": "repeat", "steps": [{"op": "alloc", "size": "2MiB"}, {"op": "sleep", "time": "5ms"}]}]},
        {"name": "forker", "count": 2, "program": [
            {"op": "repeat", "times": 3, "steps": [{"op": "fork", "program": [{"op": "compute", "time": "1ms"}]}]},
            {"op": "alloc", "size": "1MiB", "kind": "kernel", "gfp": "GFP_KERNEL"}]},
    ],
}
# the key paths a mutation may hit (run.duration stays short: a long run is not a bug)
PATHS = [("machine", k) for k in ("cpus", "nodes", "memory", "dma", "dma32", "reserved", "swap", "page_cache",
                                  "dirty", "slab_reclaimable", "slab_unreclaimable", "fragmentation",
                                  "swap_bandwidth")] \
    + [("kernel", k) for k in ("profile", "hz", "min_free_kbytes", "watermark_scale_factor",
                               "lowmem_reserve_ratio", "panic_on_oom", "overcommit_memory", "pid_max",
                               "threads_max", "percpu_drift", "pcp_batch", "time_slice")] \
    + [("run", "seed"), ("run", "meminfo_interval"), ("memcgs", 0, "max"), ("memcgs", 0, "path")] \
    + [("tasks", 0, k) for k in ("name", "count", "threads", "uid", "oom_score_adj", "start", "rss", "nice",
                                 "memcg", "caps", "mempolicy")] \
    + [("tasks", 0, "program", 0, "steps", 0, k) for k in ("size", "gfp", "order", "chunk", "kind", "rate", "op")] \
    + [("tasks", 1, "program", 0, k) for k in ("times", "op")]
HOSTILE = st.one_of(
    st.sampled_from([0, 1, -1, 3, 1000, 2**31, 2**63 - 1, 2**64, 10**30, True, False, 0.5, -0.0, math.nan,
                     math.inf, "", "0", "-1", "auto", "max", "all", "1e9TiB", "64TiB", "99999999999999999999GiB",
                     "16MiB", "1 page", "3 jiffies", "0xffffffff", "__GFP_DMA | __GFP_NOFAIL", "GFP_KERNEL",
                     "GFP_KERNEL | __GFP_DMA", "a\x07b", "\u202e", "x" * 300, "1ms", "1h", "/", "/a/../b", [],
                     [1, 2, 3], [[[[]]]], {}, {"mode": "bind", "nodes": [0]}, {"x": 1}]),
    st.integers(-2**70, 2**70),
    st.text(max_size=12),
)


def _set(d: Any, path: tuple, value: Any) -> None:
    """Set the value at ``path`` if an earlier mutation left that path in place."""
    try:
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        pass


def _nest(depth: int, op: str) -> dict:
    step: dict = {"op": "sleep", "time": "1ms"}
    for _ in range(depth):
        step = {"op": "fork", "program": [step]} if op == "fork" else {"op": "repeat", "times": 2, "steps": [step]}
    return step


def toml(value: Any, key: str = "") -> str:
    """A minimal TOML writer (inline form for tables inside arrays)."""
    def v(x: Any) -> str:
        if isinstance(x, bool):
            return "true" if x else "false"
        if isinstance(x, float):
            return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf") if math.isinf(x) else repr(x)
        if isinstance(x, int):
            return str(x)
        if isinstance(x, str):
            return json.dumps(x)
        if isinstance(x, list):
            return "[" + ", ".join(v(i) for i in x) + "]"
        return "{" + ", ".join(f"{json.dumps(k)} = {v(i)}" for k, i in x.items()) + "}"
    out = []
    for name, section in value.items():
        if isinstance(section, dict):
            out.append(f"[{name}]")
            out += [f"{json.dumps(k)} = {v(x)}" for k, x in section.items()]
        elif isinstance(section, list) and all(isinstance(t, dict) for t in section):
            for t in section:
                out.append(f"[[{name}]]")
                out += [f"{json.dumps(k)} = {v(x)}" for k, x in t.items()]
        else:
            out.append(f"{json.dumps(name)} = {v(section)}")
    return "\n".join(out) + "\n"


@st.composite
def configs(draw: st.DrawFn) -> bytes:
    cfg = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["value", "value", "value", "nest", "drop", "extra"]))
        if kind == "value":
            _set(cfg, draw(st.sampled_from(PATHS)), draw(HOSTILE))
        elif kind == "nest":
            depth = draw(st.sampled_from([5, 20, 24, 25, 60, 300]))
            _set(cfg, ("tasks", 0, "program"), [_nest(depth, draw(st.sampled_from(["fork", "repeat"])))])
        elif kind == "drop":
            section = draw(st.sampled_from(["machine", "kernel", "tasks", "memcgs"]))
            cfg.pop(section, None)
        else:
            cfg[draw(st.sampled_from(["machine", "bogus"]))] = {"nope": draw(HOSTILE)}
    text = toml(cfg).encode("utf-8")
    enc = draw(st.sampled_from(["plain"] * 6 + ["bom", "utf16", "flip", "cut", "junk"]))
    if enc == "bom":
        text = b"\xef\xbb\xbf" + text
    elif enc == "utf16":
        text = text.decode().encode("utf-16")
    elif enc == "flip":
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + bytes([text[i] ^ (1 << draw(st.integers(0, 7)))]) + text[i + 1:]
    elif enc == "cut":
        text = text[:draw(st.integers(0, len(text)))]
    elif enc == "junk":
        text += draw(st.binary(min_size=1, max_size=40))
    return text


@SETTINGS
@given(text=configs())
def test_fuzz_configs(tmp_path, text):
    check(on_file("config", tmp_path, text, "run", "FILE", "--json"), f"run {text[:3000]!r}")


# --- traces ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trace_bytes(tmp_path_factory) -> bytes:
    d = tmp_path_factory.mktemp("trace")
    cfg = d / "t.toml"
    cfg.write_text(toml(BASE))
    p = oomactors("run", str(cfg), "--trace", str(d / "t.trace"), "--json")
    assert p.returncode == 0, p.stderr
    return (d / "t.trace").read_bytes()


@st.composite
def damage(draw: st.DrawFn, data: bytes) -> bytes:
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, max(0, len(data) - 1)))
        how = draw(st.sampled_from(["flip", "cut", "insert", "delete", "zero"]))
        if how == "flip":
            data = data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1:]
        elif how == "cut":
            data = data[:i]
        elif how == "insert":
            data = data[:i] + draw(st.binary(min_size=1, max_size=16)) + data[i:]
        elif how == "delete":
            data = data[:i] + data[i + draw(st.integers(1, 64)):]
        else:
            data = data[:i] + bytes(draw(st.integers(1, 64))) + data[i + 64:]
    return data


@SETTINGS
@given(data=st.data())
def test_fuzz_traces(tmp_path, trace_bytes, data):
    blob = data.draw(damage(trace_bytes))
    check(on_file("trace", tmp_path, blob, "trace", "show", "FILE"), f"trace show (damaged {len(blob)} bytes)")


# --- kernel logs -----------------------------------------------------------------------------
LOGS = sorted((ROOT / "tests/data/oom_reports").glob("*.log"))


@st.composite
def logs(draw: st.DrawFn) -> bytes:
    lines = draw(st.sampled_from(LOGS)).read_bytes().splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["drop", "dup", "number", "garbage", "truncate", "swap"]))
        if how == "drop":
            del lines[i]
        elif how == "dup":
            lines.insert(i, lines[i])
        elif how == "number":
            import re
            big = draw(st.sampled_from([b"0", b"-1", b"99999999999999999999999", b"18446744073709551615"]))
            lines[i] = re.sub(rb"\d+", big, lines[i], count=draw(st.integers(1, 3)))
        elif how == "garbage":
            lines[i] = draw(st.binary(max_size=60)) + b"\n"
        elif how == "truncate":
            lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))]
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        if not lines:
            lines = [b"\n"]
    return b"".join(lines)


@SETTINGS
@given(text=logs())
def test_fuzz_kernel_logs(tmp_path, text):
    p = on_file("log", tmp_path, text, "replay", "FILE")
    # replay warns about lines it skipped (exit 0); an error is still one line
    assert "Traceback" not in p.stderr and p.returncode in (0, 2), p.stderr[-2000:]
    if p.returncode == 2:
        assert p.stderr.splitlines()[-1].startswith("oomactors: error: ")
        assert sum(not ln.startswith("oomactors: warning: ") for ln in p.stderr.splitlines()) == 1, p.stderr


def test_fuzz_report():
    """How many inputs the fuzzers above tried (pytest -s shows it; it runs after them)."""
    print(f"\nCLI fuzz: {TRIED['config']} configs, {TRIED['trace']} traces, {TRIED['log']} kernel logs tried")
