"""Ctrl-C in a Python caller of the API (a script, a notebook's "interrupt kernel").

The command line installs its own SIGINT handler; a script that calls ``oomactors.run``
has Python's default one, which an event loop only honours at its own checkpoints -- and
the engine steps the actors itself between them, so a long run went on to its end.  The
run now takes Ctrl-C the way the command line does: it stops at its next safe place,
ends its trace with the ``interrupted`` mark, and the caller gets KeyboardInterrupt.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from oomactors.trace.stream import read_trace

SCRIPT = textwrap.dedent("""
    import sys, oomactors
    try:
        oomactors.run(None, duration="10000h", trace=sys.argv[1], backend=sys.argv[2])
        print("finished")
    except KeyboardInterrupt:
        print("KeyboardInterrupt")
    # a second run in the same process is not stopped by the first one's Ctrl-C
    r = oomactors.run(None, duration="200ms")
    print("second", r.summary["end_reason"], r.summary["simulated_seconds"])
""")


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_ctrl_c_stops_an_api_run_with_its_trace_marked(tmp_path, backend):
    trace = tmp_path / "api.trace"
    script = tmp_path / "api_run.py"
    script.write_text(SCRIPT)
    p = subprocess.Popen([sys.executable, str(script), str(trace), backend],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        # under way: the trace has grown past its first 64 KiB block
        while not (trace.exists() and trace.stat().st_size > 200_000):
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "the run never got under way"
            time.sleep(0.05)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
    lines = out.split()
    assert p.returncode == 0, err
    assert lines[0] == "KeyboardInterrupt", out
    assert lines[1:] == ["second", "duration", "0.2"], out
    assert took < 20, took   # the run ended within the second run's budget, not 10,000 h
    t = read_trace(str(trace))
    records = list(t.records())
    assert t.end_reason == "interrupted"
    assert t.end[0] == records[-1][0] < 10000 * 3600 * t.hz
    assert os.path.getsize(trace) > 200_000
