"""Run the ``oomactors`` command line and send it a real SIGINT at a chosen moment.

    python tests/interrupt_harness.py MOMENT SIDE_FILE -- ARGS...

MOMENT picks where the process signals itself (``os.kill(getpid(), SIGINT)``: the real
signal, delivered by the kernel, handled between two bytecodes like a Ctrl-C):

* ``event:NAME:N`` -- when the run emits its N-th event NAME (inside an OOM, ...);
* ``idle:N`` -- at the N-th time the clock is asked to jump;
* ``call:MODULE.FUNC:N`` -- at the N-th call of a function (boot, trace show, replay, ...);
* a ``+spin`` suffix: after the signal, spin in pure Python without ever returning (a
  stretch that never polls: the escalation must end the process);
* a ``+twice`` suffix: two signals back to back (an impatient user);
* a ``+group`` suffix: the signal goes to the whole process group, as a terminal sends it
  (the command's worker processes get it too), 0.4 s after the moment (a worker process
  started at that moment is then importing).

SIDE_FILE receives one line ``<virtual time or -1> <time.monotonic()>`` at the signal, so
the test can check where the run ended and how long the exit took.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
import time


def main() -> None:
    moment, side = sys.argv[1], sys.argv[2]
    args = sys.argv[sys.argv.index("--") + 1:]
    spin = moment.endswith("+spin")
    twice = moment.endswith("+twice")
    group = moment.endswith("+group")
    moment = moment.removesuffix("+spin").removesuffix("+twice").removesuffix("+group")
    kind, rest = moment.split(":", 1)
    what, n = rest.rsplit(":", 1) if ":" in rest else ("", rest)
    seen = [0]

    def fire(now: int) -> None:
        with open(side, "w") as f:
            f.write(f"{now} {time.monotonic()}\n")
        if group:
            import threading

            def later() -> None:
                time.sleep(0.4)
                with open(side, "w") as f:
                    f.write(f"{now} {time.monotonic()}\n")
                os.killpg(os.getpgrp(), signal.SIGINT)
            threading.Thread(target=later, daemon=True).start()
            return
        else:
            os.kill(os.getpid(), signal.SIGINT)
        if twice:
            os.kill(os.getpid(), signal.SIGINT)
        if spin:
            x = 0
            while True:
                x += 1

    def due() -> bool:
        seen[0] += 1
        return seen[0] == int(n)

    if kind in ("event", "runevent"):
        from oomactors.machine import Machine
        def after(real):  # type: ignore[no-untyped-def]
            def emit(self, name, *a):  # type: ignore[no-untyped-def]
                real(self, name, *a)
                # runevent: only a machine with sinks, the run's (the CLI's boot check builds
                # one without, and emits its boot events too)
                if name == what and (kind == "event" or self.sinks) and due():
                    fire(self.now)
            return emit
        # the two entries of the event funnel (emit does not go through emit_on)
        Machine.emit_on = after(Machine.emit_on)  # type: ignore[method-assign]
        Machine.emit = after(Machine.emit)  # type: ignore[method-assign]
    elif kind == "idle":
        from oomactors.sched import Clock
        real_idle = Clock.idle

        def idle(self):  # type: ignore[no-untyped-def]
            if due():
                fire(self.now)
            real_idle(self)
        Clock.idle = idle  # type: ignore[method-assign]
    elif kind == "call":
        mod_name, func = what.rsplit(".", 1)
        try:
            mod: object = importlib.import_module(mod_name)
        except ImportError:  # MODULE.CLASS.METHOD
            owner, cls = mod_name.rsplit(".", 1)
            mod = getattr(importlib.import_module(owner), cls)
        real = getattr(mod, func)

        @functools.wraps(real)
        def wrapper(*a, **kw):  # type: ignore[no-untyped-def]
            if func in ("install", "start"):  # after it: the handler in place, the process started
                out = real(*a, **kw)
                if due():
                    fire(-1)
                return out
            if due():
                fire(-1)
            return real(*a, **kw)
        setattr(mod, func, wrapper)
    else:
        raise SystemExit(f"unknown moment {moment}")
    sys.argv = ["oomactors", *args]
    from oomactors import cli_signals
    cli_signals.main()


if __name__ == "__main__":
    main()
